package tether

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/agent/wire"
)

type tentry struct {
	name, link string
	typ        byte
	body       string
}

func tarOf(t *testing.T, es []tentry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0)}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return &buf
}

// sandbox makes dir/root (the container root, with /dst) beside
// dir/outside (a sentinel), and points archiveRoot at root.
func sandbox(t *testing.T) (root, outside string) {
	dir := t.TempDir()
	root, outside = filepath.Join(dir, "root"), filepath.Join(dir, "outside")
	for _, d := range []string{filepath.Join(root, "dst"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := archiveRoot
	archiveRoot = root
	t.Cleanup(func() { archiveRoot = old })
	return root, outside
}

// TestPutHostile: nothing an archive holds is written outside the root.
func TestPutHostile(t *testing.T) {
	tests := []struct {
		name    string
		prep    func(root, outside string)
		entries []tentry
		wantErr bool
		check   func(t *testing.T, root string)
	}{
		{name: "dotdot", entries: []tentry{{name: "../../outside/evil", typ: tar.TypeReg, body: "x"}}, wantErr: true},
		{name: "absolute name lands in the destination", entries: []tentry{{name: "/abs", typ: tar.TypeReg, body: "x"}},
			check: func(t *testing.T, root string) { mustExist(t, filepath.Join(root, "dst/abs")) }},
		{name: "symlink to outside then write through it", entries: []tentry{
			{name: "lnk", link: "/../../outside", typ: tar.TypeSymlink},
			{name: "lnk/evil", typ: tar.TypeReg, body: "x"},
		}, check: func(t *testing.T, root string) {
			// The link text is kept; the write resolved inside the root.
			if l, _ := os.Readlink(filepath.Join(root, "dst/lnk")); l != "/../../outside" {
				t.Errorf("link text %q", l)
			}
			mustExist(t, filepath.Join(root, "outside/evil"))
		}},
		{name: "existing symlink in the container pointing outside", prep: func(root, outside string) {
			os.Symlink(outside, filepath.Join(root, "dst/host"))
		}, entries: []tentry{{name: "host/evil", typ: tar.TypeReg, body: "x"}},
			check: func(t *testing.T, root string) { mustExist(t, filepath.Join(root, filepath.Dir(root), "outside/evil")) }},
		{name: "hard link to outside", entries: []tentry{{name: "hl", link: "../../outside/keep", typ: tar.TypeLink}}, wantErr: true},
		{name: "hard link to absolute path", entries: []tentry{{name: "hl", link: "/etc/passwd", typ: tar.TypeLink}}, wantErr: true},
		{name: "replace a symlink, not write through it", prep: func(root, outside string) {
			os.Symlink(filepath.Join(outside, "keep"), filepath.Join(root, "dst/f"))
		}, entries: []tentry{{name: "f", typ: tar.TypeReg, body: "new"}},
			check: func(t *testing.T, root string) {
				b, _ := os.ReadFile(filepath.Join(root, "dst/f"))
				if string(b) != "new" {
					t.Errorf("dst/f = %q", b)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, outside := sandbox(t)
			if tt.prep != nil {
				tt.prep(root, outside)
			}
			err := putPath(context.Background(), tarOf(t, tt.entries), wire.ArchivePut{Path: "/dst"})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 {
				t.Fatalf("outside changed: %v", ents)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "keep")); string(b) != "keep" {
				t.Fatalf("sentinel changed: %q", b)
			}
			if tt.check != nil {
				tt.check(t, root)
			}
		})
	}
}

func mustExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err != nil {
		t.Error(err)
	}
}

func TestPutErrors(t *testing.T) {
	root, _ := sandbox(t)
	os.WriteFile(filepath.Join(root, "file"), nil, 0o644)
	os.Mkdir(filepath.Join(root, "dst/d"), 0o755)
	tests := []struct {
		name string
		put  wire.ArchivePut
		tar  []tentry
		kind string
	}{
		{"missing", wire.ArchivePut{Path: "/nope"}, nil, wire.ArchiveNotFound},
		{"not a directory", wire.ArchivePut{Path: "/file"}, nil, wire.ArchiveNotDir},
		{"dir over non-dir", wire.ArchivePut{Path: "/", NoOverwriteDirNonDir: true}, []tentry{{name: "file", typ: tar.TypeDir}}, wire.ArchiveInvalid},
		{"non-dir over dir", wire.ArchivePut{Path: "/dst", NoOverwriteDirNonDir: true}, []tentry{{name: "d", typ: tar.TypeReg}}, wire.ArchiveInvalid},
		{"too big", wire.ArchivePut{Path: "/dst", MaxBytes: 3}, []tentry{{name: "big", typ: tar.TypeReg, body: "1234"}}, wire.ArchiveInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := putPath(context.Background(), tarOf(t, tt.tar), tt.put)
			if got := toWire(err).Kind; got != tt.kind {
				t.Fatalf("kind %q (%v), want %q", got, err, tt.kind)
			}
		})
	}
}

