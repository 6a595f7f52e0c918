package storage

import (
	"context"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vchproject/vch/internal/portlayer"
)

// testRegistry serves go-containerregistry's in-process registry on
// 127.0.0.1 and returns its host:port.
func testRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
}

type progressLog struct {
	mu    sync.Mutex
	lines []portlayer.Progress
}

func (p *progressLog) add(pr portlayer.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, pr)
}

func (p *progressLog) statuses() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.lines {
		if l.Status == "Downloading" || l.Status == "Extracting" {
			continue // counts vary with timing
		}
		out = append(out, l.ID+"|"+l.Status)
	}
	return out
}

func TestPull(t *testing.T) {
	host := testRegistry(t)
	bb := busybox(t)
	push(t, host+"/busybox:latest", bb)
	layers, _ := bb.Layers()
	ld, _ := layers[0].Digest()
	short := ld.Hex[:12]
	mdigest, _ := bb.Digest()
	id, _ := bb.ConfigName()

	s := newStore(t, t.TempDir())
	var p progressLog
	img, err := s.Pull(t.Context(), host+"/busybox", portlayer.RegistryAuth{}, p.add)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != id.String() {
		t.Fatalf("ID = %s, want %s", img.ID, id)
	}
	if strings.Join(img.RepoTags, ",") != host+"/busybox:latest" || strings.Join(img.RepoDigests, ",") != host+"/busybox@"+mdigest.String() {
		t.Fatalf("refs = %v %v", img.RepoTags, img.RepoDigests)
	}
	want := []string{
		"latest|Pulling from busybox",
		short + "|Pulling fs layer",
		short + "|Download complete",
		short + "|Pull complete",
		"|Digest: " + mdigest.String(),
		"|Status: Downloaded newer image for " + host + "/busybox:latest",
	}
	if got := p.statuses(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("progress:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Again: up to date, no layer traffic.
	var p2 progressLog
	if _, err := s.Pull(t.Context(), host+"/busybox:latest", portlayer.RegistryAuth{}, p2.add); err != nil {
		t.Fatal(err)
	}
	want2 := []string{"latest|Pulling from busybox", "|Digest: " + mdigest.String(), "|Status: Image is up to date for " + host + "/busybox:latest"}
	if got := p2.statuses(); strings.Join(got, "\n") != strings.Join(want2, "\n") {
		t.Fatalf("second pull progress:\n%s", strings.Join(got, "\n"))
	}

	// The pulled image's layer makes a working rootfs.
	if _, err := s.Rootfs(t.Context(), img.ID); err != nil {
		t.Fatal(err)
	}
	// By digest.
	if _, err := s.Pull(t.Context(), host+"/busybox@"+mdigest.String(), portlayer.RegistryAuth{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), host+"/busybox@"+mdigest.String()); err != nil {
		t.Fatal(err)
	}
}

func TestPullIndexSelectsAmd64(t *testing.T) {
	host := testRegistry(t)
	bb := busybox(t)
	arm, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: bb, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	r, _ := name.ParseReference(host+"/multi:1", name.Insecure)
	if err := remote.WriteIndex(r, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	armOnly := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	r2, _ := name.ParseReference(host+"/armonly:1", name.Insecure)
	if err := remote.WriteIndex(r2, armOnly, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}

	s := newStore(t, t.TempDir())
	img, err := s.Pull(t.Context(), host+"/multi:1", portlayer.RegistryAuth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := bb.ConfigName()
	idxDigest, _ := idx.Digest()
	if img.ID != want.String() || img.RepoDigests[0] != host+"/multi@"+idxDigest.String() {
		t.Fatalf("pulled %s %v, want %s with index digest %s", img.ID, img.RepoDigests, want, idxDigest)
	}
	_, err = s.Pull(t.Context(), host+"/armonly:1", portlayer.RegistryAuth{}, nil)
	if !errdefs.IsNotFound(err) {
		t.Fatalf("arm-only index: err = %v, want NotFound", err)
	}
}

func TestPullErrors(t *testing.T) {
	host := testRegistry(t)
	push(t, host+"/exists:1", busybox(t))
	// A port with nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	tests := []struct {
		name  string
		ref   string
		check func(error) bool
		// reason and id are the typed error's, when set.
		reason, id string
	}{
		{name: "missing repo", ref: host + "/nosuch", check: errdefs.IsNotFound,
			reason: portlayer.ReasonNoRepository, id: host + "/nosuch:latest"},
		{name: "missing tag", ref: host + "/exists:2", check: errdefs.IsNotFound,
			reason: portlayer.ReasonNoManifest, id: host + "/exists:2"},
		{name: "bad ref", ref: "UPPER/case", check: errdefs.IsInvalidArgument},
		{name: "unreachable", ref: dead + "/busybox", check: errdefs.IsUnavailable},
	}
	s := newStore(t, t.TempDir())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			start := time.Now()
			var progress []string
			_, err := s.Pull(ctx, tt.ref, portlayer.RegistryAuth{}, func(p portlayer.Progress) { progress = append(progress, p.Status) })
			if !tt.check(err) {
				t.Fatalf("err = %v (%T)", err, err)
			}
			// No manifest, no progress: a front end can still answer
			// with an error status, as dockerd does.
			if len(progress) > 0 {
				t.Errorf("progress before the failure: %q", progress)
			}
			if pe := portlayer.AsError(err); tt.reason != "" && (pe == nil || pe.Reason != tt.reason || pe.ID != tt.id) {
				t.Fatalf("typed error %+v, want reason %q for %s", pe, tt.reason, tt.id)
			}
			t.Logf("%s: %v (%v)", tt.name, err, time.Since(start))
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

// TestPullAuth pulls from a registry that wants basic auth: the right
// credentials work, none or wrong ones are PermissionDenied with Docker's
// text, and nothing is stored for a refused pull.
func TestPullAuth(t *testing.T) {
	host := authRegistry(t)
	img := busybox(t)
	r, err := name.ParseReference(host+"/private:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(t.Context()), remote.WithAuth(&authn.Basic{Username: "user", Password: "pw"})); err != nil {
		t.Fatal(err)
	}
	id, _ := img.ConfigName()
	tests := []struct {
		name string
		auth portlayer.RegistryAuth
		ok   bool
	}{
		{name: "anonymous", auth: portlayer.RegistryAuth{}},
		{name: "wrong password", auth: portlayer.RegistryAuth{Username: "user", Password: "nope"}},
		{name: "user and password", auth: portlayer.RegistryAuth{Username: "user", Password: "pw"}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, t.TempDir())
			got, err := s.Pull(t.Context(), host+"/private:1", tt.auth, nil)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if got.ID != id.String() {
					t.Fatalf("pulled %s, want %s", got.ID, id)
				}
				return
			}
			if pe := portlayer.AsError(err); !errdefs.IsPermissionDenied(err) || pe == nil || pe.Reason != portlayer.ReasonDenied || pe.Name != host+"/private" {
				t.Fatalf("err = %v (%T), want PermissionDenied", err, err)
			}
			if strings.Contains(err.Error(), "nope") {
				t.Fatalf("error shows the password: %v", err)
			}
			if imgs, _ := s.List(t.Context()); len(imgs) != 0 {
				t.Fatalf("images after a refused pull: %v", imgs)
			}
		})
	}
}
