package archive

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

type entry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	uid, gid   int
}

func makeTar(t *testing.T, entries []entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if e.typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode,
			Size: int64(len(e.body)), Uid: e.uid, Gid: e.gid, ModTime: time.Unix(1700000000, 0)}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return &buf
}

// TestUnpackMalicious checks that hostile archives never touch anything
// outside the target: each case runs in a fresh sandbox with a sentinel
// file and directory beside the target.
func TestUnpackMalicious(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		wantErr bool
	}{
		{name: "dotdot file", entries: []entry{{name: "../outside/pwned", typ: tar.TypeReg, body: "x"}}, wantErr: true},
		{name: "dotdot nested", entries: []entry{{name: "a/../../outside/pwned", typ: tar.TypeReg, body: "x"}}, wantErr: true},
		{name: "absolute path stays inside", entries: []entry{{name: "/outside/pwned", typ: tar.TypeReg, body: "x"}}},
		{name: "symlink escape then write through", entries: []entry{
			{name: "esc", typ: tar.TypeSymlink, link: "../outside"},
			{name: "esc/pwned", typ: tar.TypeReg, body: "x"},
		}},
		{name: "absolute symlink then write through", entries: []entry{
			{name: "esc", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "esc/pwned", typ: tar.TypeReg, body: "x"},
		}},
		{name: "symlink to file then overwrite", entries: []entry{
			{name: "f", typ: tar.TypeSymlink, link: "OUTSIDE/sentinel"},
			{name: "f", typ: tar.TypeReg, body: "x"},
		}},
		{name: "symlink dir then mkdir and chmod", entries: []entry{
			{name: "d", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "d/", typ: tar.TypeDir, mode: 0o777},
			{name: "d/pwned", typ: tar.TypeReg, body: "x"},
		}},
		{name: "hardlink escape", entries: []entry{{name: "h", typ: tar.TypeLink, link: "../outside/sentinel"}}, wantErr: true},
		{name: "hardlink absolute stays inside", entries: []entry{{name: "h", typ: tar.TypeLink, link: "OUTSIDE/sentinel"}}, wantErr: true},
		{name: "hardlink through escaping symlink", entries: []entry{
			{name: "esc", typ: tar.TypeSymlink, link: "../outside"},
			{name: "h", typ: tar.TypeLink, link: "esc/sentinel"},
		}, wantErr: true},
		{name: "whiteout through symlink", entries: []entry{
			{name: "esc", typ: tar.TypeSymlink, link: "../outside"},
			{name: "esc/.wh.sentinel", typ: tar.TypeReg},
		}},
		{name: "opaque through symlink", entries: []entry{
			{name: "esc", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "esc/.wh..wh..opq", typ: tar.TypeReg},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sandbox := t.TempDir()
			outside := filepath.Join(sandbox, "outside")
			target := filepath.Join(sandbox, "target")
			os.Mkdir(outside, 0o755)
			os.Mkdir(target, 0o755)
			os.WriteFile(filepath.Join(outside, "sentinel"), []byte("safe"), 0o600)
			entries := make([]entry, len(tt.entries))
			for i, e := range tt.entries {
				if e.link == "OUTSIDE" || e.link == "OUTSIDE/sentinel" {
					e.link = outside + e.link[len("OUTSIDE"):]
				}
				entries[i] = e
			}
			err := Unpack(t.Context(), makeTar(t, entries), target)
			if tt.wantErr && err == nil {
				t.Fatal("want error")
			}
			if !tt.wantErr && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantErr && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 || ents[0].Name() != "sentinel" {
				t.Fatalf("outside dir changed: %v", ents)
			}
			fi, _ := os.Stat(outside)
			if fi.Mode().Perm() != 0o755 {
				t.Fatalf("outside mode changed: %v", fi.Mode())
			}
			b, _ := os.ReadFile(filepath.Join(outside, "sentinel"))
			st, _ := os.Stat(filepath.Join(outside, "sentinel"))
			if string(b) != "safe" || st.Mode().Perm() != 0o600 {
				t.Fatalf("sentinel changed: %q %v", b, st.Mode())
			}
			sib, _ := os.ReadDir(sandbox)
			if len(sib) != 2 {
				t.Fatalf("sandbox has %d entries, want 2", len(sib))
			}
		})
	}
}

