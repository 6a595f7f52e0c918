package client_test

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/portlayer/storage"
)

// layerTar is a tar holding one file.
func layerTar(t *testing.T, name, content string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write([]byte(content))
	_ = tw.Close()
	return b.Bytes()
}

// TestImagesOverAPI: the image store in process and through the client
// and a real server (validated against the document), the same cases:
// import with progress, get, list, tag, save, remove, load, pull from a
// registry on 127.0.0.1, and typed errors.
func TestImagesOverAPI(t *testing.T) {
	t.Run("InProcess", func(t *testing.T) { imagesContract(t, newStore(t)) })
	t.Run("OverAPI", func(t *testing.T) {
		c, err := client.New("unix://"+serve(t, api.Backend{Compute: newCompute(t), Images: newStore(t)}), nil)
		if err != nil {
			t.Fatal(err)
		}
		imagesContract(t, c.Images())
	})
}

// newStore is an image store in a temporary directory.
func newStore(t *testing.T) *storage.Store {
	t.Helper()
	store, err := storage.New(storage.Config{Root: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// imagesContract is the image store's contract, run on the store itself
// and through the API with the same results.
func imagesContract(t *testing.T, ic portlayer.Images) {
	ctx := t.Context()
	var err error

	var steps int
	img, err := ic.Import(ctx, bytes.NewReader(layerTar(t, "hello.txt", "hi\n")), "imp:v1",
		portlayer.ImportOptions{Config: ocispec.ImageConfig{Cmd: []string{"/hello"}}}, func(portlayer.Progress) { steps++ })
	if err != nil {
		t.Fatal(err)
	}
	if len(img.RepoTags) != 1 || img.RepoTags[0] != "imp:v1" || img.Config.Config.Cmd[0] != "/hello" {
		t.Errorf("imported %+v", img)
	}
	if got, err := ic.Get(ctx, "imp:v1"); err != nil || got.ID != img.ID {
		t.Errorf("Get(imp:v1) = %s, %v", got.ID, err)
	}
	_, err = ic.Get(ctx, "nosuch")
	wantImageNotFound(t, err, "nosuch:latest")
	if err := ic.Tag(ctx, "imp:v1", "imp:v2"); err != nil {
		t.Fatal(err)
	}
	if all, err := ic.List(ctx); err != nil || len(all) != 1 || strings.Join(all[0].RepoTags, ",") != "imp:v1,imp:v2" {
		t.Errorf("List = %+v, %v", all, err)
	}
	var archive bytes.Buffer
	if err := ic.Save(ctx, []string{"imp:v1"}, &archive); err != nil || archive.Len() == 0 {
		t.Fatalf("Save: %d bytes, %v", archive.Len(), err)
	}
	if err := ic.Save(ctx, []string{"nosuch"}, io.Discard); !errdefs.IsNotFound(err) {
		t.Errorf("Save(nosuch): %v", err)
	}
	dels, err := ic.Remove(ctx, "imp:v1", true)
	if err != nil || len(dels) == 0 {
		t.Fatalf("Remove = %+v, %v", dels, err)
	}
	loaded, err := ic.Load(ctx, &archive, nil)
	if err != nil || len(loaded) != 1 || loaded[0].ID != img.ID {
		t.Errorf("Load = %+v, %v", loaded, err)
	}

	// Pull from a registry on loopback, with progress.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go func() { _ = reg.Serve(l) }()
	t.Cleanup(func() { _ = reg.Close() })
	rimg, err := random.Image(1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := l.Addr().String() + "/pl/random:1"
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, rimg); err != nil {
		t.Fatal(err)
	}
	steps = 0
	pulled, err := ic.Pull(ctx, ref, portlayer.RegistryAuth{}, func(portlayer.Progress) { steps++ })
	if err != nil || steps == 0 || len(pulled.RepoTags) != 1 {
		t.Errorf("Pull = %+v after %d progress lines, %v", pulled.RepoTags, steps, err)
	}
	_, err = ic.Pull(ctx, l.Addr().String()+"/pl/none:1", portlayer.RegistryAuth{}, nil)
	if !errdefs.IsNotFound(err) || portlayer.AsError(err) == nil {
		t.Errorf("Pull of a missing repository: %v", err)
	}
}

func wantImageNotFound(t *testing.T, err error, id string) {
	t.Helper()
	pe := portlayer.AsError(err)
	if !errdefs.IsNotFound(err) || pe == nil || pe.Kind != portlayer.KindImage || pe.ID != id {
		t.Errorf("err = %v (%+v); want image %s not found", err, pe, id)
	}
}

// TestLogsOverAPI: a container's output through the logs stream.
func TestLogsOverAPI(t *testing.T) {
	svc := newCompute(t)
	c, err := client.New("unix://"+serve(t, api.Backend{Compute: svc, Interaction: svc}), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ctr, err := c.Create(ctx, portlayer.ContainerSpec{Name: "talk", Image: testImage, Args: []string{"echo", "hello", "there"}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Wait(ctx, ctr.ID, portlayer.WaitNextExit)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, ctr.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit")
	}
	logs, err := c.Logs(ctx, "talk", portlayer.LogOptions{Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for m := range logs {
		if m.Stream != "stdout" {
			t.Errorf("message on %s", m.Stream)
		}
		out.Write(m.Data)
	}
	if out.String() != "hello there\n" {
		t.Errorf("logs = %q", out.String())
	}
	if _, err := c.Logs(ctx, "nosuch", portlayer.LogOptions{}); !errdefs.IsNotFound(err) || portlayer.AsError(err) == nil {
		t.Errorf("Logs(nosuch): %v", err)
	}
}
