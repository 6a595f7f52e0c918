package storage

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
		layer, err := tarball.LayerFromReader(bytes.NewReader(l))
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
		{name: "entry climbing out of the root", img: imageOf(t, good, escaping), breakBlob: -1, wantErr: "unsafe tar path"},
		{name: "escaping entry alone", img: imageOf(t, escaping), breakBlob: -1, wantErr: "unsafe tar path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := testRegistry(t)
			push(t, host+"/flat:latest", tt.img)
			s := newStore(t, t.TempDir())
			img, err := s.Pull(t.Context(), host+"/flat", nil)
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
			_, ierr := s.Import(t.Context(), bytes.NewReader(layer), "imp", ocispecImageConfig(), nil)
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