func TestGetAndStat(t *testing.T) {
	root, _ := sandbox(t)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root"), 0o640)
	os.Symlink("/etc", filepath.Join(root, "lnk"))
	st, err := statPath("/lnk")
	if err != nil || st.Name != "lnk" || st.LinkTarget != "/etc" {
		t.Fatalf("stat = %+v, %v", st, err)
	}
	if _, err := statPath("/missing"); toWire(err).Kind != wire.ArchiveNotFound {
		t.Fatalf("missing: %v", err)
	}
	// A file named as a directory fails as path resolution does.
	for _, p := range []string{"/etc/passwd/", "/etc/passwd/."} {
		if _, err := statPath(p); toWire(err).Kind != wire.ArchiveInvalid || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("stat %s: %v; want invalid, not a directory", p, err)
		}
		if err := getPath(io.Discard, p); toWire(err).Kind != wire.ArchiveInvalid || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("get %s: %v; want invalid, not a directory", p, err)
		}
	}
	for _, tt := range []struct{ path, want string }{
		{"/lnk", "lnk"}, {"/lnk/", "lnk/,lnk/passwd"}, {"/etc/.", "./,./passwd"}, {"/etc/./", "./,./passwd"}, {"./etc", "etc/,etc/passwd"},
	} {
		var buf bytes.Buffer
		if err := getPath(&buf, tt.path); err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(&buf)
		var names []string
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
		got := ""
		for i, n := range names {
			if i > 0 {
				got += ","
			}
			got += n
		}
		if got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.path, got, tt.want)
		}
	}
}

func TestChanges(t *testing.T) {
	dir := t.TempDir()
	base, upper := filepath.Join(dir, "base"), filepath.Join(dir, "upper")
	for _, r := range []string{base, upper} {
		os.MkdirAll(filepath.Join(r, "etc"), 0o755)
		os.MkdirAll(filepath.Join(r, "gone/sub"), 0o755)
		os.WriteFile(filepath.Join(r, "etc/passwd"), []byte("root"), 0o644)
		os.WriteFile(filepath.Join(r, "etc/group"), []byte("root"), 0o644)
		old := time.Unix(1700000000, 0)
		for _, p := range []string{"etc/passwd", "etc/group", "etc", "gone/sub", "gone", "."} {
			os.Chtimes(filepath.Join(r, p), old, old)
		}
	}
	os.RemoveAll(filepath.Join(upper, "gone"))
	os.WriteFile(filepath.Join(upper, "etc/passwd"), []byte("changed"), 0o644)
	os.MkdirAll(filepath.Join(upper, "new/dir"), 0o755)
	// The identity files tether writes at start touch /etc's mtime; like
	// Docker's init layer, diff shows neither them nor /etc.
	os.WriteFile(filepath.Join(upper, "etc/hosts"), []byte("127.0.0.1 localhost"), 0o644)
	got, err := changes(upper, base)
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.Change{{Path: "/etc/passwd", Kind: 0}, {Path: "/gone", Kind: 2}, {Path: "/new", Kind: 1}, {Path: "/new/dir", Kind: 1}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	var buf bytes.Buffer
	if err := changesTar(&buf, upper, got); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, os.ErrNotExist) || err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if len(names) != 4 || names[1] != ".wh.gone" {
		t.Fatalf("layer entries %v", names)
	}
}
