package storage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

func ocispecImageConfig() ocispec.ImageConfig { return ocispec.ImageConfig{Cmd: []string{"/bin/sh"}} }

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// rawTar builds a layer tar from headers, without any checks, so tests can
// make entries a well-behaved writer would not.
func rawTar(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// imageOf builds an image whose layers (base first) are the given tars.
func imageOf(t *testing.T, layers ...[]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		// LayerFromOpener, not LayerFromReader: the latter spools to a
		// temp file it never removes.
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// TestRootfsFlattenErrors checks that an image whose layers cannot all be
// flattened fails Rootfs instead of yielding a disk with only part of its
// files (mutate.Extract ends its stream cleanly before reporting an error).
func TestRootfsFlattenErrors(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs (e2fsprogs) missing")
	}
	good := rawTar(t, &tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, &tar.Header{Name: "bin/sh", Typeflag: tar.TypeReg})
	upper := rawTar(t, &tar.Header{Name: "upper.txt", Typeflag: tar.TypeReg})
	escaping := rawTar(t, &tar.Header{Name: "../../../../tmp/escape", Typeflag: tar.TypeReg})
	tests := []struct {
		name string
		img  v1.Image
		// breakBlob, if >= 0, deletes that layer's blob from the store.
		breakBlob int
		wantErr   string // "" means success
	}{
		{name: "two good layers", img: imageOf(t, good, upper), breakBlob: -1},
		{name: "lower layer blob missing", img: imageOf(t, good, upper), breakBlob: 0, wantErr: "missing"},
		{name: "upper layer blob missing", img: imageOf(t, good, upper), breakBlob: 1, wantErr: "missing"},
		{name: "entry climbing out of the root", img: imageOf(t, good, escaping), breakBlob: -1, wantErr: "escapes the target"},
		{name: "escaping entry alone", img: imageOf(t, escaping), breakBlob: -1, wantErr: "escapes the target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := testRegistry(t)
			push(t, host+"/flat:latest", tt.img)
			s := newStore(t, t.TempDir())
			img, err := s.Pull(t.Context(), host+"/flat", portlayer.RegistryAuth{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.breakBlob >= 0 {
				layers, _ := tt.img.Layers()
				d, _ := layers[tt.breakBlob].Digest()
				if err := os.Remove(s.blobPath(d)); err != nil {
					t.Fatal(err)
				}
			}
			disk, err := s.Rootfs(t.Context(), img.ID)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				out, _ := exec.Command("debugfs", "-R", "ls /", disk).Output()
				if !strings.Contains(string(out), "upper.txt") || !strings.Contains(string(out), "bin") {
					t.Fatalf("rootfs lacks a layer's files:\n%s", out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Rootfs = %q, %v; want error containing %q", disk, err, tt.wantErr)
			}
			if ents, _ := os.ReadDir(s.path("rootfs")); len(ents) != 0 {
				t.Fatalf("a disk was kept after the failure: %v", ents)
			}
			if ents, _ := os.ReadDir(s.path("tmp")); len(ents) != 0 {
				t.Fatalf("tmp not cleaned: %v", ents)
			}
		})
	}
}

// TestIngestEscapingEntries checks that load and import refuse a layer with
// an entry or hard link climbing out of the root, as dockerd does, and keep
// layers whose absolute names and link targets resolve inside it.
func TestIngestEscapingEntries(t *testing.T) {
	tests := []struct {
		name string
		hdrs []*tar.Header
		ok   bool
	}{
		{name: "dot-dot file", hdrs: []*tar.Header{{Name: "../../etc/evil", Typeflag: tar.TypeReg}}},
		{name: "dot-dot after a dir", hdrs: []*tar.Header{{Name: "a/../../evil", Typeflag: tar.TypeReg}}},
		{name: "bare dot-dot dir", hdrs: []*tar.Header{{Name: "../", Typeflag: tar.TypeDir, Mode: 0o755}}},
		{name: "dot-dot whiteout", hdrs: []*tar.Header{{Name: "../.wh.etc", Typeflag: tar.TypeReg}}},
		{name: "hard link climbing out", hdrs: []*tar.Header{{Name: "shadow", Typeflag: tar.TypeLink, Linkname: "../../etc/shadow"}}},
		{name: "absolute name", ok: true, hdrs: []*tar.Header{{Name: "/etc/inside", Typeflag: tar.TypeReg}}},
		{name: "absolute symlink", ok: true, hdrs: []*tar.Header{{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}},
		{name: "relative symlink up", ok: true, hdrs: []*tar.Header{{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: "../../../etc"}}},
		{name: "absolute hard link", ok: true, hdrs: []*tar.Header{{Name: "etc/a", Typeflag: tar.TypeReg}, {Name: "b", Typeflag: tar.TypeLink, Linkname: "/etc/a"}}},
		{name: "dots inside a name", ok: true, hdrs: []*tar.Header{{Name: "a/..b/..c", Typeflag: tar.TypeReg}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layer := rawTar(t, tt.hdrs...)
			s := newStore(t, t.TempDir())
			_, ierr := s.Import(t.Context(), bytes.NewReader(layer), "imp", portlayer.ImportOptions{Config: ocispecImageConfig()}, nil)
			var archive bytes.Buffer
			if err := tarball.Write(mustTag(t, "loaded:latest"), imageOf(t, layer), &archive); err != nil {
				t.Fatal(err)
			}
			_, lerr := s.Load(t.Context(), &archive, nil)
			for op, err := range map[string]error{"Import": ierr, "Load": lerr} {
				if tt.ok && err != nil {
					t.Fatalf("%s: %v", op, err)
				}
				if !tt.ok && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "outside the root filesystem")) {
					t.Fatalf("%s: err = %v, want InvalidArgument ... outside the root filesystem", op, err)
				}
			}
			if list, _ := s.List(t.Context()); !tt.ok && len(list) != 0 {
				t.Fatalf("images stored: %v", list)
			}
		})
	}
}

// TestRootfsLayerSemantics checks that layers are applied base first the
// way dockerd applies them, in the cases where go-containerregistry's
// flattening (used before) differs.
func TestRootfsLayerSemantics(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs (e2fsprogs) missing")
	}
	reg := func(name, body string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(body)), Mode: 0o644, PAXRecords: map[string]string{"comment": body}}
	}
	dir := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755} }
	sym := func(name, target string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}
	}
	tests := []struct {
		name   string
		layers [][]*tar.Header
		// checks maps a debugfs command to a text its output must contain
		// ("!" prefix: must not contain).
		checks map[string]string
	}{
		{name: "relative symlink climbing above the root is kept",
			layers: [][]*tar.Header{{dir("lib/"), sym("lib/up", "../../../etc")}},
			checks: map[string]string{"stat /lib/up": `Fast link dest: "../../../etc"`}},
		{name: "later entry for a path in one layer wins",
			layers: [][]*tar.Header{{reg("a", "body-one"), reg("a", "body-two")}},
			checks: map[string]string{"cat /a": "body-two"}},
		{name: "upper layer writes through a lower symlink inside the root",
			layers: [][]*tar.Header{{dir("etc/"), sym("esc", "/etc")}, {reg("esc/pwned", "body-pwned")}},
			checks: map[string]string{"cat /etc/pwned": "body-pwned", "stat /esc": "Fast link dest"}},
		{name: "files beneath a symlink of the same layer",
			layers: [][]*tar.Header{{sym("esc", "/etc"), reg("esc/f", "body-f")}},
			checks: map[string]string{"cat /etc/f": "body-f"}},
		{name: "whiteout and opaque directory across layers",
			layers: [][]*tar.Header{{dir("a/"), reg("a/b", "body-b"), reg("a/c", "body-c"), dir("d/"), reg("d/x", "body-x")},
				{reg("a/.wh.b", ""), reg("d/.wh..wh..opq", ""), reg("d/y", "body-y")}},
			checks: map[string]string{"stat /a/b": "File not found", "cat /a/c": "body-c", "stat /d/x": "File not found", "cat /d/y": "body-y"}},
		// The root lists the image's entries only, as a container's
		// root under dockerd: no lost+found of mkfs.ext4's, but one the
		// image has is kept.
		{name: "no lost+found of mkfs's",
			layers: [][]*tar.Header{{reg("a", "body-a")}},
			checks: map[string]string{"stat /lost+found": "File not found", "cat /a": "body-a"}},
		{name: "the image's own lost+found",
			layers: [][]*tar.Header{{dir("lost+found/"), reg("lost+found/kept", "body-kept")}},
			checks: map[string]string{"cat /lost+found/kept": "body-kept"}},
		{name: "hard link to a lower layer's file",
			layers: [][]*tar.Header{{reg("orig", "body-orig")}, {{Name: "link", Typeflag: tar.TypeLink, Linkname: "orig"}}},
			checks: map[string]string{"cat /link": "body-orig", "stat /orig": "Links: 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var layers [][]byte
			for _, hdrs := range tt.layers {
				layers = append(layers, tarWithBodies(t, hdrs))
			}
			disk := pulledRootfs(t, imageOf(t, layers...))
			for cmd, want := range tt.checks {
				out, _ := exec.Command("debugfs", "-R", cmd, disk).CombinedOutput()
				neg := strings.HasPrefix(want, "!")
				if strings.Contains(string(out), strings.TrimPrefix(want, "!")) == neg {
					t.Errorf("debugfs %s: want %q in:\n%s", cmd, want, out)
				}
			}
		})
	}
}

