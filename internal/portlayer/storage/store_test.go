package storage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/busyboximage"
	"github.com/vchproject/vch/internal/portlayer"
)

func newStore(t *testing.T, root string) *Store {
	t.Helper()
	s, err := New(Config{Root: root}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var (
	busyboxOnce sync.Once
	busyboxImg  v1.Image
	busyboxErr  error
)

// busybox returns the test busybox image, built once per test binary.
func busybox(t *testing.T) v1.Image {
	t.Helper()
	if _, err := os.Stat(busyboximage.DefaultBusybox); err != nil {
		t.Skipf("%s missing (apt-get install %s)", busyboximage.DefaultBusybox, busyboximage.DebianPackage)
	}
	busyboxOnce.Do(func() { busyboxImg, busyboxErr = busyboximage.Build(busyboximage.DefaultBusybox) })
	if busyboxErr != nil {
		t.Fatal(busyboxErr)
	}
	return busyboxImg
}

func busyboxArchive(t *testing.T, tag string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := busyboximage.WriteArchive(&buf, busybox(t), tag); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func loadBusybox(t *testing.T, s *Store) portlayer.Image {
	t.Helper()
	imgs, err := s.Load(t.Context(), bytes.NewReader(busyboxArchive(t, "busybox:latest")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 {
		t.Fatalf("loaded %d images", len(imgs))
	}
	return imgs[0]
}

func smallTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1, 0)})
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

func TestLoadAndGet(t *testing.T) {
	s := newStore(t, t.TempDir())
	img := loadBusybox(t, s)
	want, _ := busybox(t).ConfigName()
	if img.ID != want.String() {
		t.Fatalf("ID = %s, want %s", img.ID, want)
	}
	if len(img.RepoTags) != 1 || img.RepoTags[0] != "busybox:latest" {
		t.Fatalf("RepoTags = %v", img.RepoTags)
	}
	if img.Size < 1<<20 || len(img.Layers) != 1 || img.Config.Config.Cmd[0] != "sh" {
		t.Fatalf("image = %+v", img)
	}
	hex := strings.TrimPrefix(img.ID, "sha256:")
	tests := []struct {
		name, ref string
		found     bool
		missing   string // the NotFound error's image ID: the reference normalised
	}{
		{name: "familiar", ref: "busybox", found: true},
		{name: "tagged", ref: "busybox:latest", found: true},
		{name: "normalised", ref: "docker.io/library/busybox:latest", found: true},
		{name: "full ID", ref: img.ID, found: true},
		{name: "bare hex", ref: hex, found: true},
		{name: "short ID", ref: hex[:12], found: true},
		{name: "prefixed short ID", ref: "sha256:" + hex[:6], found: true},
		{name: "other tag", ref: "busybox:1.36", missing: "busybox:1.36"},
		{name: "missing name", ref: "nosuch", missing: "nosuch:latest"},
		{name: "missing registry ref", ref: "127.0.0.1:5000/nosuch", missing: "127.0.0.1:5000/nosuch:latest"},
		{name: "missing ID", ref: "sha256:" + strings.Repeat("0", 64), missing: "sha256:" + strings.Repeat("0", 64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Get(t.Context(), tt.ref)
			if tt.found {
				if err != nil || got.ID != img.ID {
					t.Fatalf("Get(%q) = %s, %v", tt.ref, got.ID, err)
				}
				return
			}
			if pe := portlayer.AsError(err); !errdefs.IsNotFound(err) || pe == nil || pe.Kind != portlayer.KindImage || pe.ID != tt.missing {
				t.Fatalf("Get(%q) err = %v, want NotFound of image %q", tt.ref, err, tt.missing)
			}
		})
	}
	list, err := s.List(t.Context())
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
}

func TestLoadMalformed(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{name: "not a tar", data: bytes.Repeat([]byte("nonsense"), 100)},
		{name: "empty", data: nil},
		{name: "no manifest", data: smallTar(t, map[string]string{"foo": "bar"})},
		{name: "bad manifest json", data: smallTar(t, map[string]string{"manifest.json": "{"})},
		{name: "missing config", data: smallTar(t, map[string]string{"manifest.json": `[{"Config":"nope.json","RepoTags":["x:1"],"Layers":[]}]`})},
		{name: "bad tag", data: smallTar(t, map[string]string{"manifest.json": `[{"Config":"c.json","RepoTags":["Bad Tag"],"Layers":[]}]`, "c.json": "{}"})},
		{name: "layer count mismatch", data: smallTar(t, map[string]string{"manifest.json": `[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l.tar"]}]`, "c.json": `{"rootfs":{"type":"layers","diff_ids":[]}}`, "l.tar": ""})},
	}
	s := newStore(t, t.TempDir())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Load(t.Context(), bytes.NewReader(tt.data), nil)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestImport(t *testing.T) {
	layer := smallTar(t, map[string]string{"hello.txt": "hi\n"})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layer)
	zw.Close()
	tests := []struct {
		name, ref string
		data      []byte
		wantTags  []string
	}{
		{name: "plain tagged", ref: "imported", data: layer, wantTags: []string{"imported:latest"}},
		{name: "gzip registry tag", ref: "127.0.0.1:5000/x/y:v1", data: gz.Bytes(), wantTags: []string{"127.0.0.1:5000/x/y:v1"}},
		{name: "untagged", data: layer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, t.TempDir())
			cfg := ocispec.ImageConfig{Cmd: []string{"/hello"}, Env: []string{"A=1"}}
			var events int
			img, err := s.Import(t.Context(), bytes.NewReader(tt.data), tt.ref, portlayer.ImportOptions{Config: cfg}, func(portlayer.Progress) { events++ })
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(img.RepoTags, ",") != strings.Join(tt.wantTags, ",") {
				t.Fatalf("RepoTags = %v, want %v", img.RepoTags, tt.wantTags)
			}
			if img.Config.OS != "linux" || img.Config.Architecture != "amd64" || img.Config.Config.Cmd[0] != "/hello" || img.Size != int64(len(layer)) {
				t.Fatalf("image = %+v", img)
			}
			got, err := s.Get(t.Context(), img.ID)
			if err != nil || got.ID != img.ID {
				t.Fatalf("Get = %v", err)
			}
		})
	}
}