func TestUnpackPreserves(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown and mknod")
	}
	dir := t.TempDir()
	entries := []entry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/", typ: tar.TypeDir},
		{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, body: "suid", uid: 0},
		{name: "home/user/file", typ: tar.TypeReg, mode: 0o600, body: "mine", uid: 1000, gid: 1001},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		{name: "bin/sh", typ: tar.TypeLink, link: "bin/su"},
		{name: "lib", typ: tar.TypeSymlink, link: "/usr/lib"},
		{name: "rel", typ: tar.TypeSymlink, link: "bin/su"},
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "etc/.wh.gone", typ: tar.TypeReg},
		// An absolute symlink among parents resolves inside the target.
		{name: "usr/lib/", typ: tar.TypeDir},
		{name: "lib/libc.so", typ: tar.TypeReg, body: "libc"},
		// A hard link listed before its target (flattened images do this).
		{name: "early", typ: tar.TypeLink, link: "late"},
		{name: "late", typ: tar.TypeReg, body: "late"},
	}
	entries[8].name = "dev/null"
	if err := Unpack(t.Context(), makeTar(t, entries), dir); err != nil {
		t.Fatal(err)
	}
	check := func(rel string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, rel), &st); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		fi, _ := os.Lstat(filepath.Join(dir, rel))
		if fi.Mode() != mode || st.Uid != uid || st.Gid != gid {
			t.Fatalf("%s: mode %v uid %d gid %d, want %v %d %d", rel, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
		if fi.Mode()&os.ModeDir == 0 && fi.ModTime().Unix() != 1700000000 {
			t.Fatalf("%s: mtime %v", rel, fi.ModTime())
		}
	}
	check("bin/su", 0o755|os.ModeSetuid, 0, 0)
	check("home/user/file", 0o600, 1000, 1001)
	check("tmp", 0o777|os.ModeDir|os.ModeSticky, 0, 0)
	check("dev/null", 0o666|os.ModeDevice|os.ModeCharDevice, 0, 0)
	check("run/fifo", 0o600|os.ModeNamedPipe, 0, 0)
	if l, _ := os.Readlink(filepath.Join(dir, "lib")); l != "/usr/lib" {
		t.Fatalf("lib -> %q", l)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "usr/lib/libc.so")); err != nil || string(b) != "libc" {
		t.Fatalf("write through absolute parent symlink: %q %v", b, err)
	}
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(dir, "bin/su"), &a)
	unix.Stat(filepath.Join(dir, "bin/sh"), &b)
	if a.Ino != b.Ino {
		t.Fatal("bin/sh is not a hard link to bin/su")
	}
	unix.Stat(filepath.Join(dir, "early"), &a)
	unix.Stat(filepath.Join(dir, "late"), &b)
	if a.Ino != b.Ino {
		t.Fatal("early is not a hard link to late")
	}
	fi, _ := os.Stat(filepath.Join(dir, "bin"))
	if fi.ModTime().Unix() != 1700000000 {
		t.Fatalf("bin mtime %v", fi.ModTime())
	}
}

func TestUnpackWhiteouts(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc/old"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/gone"), nil, 0o644)
	os.MkdirAll(filepath.Join(dir, "opaque/sub"), 0o755)
	entries := []entry{
		{name: "etc/.wh.gone", typ: tar.TypeReg},
		{name: "opaque/new", typ: tar.TypeReg, body: "n"},
		{name: "opaque/.wh..wh..opq", typ: tar.TypeReg},
	}
	if err := Unpack(t.Context(), makeTar(t, entries), dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/gone", "opaque/sub", "etc/.wh.gone", "opaque/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s still exists", p)
		}
	}
	for _, p := range []string{"etc/old", "opaque/new"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s missing", p)
		}
	}
}

func TestUnpackNotTar(t *testing.T) {
	err := Unpack(t.Context(), bytes.NewReader(bytes.Repeat([]byte("garbage!"), 200)), t.TempDir())
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
}

