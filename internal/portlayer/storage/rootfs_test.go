package storage

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

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