// TestRootfsSparseFile checks that a GNU sparse file (tar --sparse, as
// `docker import` may get) unpacks with its size.
func TestRootfsSparseFile(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs (e2fsprogs) missing")
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar missing")
	}
	src := t.TempDir()
	f, err := os.Create(src + "/sparse")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("end"), 8<<20)
	f.Close()
	out, err := exec.Command("tar", "--sparse", "--format=gnu", "-cf", "-", "-C", src, "sparse").Output()
	if err != nil {
		t.Fatal(err)
	}
	disk := pulledRootfs(t, imageOf(t, out))
	st, _ := exec.Command("debugfs", "-R", "stat /sparse", disk).CombinedOutput()
	if !strings.Contains(string(st), "Size: 8388611") {
		t.Fatalf("sparse file:\n%s", st)
	}
}

// tarWithBodies writes headers whose regular-file body is the PAX
// "comment" record (removed before writing).
func tarWithBodies(t *testing.T, hdrs []*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		body := h.PAXRecords["comment"]
		h.PAXRecords = nil
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

// pulledRootfs stores img through a test registry and returns its disk.
func pulledRootfs(t *testing.T, img v1.Image) string {
	t.Helper()
	host := testRegistry(t)
	push(t, host+"/sem:latest", img)
	s := newStore(t, t.TempDir())
	got, err := s.Pull(t.Context(), host+"/sem", portlayer.RegistryAuth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	disk, err := s.Rootfs(t.Context(), got.ID)
	if err != nil {
		t.Fatal(err)
	}
	return disk
}

// TestBlankRootfs checks the empty disk: an ext4 filesystem with a
// journal and nothing in its root but lost+found, read-only, sparse,
// made once.
func TestBlankRootfs(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs (e2fsprogs) missing")
	}
	if _, err := findMkfs(); err != nil {
		t.Skip(err)
	}
	s := newStore(t, t.TempDir())
	disk, err := s.BlankRootfs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o444 || st.Size() != blankRootfsBytes {
		t.Fatalf("blank rootfs: mode %v, size %d; want 0444, %d bytes", st.Mode().Perm(), st.Size(), blankRootfsBytes)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > blankRootfsBytes/2 {
		t.Errorf("blank rootfs uses %d bytes of %d: not sparse", used, blankRootfsBytes)
	}
	ls, _ := exec.Command("debugfs", "-R", "ls -p /", disk).CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(ls)), "\n") {
		if f := strings.Split(line, "/"); len(f) > 5 && f[5] != "." && f[5] != ".." && f[5] != "lost+found" && !strings.HasPrefix(line, "debugfs") {
			t.Errorf("blank rootfs holds %q", f[5])
		}
	}
	if feat, _ := exec.Command("debugfs", "-R", "features", disk).CombinedOutput(); !strings.Contains(string(feat), "has_journal") {
		t.Errorf("blank rootfs has no journal: %s", feat)
	}
	again, err := s.BlankRootfs(t.Context())
	if err != nil || again != disk {
		t.Fatalf("second BlankRootfs = %q, %v; want %q", again, err, disk)
	}
}