// TestUnpackZerosBecomeHoles checks that runs of zeros are not written to
// the host's disk, that the file keeps its size and data, and that a body
// cut short is an error.
func TestUnpackZerosBecomeHoles(t *testing.T) {
	data := "head" + string(make([]byte, 4<<20)) + "tail"
	tests := []struct {
		name     string
		body     string
		maxBytes int64 // most bytes the file may occupy on disk
	}{
		{name: "zeros between data", body: data, maxBytes: 512 << 10},
		{name: "only zeros", body: string(make([]byte, 3<<20)), maxBytes: 64 << 10},
		{name: "trailing zeros", body: "x" + string(make([]byte, 2<<20)), maxBytes: 256 << 10},
		{name: "no zeros", body: "plain text", maxBytes: 64 << 10},
		{name: "empty", body: "", maxBytes: 0},
		{name: "short last block", body: string(bytes.Repeat([]byte{1}, sparseBlock+100)), maxBytes: 2 * sparseBlock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := Unpack(t.Context(), makeTar(t, []entry{{name: "f", typ: tar.TypeReg, body: tt.body}}), dir); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "f"))
			if err != nil || string(got) != tt.body {
				t.Fatalf("content differs (len %d, want %d), %v", len(got), len(tt.body), err)
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(dir, "f"), &st); err != nil {
				t.Fatal(err)
			}
			if used := st.Blocks * 512; used > tt.maxBytes {
				t.Fatalf("file uses %d bytes on disk, want at most %d", used, tt.maxBytes)
			}
		})
	}
	t.Run("truncated body", func(t *testing.T) {
		whole := makeTar(t, []entry{{name: "f", typ: tar.TypeReg, body: data}}).Bytes()
		err := Unpack(t.Context(), bytes.NewReader(whole[:1<<20]), t.TempDir())
		if err == nil {
			t.Fatal("truncated archive unpacked without error")
		}
	})
}

// TestUnpackGNUSparse checks that a GNU sparse entry (tar --sparse) becomes
// a regular file with its full content.
func TestUnpackGNUSparse(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar missing")
	}
	src := t.TempDir()
	f, _ := os.Create(filepath.Join(src, "s"))
	f.WriteAt([]byte("end"), 3<<20)
	f.Close()
	out, err := exec.Command("tar", "--sparse", "--format=gnu", "-cf", "-", "-C", src, "s").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Unpack(t.Context(), bytes.NewReader(out), dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(dir, "s"))
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 3<<20+3 {
		t.Fatalf("sparse entry: %v %v", fi, err)
	}
}

func TestIsZero(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{nil, true}, {[]byte{0}, true}, {make([]byte, 64<<10), true}, {[]byte{1}, false},
		{[]byte{0, 0, 1}, false}, {[]byte{1, 1, 1}, false}, {append(make([]byte, 4095), 7), false},
	} {
		if got := isZero(tc.b); got != tc.want {
			t.Errorf("isZero(%d bytes ending %v) = %v", len(tc.b), tc.b[max(0, len(tc.b)-1):], got)
		}
	}
}

// TestUnpackDirectWrites checks Options.DirectWrites: on a filesystem
// with direct I/O a large file's data bypasses the page cache (none of
// its pages is resident after the unpack, by mincore(2)), on tmpfs the
// unpack falls back to buffered writes; either way the content is whole,
// blocks of zeros are holes, and the unaligned tail is written.
func TestUnpackDirectWrites(t *testing.T) {
	body := make([]byte, 3<<20+1234)
	for i := range body {
		body[i] = byte(i*7 + i>>12 + 1)
	}
	clear(body[sparseBlock*5 : sparseBlock*6]) // one hole in the first chunk
	dirs := map[string]string{"disk": t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "archive-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs["tmpfs"] = shm
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			tb := makeTar(t, []entry{{name: "big", typ: tar.TypeReg, body: string(body)}, {name: "small", typ: tar.TypeReg, body: "hello"}})
			if err := UnpackWith(t.Context(), tb, dir, Options{DirectWrites: true}); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "big")
			if name == "disk" && directWorks(t, dir) {
				if n := residentPages(t, p, 3<<20); n != 0 {
					t.Errorf("%d pages of the first 3 MiB are in the page cache after direct writes", n)
				}
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("content differs (len %d, want %d), %v", len(got), len(body), err)
			}
			if s, _ := os.ReadFile(filepath.Join(dir, "small")); string(s) != "hello" {
				t.Fatalf("small file holds %q", s)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if used := st.Blocks * 512; used > int64(len(body))-sparseBlock+directAlign {
				t.Errorf("file uses %d bytes on disk: the block of zeros is not a hole", used)
			}
		})
	}
}

// directWorks reports whether dir's filesystem takes O_DIRECT.
func directWorks(t *testing.T, dir string) bool {
	fd, err := unix.Open(filepath.Join(dir, ".probe"), unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT, 0o600)
	if err != nil {
		t.Logf("no direct I/O in %s: %v", dir, err)
		return false
	}
	unix.Close(fd)
	os.Remove(filepath.Join(dir, ".probe"))
	return true
}

// residentPages counts the pages of p's first n bytes in the page cache.
func residentPages(t *testing.T, p string, n int) int {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(n), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	c := 0
	for _, v := range vec {
		c += int(v & 1)
	}
	return c
}
