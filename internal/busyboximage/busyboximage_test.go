package busyboximage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func requireBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skipf("%s missing (apt-get install %s)", DefaultBusybox, DebianPackage)
	}
}

func TestBuild(t *testing.T) {
	requireBusybox(t)
	img, err := Build(DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	img2, err := Build(DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	id1, _ := img.ConfigName()
	id2, _ := img2.ConfigName()
	if id1 != id2 {
		t.Fatalf("image ID not deterministic: %s vs %s", id1, id2)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.Config.Cmd) != 1 || cf.Config.Cmd[0] != "sh" || cf.Config.Env[0] != DefaultPath {
		t.Fatalf("config = %+v", cf)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
	}
	tests := []struct {
		name     string
		typ      byte
		mode     int64
		linkname string
	}{
		{name: "bin/busybox", typ: tar.TypeReg, mode: 0o755},
		{name: "bin/sh", typ: tar.TypeLink, linkname: "bin/busybox"},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644},
		{name: "etc/group", typ: tar.TypeReg, mode: 0o644},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		{name: "root/", typ: tar.TypeDir, mode: 0o700},
		{name: "proc/", typ: tar.TypeDir},
		{name: "usr/bin/", typ: tar.TypeDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok := got[tt.name]
			if !ok {
				t.Fatalf("missing")
			}
			if h.Typeflag != tt.typ || (tt.mode != 0 && h.Mode != tt.mode) || h.Linkname != tt.linkname {
				t.Fatalf("got type %c mode %o link %q", h.Typeflag, h.Mode, h.Linkname)
			}
		})
	}
}

func TestBuildMissing(t *testing.T) {
	_, err := Build(filepath.Join(t.TempDir(), "busybox"))
	if !errdefs.IsNotFound(err) {
		t.Fatalf("err = %v, want NotFound", err)
	}
}

func TestWriteArchive(t *testing.T) {
	requireBusybox(t)
	img, err := Build(DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, img, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "busybox:latest" {
		t.Fatalf("manifest = %+v", m)
	}
	if err := WriteArchive(io.Discard, img, "Bad Tag"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad tag: err = %v", err)
	}
}
