package storage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
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
	old, err := s.Import(t.Context(), bytes.NewReader(smallTar(t, map[string]string{"x": "1"})), "busybox", portlayer.ImportOptions{}, nil)
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

// TestLoadLegacyDockerSave loads the classic `docker save` layout: one
// directory per layer holding layer.tar, a repeated layer stored as a
// symlink to the first copy, and a config named <hex>.json.
func TestLoadLegacyDockerSave(t *testing.T) {
	layer := smallTar(t, map[string]string{"f": "data"})
	sum := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	config := `{"architecture":"amd64","os":"linux","config":{"Cmd":["/f"]},"rootfs":{"type":"layers","diff_ids":["` + diffID + `","` + diffID + `"]}}`
	csum := sha256.Sum256([]byte(config))
	chex := hex.EncodeToString(csum[:])
	manifest := `[{"Config":"` + chex + `.json","RepoTags":["legacy:1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]`

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		h.Mode = 0o644
		tw.WriteHeader(h)
		tw.Write(body)
	}
	add(&tar.Header{Name: "aaa/", Typeflag: tar.TypeDir}, nil)
	add(&tar.Header{Name: "aaa/layer.tar"}, layer)
	add(&tar.Header{Name: "bbb/", Typeflag: tar.TypeDir}, nil)
	add(&tar.Header{Name: "bbb/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../aaa/layer.tar"}, nil)
	add(&tar.Header{Name: chex + ".json"}, []byte(config))
	add(&tar.Header{Name: "manifest.json"}, []byte(manifest))
	add(&tar.Header{Name: "repositories"}, []byte(`{"legacy":{"1":"x"}}`))
	tw.Close()

	s := newStore(t, t.TempDir())
	imgs, err := s.Load(t.Context(), &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].ID != "sha256:"+chex || imgs[0].RepoTags[0] != "legacy:1" || len(imgs[0].Layers) != 2 {
		t.Fatalf("loaded %+v", imgs)
	}
	if _, err := s.Rootfs(t.Context(), imgs[0].ID); err != nil {
		t.Fatal(err)
	}
}

func TestImportNotTar(t *testing.T) {
	s := newStore(t, t.TempDir())
	_, err := s.Import(t.Context(), bytes.NewReader(bytes.Repeat([]byte("not a tar"), 300)), "x", portlayer.ImportOptions{}, nil)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
	list, _ := s.List(t.Context())
	if len(list) != 0 {
		t.Fatalf("List = %v", list)
	}
}
