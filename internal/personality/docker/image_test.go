package docker_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
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

// unreachable is a port layer's error for a registry it cannot reach:
// Unavailable, with the transport's text.
type unreachable struct{}

func (unreachable) Error() string {
	return `Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused`
}
func (unreachable) Unwrap() error { return errdefs.ErrUnavailable }

// TestPullUnreachable: a pull that fails before any progress is an
// error status, not a stream: dockerd's 500 with the transport's text
// for a registry it cannot reach (the CLI prints "Error response from
// daemon: Get …").
func TestPullUnreachable(t *testing.T) {
	denied := &portlayer.Error{Class: portlayer.ClassPermissionDenied, Op: "pull", Kind: portlayer.KindImage, ID: "127.0.0.1:5999/app:v1", Name: "127.0.0.1:5999/app",
		Reason: portlayer.ReasonDenied, Message: "the registry refused access", Cause: "DENIED: no"}
	for _, tt := range []struct {
		name string
		err  error
		code int
		msg  string
	}{
		{"unreachable", unreachable{}, 500, (unreachable{}).Error()},
		// dockerd's notFoundError (distribution translatePullError).
		{"denied", denied, 404, "pull access denied for 127.0.0.1:5999/app, repository does not exist or may require 'docker login': DENIED: no"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, h := newHandler(t)
			f.FailOn("Images.Pull", tt.err)
			rec := do(t, h, "POST", "/v1.50/images/create?fromImage=127.0.0.1:5999/app&tag=v1", "")
			var body struct{ Message string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != tt.code || body.Message != tt.msg {
				t.Errorf("code %d, body %q (%v); want %d %q", rec.Code, rec.Body.String(), err, tt.code, tt.msg)
			}
		})
	}
}

