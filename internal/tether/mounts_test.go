package tether

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

func TestParseMountOptions(t *testing.T) {
	tests := []struct {
		name  string
		opts  string
		flags uintptr
		data  string
	}{
		{"empty", "", 0, ""},
		{"docker defaults", "noexec,nosuid,nodev", unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV, ""},
		{"later flag wins", "noexec,nosuid,nodev,exec", unix.MS_NOSUID | unix.MS_NODEV, ""},
		{"data kept in order", "noexec,size=1m,mode=700,uid=5", unix.MS_NOEXEC, "size=1m,mode=700,uid=5"},
		{"later data wins", "size=1m,mode=1777,size=2m", 0, "size=2m,mode=1777"},
		{"ro and propagation", "ro,rprivate,nosuid", unix.MS_RDONLY | unix.MS_NOSUID, ""},
		{"spaces and empties", " noatime, ,size=4k ", unix.MS_NOATIME, "size=4k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, data := parseMountOptions(tt.opts)
			if flags != tt.flags || data != tt.data {
				t.Errorf("parseMountOptions(%q) = %#x, %q; want %#x, %q", tt.opts, flags, data, tt.flags, tt.data)
			}
		})
	}
}

func TestSortMounts(t *testing.T) {
	in := []wire.Mount{{Target: "/a/b/c"}, {Target: "/z"}, {Target: "/a/b"}, {Target: "/a"}, {Target: "/y/"}}
	var got []string
	for _, m := range sortMounts(in) {
		got = append(got, m.Target)
	}
	want := []string{"/z", "/a", "/y/", "/a/b", "/a/b/c"}
	if !slices.Equal(got, want) {
		t.Errorf("sortMounts = %v, want %v", got, want)
	}
}

func TestIsWholeVirtioDisk(t *testing.T) {
	for name, want := range map[string]bool{"vda": true, "vdb": true, "vdab": true, "vda1": false, "vd": false, "sda": false, "loop0": false} {
		if got := isWholeVirtioDisk(name); got != want {
			t.Errorf("isWholeVirtioDisk(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestCopyTree: the copy-up keeps contents, owners, modes (setuid too),
// times, symlinks (never followed), hard links and FIFOs, and gives the
// destination the source directory's own owner and mode.
func TestCopyTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners")
	}
	src, dst := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(src, 0o750))
	must(os.Chown(src, 33, 44))
	must(os.MkdirAll(filepath.Join(src, "sub", "deep"), 0o755))
	must(os.WriteFile(filepath.Join(src, "sub", "deep", "f"), []byte("hello"), 0o640))
	must(os.Chown(filepath.Join(src, "sub", "deep", "f"), 1000, 1001))
	must(os.WriteFile(filepath.Join(src, "suid"), []byte("x"), 0o755))
	must(os.Chown(filepath.Join(src, "suid"), 7, 8))
	must(unix.Chmod(filepath.Join(src, "suid"), 0o4755))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "abs-link")))
	must(os.Symlink("sub/deep/f", filepath.Join(src, "rel-link")))
	must(os.Link(filepath.Join(src, "sub", "deep", "f"), filepath.Join(src, "hard")))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o600))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "sub", "deep", "f"), old, old))

	must(copyTree(src, dst))

	stat := func(p string) *unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		must(unix.Lstat(p, &st))
		return &st
	}
	if st := stat(dst); st.Mode&0o7777 != 0o750 || st.Uid != 33 || st.Gid != 44 {
		t.Errorf("destination root: mode %o owner %d:%d, want 750 33:44", st.Mode&0o7777, st.Uid, st.Gid)
	}
	f := filepath.Join(dst, "sub", "deep", "f")
	if b, err := os.ReadFile(f); err != nil || string(b) != "hello" {
		t.Errorf("file content %q, %v", b, err)
	}
	if st := stat(f); st.Mode&0o7777 != 0o640 || st.Uid != 1000 || st.Gid != 1001 || st.Mtim.Sec != old.Unix() {
		t.Errorf("file: mode %o owner %d:%d mtime %d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec)
	}
	if st := stat(filepath.Join(dst, "suid")); st.Mode&0o7777 != 0o4755 || st.Uid != 7 {
		t.Errorf("setuid file: mode %o uid %d, want 4755 7", st.Mode&0o7777, st.Uid)
	}
	for link, want := range map[string]string{"abs-link": "/etc/passwd", "rel-link": "sub/deep/f"} {
		if got, err := os.Readlink(filepath.Join(dst, link)); err != nil || got != want {
			t.Errorf("%s -> %q, %v; want %q", link, got, err, want)
		}
	}
	if a, b := stat(f), stat(filepath.Join(dst, "hard")); a.Ino != b.Ino {
		t.Errorf("hard link not kept: inodes %d and %d", a.Ino, b.Ino)
	}
	if st := stat(filepath.Join(dst, "fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo copied as mode %o", st.Mode)
	}
}

