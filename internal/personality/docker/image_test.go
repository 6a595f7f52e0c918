package docker_test

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// decodeLines decodes a JSON progress stream.
func decodeLines(t *testing.T, r io.Reader) []httputils.ProgressMessage {
	t.Helper()
	var out []httputils.ProgressMessage
	dec := json.NewDecoder(r)
	for {
		var m httputils.ProgressMessage
		if err := dec.Decode(&m); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
}

func TestPullProgress(t *testing.T) {
	layer := "sha256:" + strings.Repeat("c", 64)
	tests := []struct {
		name      string
		failAfter error
		wantLast  string
		wantError string
	}{
		{name: "success", wantLast: "Status: Downloaded newer image for 127.0.0.1:5000/app:v1"},
		{name: "error mid-stream", failAfter: errors.New("layer digest mismatch"), wantError: "layer digest mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := newHandler(t)
			f.Registry["127.0.0.1:5000/app:v1"] = portlayer.Image{ID: "sha256:" + strings.Repeat("d", 64), Layers: []string{layer},
				RepoDigests: []string{"127.0.0.1:5000/app@sha256:" + strings.Repeat("e", 64)}}
			f.FailOn("Images.Pull.after", tt.failAfter)
			rec := do(t, h, "POST", "/v1.50/images/create?fromImage=127.0.0.1:5000/app&tag=v1", "")
			if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("code %d %v", rec.Code, rec.Header())
			}
			msgs := decodeLines(t, rec.Body)
			if len(msgs) < 3 || msgs[0].ID != "cccccccccccc" || msgs[0].Status != "Pulling fs layer" {
				t.Fatalf("messages %+v", msgs)
			}
			dl := msgs[1]
			if dl.Status != "Downloading" || dl.Progress == nil || dl.Progress.Current != 512 || dl.Progress.Total != 1024 || !strings.HasPrefix(dl.ProgressText, "[") {
				t.Errorf("download line %+v", dl)
			}
			last := msgs[len(msgs)-1]
			if tt.wantError != "" {
				if last.Error == nil || last.Error.Message != tt.wantError || last.ErrorText != tt.wantError {
					t.Errorf("last %+v", last)
				}
				return
			}
			if last.Status != tt.wantLast || msgs[len(msgs)-2].Status != "Digest: sha256:"+strings.Repeat("d", 64) {
				t.Errorf("tail %+v", msgs[len(msgs)-2:])
			}
		})
	}
}

func TestImagesClient(t *testing.T) {
	f, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()
	f.Registry["127.0.0.1:5000/busybox:latest"] = portlayer.Image{ID: "sha256:" + strings.Repeat("a", 64), Layers: []string{"sha256:" + strings.Repeat("f", 64)}}

	pull, err := cli.ImagePull(ctx, "127.0.0.1:5000/busybox", client.ImagePullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pull.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = cli.ImagePull(ctx, "127.0.0.1:5000/nosuch", client.ImagePullOptions{})
	if err == nil || !errdefs.IsNotFound(err) {
		t.Errorf("pull nosuch: %v", err)
	}

	ins, err := cli.ImageInspect(ctx, "127.0.0.1:5000/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if ins.ID != "sha256:"+strings.Repeat("a", 64) || ins.RootFS.Type != "layers" || len(ins.RootFS.Layers) != 1 || ins.Os != "linux" || ins.Architecture != "amd64" {
		t.Errorf("inspect %+v", ins.InspectResponse)
	}

	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: "busybox", Target: "mybox:v2"}); err != nil {
		t.Fatal(err)
	}
	list, err := cli.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]bool{}
	for _, s := range list.Items {
		for _, tg := range s.RepoTags {
			tags[tg] = true
		}
		if s.Containers != -1 {
			t.Errorf("Containers = %d", s.Containers)
		}
	}
	for _, want := range []string{"busybox:latest", "mybox:v2", "127.0.0.1:5000/busybox:latest"} {
		if !tags[want] {
			t.Errorf("list lacks %s: %v", want, tags)
		}
	}

	load, err := cli.ImageLoad(ctx, strings.NewReader("alpine:3.20\n"), client.ImageLoadWithQuiet(true))
	if err != nil {
		t.Fatal(err)
	}
	msgs := decodeLines(t, load)
	load.Close()
	if len(msgs) != 1 || msgs[0].Stream != "Loaded image: alpine:3.20\n" {
		t.Errorf("load output %+v", msgs)
	}

	imp, err := cli.ImageImport(ctx, client.ImageImportSource{Source: strings.NewReader("a tarball"), SourceName: "-"}, "imported:v1",
		client.ImageImportOptions{Changes: []string{`CMD ["sh"]`, "ENV A=b", "WORKDIR /w", "USER nobody", `ENTRYPOINT ["/init"]`}})
	if err != nil {
		t.Fatal(err)
	}
	msgs = decodeLines(t, imp)
	imp.Close()
	if last := msgs[len(msgs)-1]; !strings.HasPrefix(last.Status, "sha256:") {
		t.Errorf("import output %+v", msgs)
	}
	got, err := f.Images().Get(ctx, "imported:v1")
	if err != nil {
		t.Fatal(err)
	}
	want := ocispec.ImageConfig{Cmd: []string{"sh"}, Env: []string{"A=b"}, WorkingDir: "/w", User: "nobody", Entrypoint: []string{"/init"}}
	if g := got.Config.Config; strings.Join(g.Cmd, " ") != "sh" || g.Env[0] != want.Env[0] || g.WorkingDir != "/w" || g.User != "nobody" || g.Entrypoint[0] != "/init" {
		t.Errorf("imported config %+v", g)
	}

	rm, err := cli.ImageRemove(ctx, "mybox:v2", client.ImageRemoveOptions{})
	if err != nil || len(rm.Items) != 1 || rm.Items[0].Untagged != "mybox:v2" {
		t.Errorf("rm = %+v, %v", rm, err)
	}
	if _, err := cli.ImageRemove(ctx, "nosuch", client.ImageRemoveOptions{}); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "No such image: nosuch") {
		t.Errorf("rm nosuch: %v", err)
	}
}