// TestImportPlatform: an import records the platform it is given, and a
// different platform gives a different image ID (the config differs).
func TestImportPlatform(t *testing.T) {
	s := newStore(t, t.TempDir())
	layer := smallTar(t, map[string]string{"a": "b"})
	arm, err := s.Import(t.Context(), bytes.NewReader(layer), "arm", portlayer.ImportOptions{Platform: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := arm.Config.Platform; p.OS != "linux" || p.Architecture != "arm" || p.Variant != "v7" {
		t.Fatalf("platform = %+v, want linux/arm/v7", p)
	}
	host, err := s.Import(t.Context(), bytes.NewReader(layer), "host", portlayer.ImportOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host.ID == arm.ID {
		t.Fatalf("linux/amd64 and linux/arm/v7 imports share ID %s", arm.ID)
	}
}

func TestTagAndRestart(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	img := loadBusybox(t, s)
	if err := s.Tag(t.Context(), "busybox", "127.0.0.1:5000/busybox:v2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(t.Context(), "busybox", "bad@sha256:"+strings.Repeat("a", 64)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("digest tag: err = %v", err)
	}
	if err := s.Tag(t.Context(), "nosuch", "x"); !errdefs.IsNotFound(err) {
		t.Fatalf("tag missing: err = %v", err)
	}
	s.Close()
	if _, err := s.Get(t.Context(), "busybox"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("after close: err = %v", err)
	}
	s.Close() // idempotent

	s2 := newStore(t, root)
	got, err := s2.Get(t.Context(), "127.0.0.1:5000/busybox:v2")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != img.ID || strings.Join(got.RepoTags, ",") != "127.0.0.1:5000/busybox:v2,busybox:latest" {
		t.Fatalf("after restart: %s %v", got.ID, got.RepoTags)
	}
}

func TestRootfs(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs (e2fsprogs) missing")
	}
	s := newStore(t, t.TempDir())
	img := loadBusybox(t, s)

	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = s.Rootfs(t.Context(), img.ID)
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("caller %d: %q %v", i, paths[i], errs[i])
		}
	}
	disk := paths[0]
	fi, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 2<<30 {
		t.Fatalf("disk size %d, want 2 GiB", fi.Size())
	}
	du, err := exec.Command("du", "-k", disk).Output()
	if err != nil {
		t.Fatal(err)
	}
	var kib int64
	for _, c := range strings.Fields(string(du))[0] {
		kib = kib*10 + int64(c-'0')
	}
	if kib > int64(img.Size>>10)+16<<10 {
		t.Fatalf("disk uses %d KiB on the host; not sparse", kib)
	}
	t.Logf("rootfs disk: %d bytes apparent, %d KiB used", fi.Size(), kib)

	debugfs := func(cmd string) string {
		out, err := exec.Command("debugfs", "-R", cmd, disk).Output()
		if err != nil {
			t.Fatalf("debugfs %s: %v", cmd, err)
		}
		return string(out)
	}
	ls := debugfs("ls -l /bin")
	for _, want := range []string{" busybox", " sh", " ls"} {
		if !strings.Contains(ls, want) {
			t.Fatalf("/bin lacks%s:\n%s", want, ls)
		}
	}
	if st := debugfs("stat /tmp"); !strings.Contains(st, "Mode:  01777") {
		t.Fatalf("/tmp mode:\n%s", st)
	}
	if st := debugfs("stat /"); !strings.Contains(st, "User:     0   Group:     0") {
		t.Fatalf("/ owner:\n%s", st)
	}
	if cat := debugfs("cat /etc/passwd"); !strings.HasPrefix(cat, "root:x:0:0:root:/root:/bin/sh") {
		t.Fatalf("/etc/passwd:\n%s", cat)
	}
	// Cached: a second call returns at once with the same file.
	again, err := s.Rootfs(t.Context(), img.ID)
	if err != nil || again != disk {
		t.Fatalf("second Rootfs = %q, %v", again, err)
	}
	if _, err := s.Rootfs(t.Context(), "sha256:"+strings.Repeat("0", 64)); !errdefs.IsNotFound(err) {
		t.Fatalf("missing image: err = %v", err)
	}
	if _, err := s.Rootfs(t.Context(), "busybox"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad ID: err = %v", err)
	}
	ents, _ := os.ReadDir(s.path("tmp"))
	if len(ents) != 0 {
		t.Fatalf("tmp not cleaned: %v", ents)
	}
	_ = io.Discard
}