func TestDirEmpty(t *testing.T) {
	dir := t.TempDir()
	if empty, err := dirEmpty(dir); err != nil || !empty {
		t.Errorf("empty dir: %v, %v", empty, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if empty, err := dirEmpty(dir); err != nil || empty {
		t.Errorf("dir with a file: %v, %v", empty, err)
	}
}

// TestResolveSubpath: Docker's rules for a volume subpath (its
// safepath.Join): directories, files and links that stay inside the
// volume resolve; a missing path is "cannot access path"; a link to "/"
// or to one that does, and "..", lead out (errEscapes).
func TestResolveSubpath(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"subdir", "hack/iwanttobehacked"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "bar.txt"), []byte("foo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "subdir/hello.txt"), []byte("world"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, to := range map[string]string{"hack/root": "/", "hack/good": "../subdir", "hack/bad": "root", "hack/dangling": "nowhere",
		"hack/abs": "/etc", "hack/loop": "loop", "hack/up": "../..", "hack/file": "../bar.txt"} {
		if err := os.Symlink(to, filepath.Join(base, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		sub     string
		want    string // path under base; "" for an error
		dir     bool
		escapes bool
		errno   unix.Errno // the lookup's error, ENOENT if 0
	}{
		{sub: "subdir", want: "subdir", dir: true},
		{sub: "hack/good", want: "subdir", dir: true},
		{sub: "bar.txt", want: "bar.txt"},
		{sub: ".", want: ".", dir: true},
		{sub: "not-existing-path"},
		{sub: "hack/dangling"},
		{sub: "hack/root", escapes: true},
		{sub: "hack/bad", escapes: true},
		{sub: "../../etc/passwd", escapes: true},
		{sub: "/etc", escapes: true},
		{sub: "hack/abs", escapes: true},
		{sub: "hack/up/x", escapes: true},
		{sub: "hack/good/hello.txt", want: "subdir/hello.txt"},
		{sub: "hack/file", want: "bar.txt"},
		{sub: "subdir/../bar.txt", want: "bar.txt"},
		{sub: "subdir//hello.txt/", want: "subdir/hello.txt"},
		{sub: "bar.txt/x", errno: unix.ENOTDIR},
		{sub: "hack/loop", errno: unix.ELOOP},
		{sub: "a/b/c"},
	} {
		p, st, err := resolveSubpath(base, tt.sub)
		switch {
		case tt.want != "":
			if err != nil || p != filepath.Join(base, tt.want) || st.IsDir() != tt.dir {
				t.Errorf("%q: %q, %v; want %q (dir %v)", tt.sub, p, err, tt.want, tt.dir)
			}
		case tt.escapes:
			if !errors.Is(err, errEscapes) || subpathReason(err) != wire.SubpathEscapes {
				t.Errorf("%q: %q, %v; want it to escape", tt.sub, p, err)
			}
		case tt.errno != 0:
			if !errors.Is(err, tt.errno) || subpathReason(err) != wire.SubpathUnresolvable || strings.Contains(err.Error(), base) {
				t.Errorf("%q: %q, %v; want %v, unresolvable, no base path in the text", tt.sub, p, err, tt.errno)
			}
		default:
			if !errors.Is(err, os.ErrNotExist) || subpathReason(err) != wire.SubpathMissing || err.Error() != "cannot access path "+tt.sub+": no such file or directory" {
				t.Errorf("%q: %q, %v; want cannot access path", tt.sub, p, err)
			}
		}
	}
}