// TestPullAuth: X-Registry-Auth reaches the port layer's Pull; a header
// that is not base64 JSON is a 400 before any pull.
func TestPullAuth(t *testing.T) {
	enc := func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name     string
		header   string
		wantCode int
		wantCall string
	}{
		{name: "anonymous", wantCode: 200, wantCall: "Images.Pull 127.0.0.1:5000/app:v1"},
		{name: "user and password", header: enc(`{"username":"alice","password":"s3cret","serveraddress":"127.0.0.1:5000"}`), wantCode: 200, wantCall: "Images.Pull 127.0.0.1:5000/app:v1 alice"},
		{name: "bad header", header: "%%%", wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := newHandler(t)
			f.Registry["127.0.0.1:5000/app:v1"] = portlayer.Image{ID: "sha256:" + strings.Repeat("d", 64), Layers: []string{"sha256:" + strings.Repeat("c", 64)}}
			req := httptest.NewRequestWithContext(t.Context(), "POST", "/v1.50/images/create?fromImage=127.0.0.1:5000/app&tag=v1", nil)
			if tt.header != "" {
				req.Header.Set("X-Registry-Auth", tt.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", rec.Code, tt.wantCode, rec.Body)
			}
			var pulls []string
			for _, c := range f.Calls() {
				if strings.HasPrefix(c, "Images.Pull") {
					pulls = append(pulls, c)
				}
			}
			switch {
			case tt.wantCall == "" && len(pulls) != 0:
				t.Errorf("pull called: %v", pulls)
			case tt.wantCall != "" && (len(pulls) != 1 || pulls[0] != tt.wantCall):
				t.Errorf("calls %v, want %q", pulls, tt.wantCall)
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
	// Another Linux platform is recorded as given (dockerd's
	// TestImportWithCustomPlatform); another OS is refused.
	imp, err = cli.ImageImport(ctx, client.ImageImportSource{Source: strings.NewReader("a sparc tarball"), SourceName: "-"}, "sparc:v1",
		client.ImageImportOptions{Platform: ocispec.Platform{OS: "linux", Architecture: "sparc64"}})
	if err != nil {
		t.Fatal(err)
	}
	imp.Close()
	if got, err := f.Images().Get(ctx, "sparc:v1"); err != nil || got.Config.OS != "linux" || got.Config.Architecture != "sparc64" {
		t.Errorf("linux/sparc64 import: %+v, %v", got.Config.Platform, err)
	}
	if _, err := cli.ImageImport(ctx, client.ImageImportSource{Source: strings.NewReader("a tarball"), SourceName: "-"}, "mac:v1",
		client.ImageImportOptions{Platform: ocispec.Platform{OS: "macos", Architecture: "arm64"}}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "operating system is not supported") {
		t.Errorf("macos import: %v", err)
	}

	rm, err := cli.ImageRemove(ctx, "mybox:v2", client.ImageRemoveOptions{})
	if err != nil || len(rm.Items) != 1 || rm.Items[0].Untagged != "mybox:v2" {
		t.Errorf("rm = %+v, %v", rm, err)
	}
	// An image a container uses: dockerd's conflict text, once (written
	// from the port layer's typed error).
	used, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: "busybox", Cmd: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	busybox, _ := f.Images().Get(ctx, "busybox")
	wantMsg := fmt.Sprintf(`conflict: unable to remove repository reference "busybox" (must force) - container %s is using its referenced image %s`, used.ID[:12], strings.TrimPrefix(busybox.ID, "sha256:")[:12])
	if _, err := cli.ImageRemove(ctx, "busybox", client.ImageRemoveOptions{}); !errdefs.IsConflict(err) || !strings.HasSuffix(err.Error(), wantMsg) || strings.Count(err.Error(), "conflict:") != 1 {
		t.Errorf("rmi of an image in use: %v\nwant %s", err, wantMsg)
	}
	if _, err := cli.ImageRemove(ctx, "nosuch", client.ImageRemoveOptions{}); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "No such image: nosuch") {
		t.Errorf("rm nosuch: %v", err)
	}
}

// TestImageListTimeFilters checks the before, since, until and dangling
// filters of GET /images/json against dockerd's rules.
func TestImageListTimeFilters(t *testing.T) {
	f, h := newHandler(t)
	day := func(d int) time.Time { return time.Date(2024, 1, d, 0, 0, 0, 0, time.UTC) }
	for i, name := range []string{"old", "mid", "new"} {
		ref := "127.0.0.1:5000/" + name + ":latest"
		f.Registry[ref] = portlayer.Image{ID: "sha256:" + strings.Repeat(string(rune('1'+i)), 64), Created: day(i + 1)}
		if rec := do(t, h, "POST", "/v1.50/images/create?fromImage="+ref, ""); rec.Code != 200 {
			t.Fatalf("pull %s: %d", ref, rec.Code)
		}
	}
	q := url.QueryEscape
	tests := []struct {
		name, filters string
		code          int
		want          string // sorted names, or the error message
	}{
		{name: "before", filters: `{"before":{"127.0.0.1:5000/new":true}}`, code: 200, want: "mid,old"},
		{name: "since", filters: `{"since":{"127.0.0.1:5000/old":true}}`, code: 200, want: "mid,new"},
		{name: "before and since", filters: `{"before":{"127.0.0.1:5000/new":true},"since":{"127.0.0.1:5000/old":true}}`, code: 200, want: "mid"},
		{name: "two befores take the oldest", filters: `{"before":{"127.0.0.1:5000/new":true,"127.0.0.1:5000/mid":true}}`, code: 200, want: "old"},
		{name: "until date", filters: `{"until":{"2024-01-02T12:00:00Z":true}}`, code: 200, want: "mid,old"},
		{name: "until unix seconds", filters: `{"until":{"` + strconv.FormatInt(day(2).Unix(), 10) + `":true}}`, code: 200, want: "old"},
		{name: "until duration", filters: `{"until":{"1h":true}}`, code: 200, want: "mid,new,old"},
		{name: "until invalid", filters: `{"until":{"yesterday":true}}`, code: 400, want: `failed to parse value as time or duration: "yesterday"`},
		{name: "before missing image", filters: `{"before":{"nosuch":true}}`, code: 404, want: "No such image: nosuch"},
		{name: "dangling false", filters: `{"dangling":{"false":true}}`, code: 200, want: "mid,new,old"},
		{name: "dangling true", filters: `{"dangling":{"true":true}}`, code: 200, want: ""},
		{name: "dangling invalid", filters: `{"dangling":{"maybe":true}}`, code: 400, want: "invalid filter 'dangling=[maybe]'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, h, "GET", "/v1.50/images/json?filters="+q(tt.filters), "")
			if rec.Code != tt.code {
				t.Fatalf("code %d, want %d: %s", rec.Code, tt.code, rec.Body)
			}
			if tt.code != 200 {
				if got := message(t, rec); !strings.HasPrefix(got, tt.want) {
					t.Fatalf("message %q, want %q", got, tt.want)
				}
				return
			}
			var list []struct{ RepoTags []string }
			if err := json.NewDecoder(rec.Body).Decode(&list); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range list {
				for _, tag := range s.RepoTags {
					if !strings.HasPrefix(tag, "127.0.0.1:5000/") {
						continue // the fake's own images
					}
					names = append(names, strings.TrimSuffix(strings.TrimPrefix(tag, "127.0.0.1:5000/"), ":latest"))
				}
			}
			sort.Strings(names)
			if got := strings.Join(names, ","); got != tt.want {
				t.Fatalf("images %q, want %q", got, tt.want)
			}
		})
	}
}
