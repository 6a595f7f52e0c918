package storage

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tarDir archives a directory tree (regular files and dirs).
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		hdr, _ := tar.FileInfoHeader(fi, "")
		hdr.Name = rel
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, _ := os.Open(p)
			defer f.Close()
			_, err = io.Copy(tw, f)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}

func TestLoadOCILayout(t *testing.T) {
	dir := t.TempDir()
	l, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	bb := busybox(t)
	if err := l.AppendImage(bb, layout.WithAnnotations(map[string]string{
		ocispec.AnnotationRefName: "example.com/tools/busybox:stable",
	})); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, t.TempDir())
	imgs, err := s.Load(t.Context(), bytes.NewReader(tarDir(t, dir)), nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := bb.ConfigName()
	if len(imgs) != 1 || imgs[0].ID != want.String() || strings.Join(imgs[0].RepoTags, ",") != "example.com/tools/busybox:stable" {
		t.Fatalf("loaded %+v", imgs)
	}
}

func TestLoadMovesTag(t *testing.T) {
	s := newStore(t, t.TempDir())
	old, err := s.Import(t.Context(), bytes.NewReader(smallTar(t, map[string]string{"x": "1"})), "busybox", ocispec.ImageConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := loadBusybox(t, s)
	if img.ID == old.ID || img.RepoTags[0] != "busybox:latest" {
		t.Fatalf("loaded %v", img)
	}
	got, err := s.Get(t.Context(), old.ID)
	if err != nil || len(got.RepoTags) != 0 {
		t.Fatalf("old image: %v %v (tag should have moved)", got.RepoTags, err)
	}
	// Loading the same archive again is harmless.
	imgs, err := s.Load(t.Context(), bytes.NewReader(busyboxArchive(t, "busybox:latest")), nil)
	if err != nil || imgs[0].ID != img.ID {
		t.Fatalf("reload: %v", err)
	}
	list, _ := s.List(t.Context())
	if len(list) != 2 {
		t.Fatalf("List has %d images", len(list))
	}
}
