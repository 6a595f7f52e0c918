package storage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vchproject/vch/internal/portlayer"
)

// twoImages pulls two images that share their base layer and returns them.
func twoImages(t *testing.T, s *Store) (base, child portlayer.Image) {
	t.Helper()
	reg := testRegistry(t)
	l1 := smallTar(t, map[string]string{"etc/base": "base"})
	l2 := smallTar(t, map[string]string{"etc/child": "child"})
	push(t, reg+"/base:1", imageOf(t, l1))
	push(t, reg+"/child:1", imageOf(t, l1, l2))
	var err error
	if base, err = s.Pull(t.Context(), reg+"/base:1", nil); err != nil {
		t.Fatal(err)
	}
	if child, err = s.Pull(t.Context(), reg+"/child:1", nil); err != nil {
		t.Fatal(err)
	}
	return base, child
}

func tarMembers(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[h.Name]; dup {
			t.Errorf("member %s written twice", h.Name)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}

func TestSaveRoundTrip(t *testing.T) {
	s := newStore(t, t.TempDir())
	base, child := twoImages(t, s)
	if base.LayerSizes[0] != child.LayerSizes[0] || base.LayerSizes[0] <= 0 || len(child.LayerSizes) != 2 {
		t.Fatalf("layer sizes: base %v child %v", base.LayerSizes, child.LayerSizes)
	}
	var buf bytes.Buffer
	if err := s.Save(t.Context(), []string{base.RepoTags[0], child.RepoTags[0], child.ID}, &buf); err != nil {
		t.Fatal(err)
	}
	members := tarMembers(t, buf.Bytes())
	var manifest []dockerManifestEntry
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 2 || !slices.Equal(manifest[0].RepoTags, base.RepoTags) || !slices.Equal(manifest[1].RepoTags, child.RepoTags) {
		t.Fatalf("manifest.json = %+v", manifest)
	}
	// The shared layer is one member, named by its diff ID, uncompressed.
	if manifest[0].Layers[0] != manifest[1].Layers[0] || manifest[0].Layers[0] != "blobs/sha256/"+strings.TrimPrefix(base.Layers[0], "sha256:") {
		t.Fatalf("layers: %v / %v", manifest[0].Layers, manifest[1].Layers)
	}
	if got := int64(len(members[manifest[1].Layers[1]])); got != child.LayerSizes[1] {
		t.Fatalf("layer member is %d bytes, want %d", got, child.LayerSizes[1])
	}
	for _, m := range []string{"index.json", "oci-layout", "repositories"} {
		if _, ok := members[m]; !ok {
			t.Errorf("no %s", m)
		}
	}

	// Another reader of docker-archives (go-containerregistry's) agrees.
	tag, _ := name.NewTag(child.RepoTags[0])
	img, err := tarball.Image(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil }, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := img.ConfigName(); err != nil || id.String() != child.ID {
		t.Fatalf("tarball reader: %v %v", id, err)
	}

	// Our own Load restores the same images and tags into another store.
	s2 := newStore(t, t.TempDir())
	loaded, err := s2.Load(t.Context(), bytes.NewReader(buf.Bytes()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 2 || loaded[0].ID != base.ID || loaded[1].ID != child.ID || !slices.Equal(loaded[1].Layers, child.Layers) {
		t.Fatalf("loaded %+v", loaded)
	}
	if _, err := s2.Get(t.Context(), child.RepoTags[0]); err != nil {
		t.Fatal(err)
	}
}

func TestSaveRepositoryAndErrors(t *testing.T) {
	s := newStore(t, t.TempDir())
	base, _ := twoImages(t, s)
	repo := strings.TrimSuffix(base.RepoTags[0], ":1")
	if err := s.Tag(t.Context(), base.ID, repo+":2"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Save(t.Context(), []string{repo}, &buf); err != nil {
		t.Fatal(err)
	}
	var manifest []dockerManifestEntry
	if err := json.Unmarshal(tarMembers(t, buf.Bytes())["manifest.json"], &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || len(manifest[0].RepoTags) != 2 {
		t.Fatalf("saving a repository: %+v", manifest)
	}
	buf.Reset()
	err := s.Save(t.Context(), []string{base.RepoTags[0], "nosuch:1"}, &buf)
	if !errdefs.IsNotFound(err) || buf.Len() != 0 {
		t.Fatalf("missing image: %v, %d bytes written", err, buf.Len())
	}
}

// authRegistry is an in-process registry that wants basic auth user:pw.
func authRegistry(t *testing.T) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestPush(t *testing.T) {
	s := newStore(t, t.TempDir())
	_, child := twoImages(t, s)
	dst := testRegistry(t)
	if err := s.Tag(t.Context(), child.ID, dst+"/pushed:v1"); err != nil {
		t.Fatal(err)
	}
	var pl progressLog
	res, err := s.Push(t.Context(), dst+"/pushed:v1", portlayer.RegistryAuth{}, pl.add)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Tag != "v1" || child.RepoDigests[0][strings.Index(child.RepoDigests[0], "@")+1:] != res[0].Digest {
		t.Fatalf("push result %+v, pulled as %v", res, child.RepoDigests)
	}
	st := strings.Join(pl.statuses(), "|")
	if !strings.HasPrefix(st, "|The push refers to repository ["+dst+"/pushed]|"+shortID(child.Layers[1])+"|Preparing|"+shortID(child.Layers[0])+"|Preparing|") || !strings.Contains(st, "Pushed") || !strings.HasSuffix(st, "v1: digest: "+res[0].Digest+" size: "+itoa(res[0].Size)) {
		t.Fatalf("progress: %s", st)
	}
	// The registry holds the same diff IDs as `docker image inspect` shows.
	ref, _ := name.ParseReference(dst+"/pushed:v1", name.Insecure)
	remoteImg, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := remoteImg.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var diffIDs []string
	for _, d := range cf.RootFS.DiffIDs {
		diffIDs = append(diffIDs, d.String())
	}
	if !slices.Equal(diffIDs, child.Layers) {
		t.Fatalf("registry diff IDs %v, image %v", diffIDs, child.Layers)
	}

	// Again: every layer is already there.
	pl = progressLog{}
	if _, err := s.Push(t.Context(), dst+"/pushed", portlayer.RegistryAuth{}, pl.add); err != nil {
		t.Fatal(err)
	}
	if st := strings.Join(pl.statuses(), "|"); strings.Count(st, "Layer already exists") != 2 || strings.Contains(st, "Pushed") {
		t.Fatalf("second push: %s", st)
	}

	if _, err := s.Push(t.Context(), dst+"/nosuch:v1", portlayer.RegistryAuth{}, nil); !errdefs.IsNotFound(err) {
		t.Fatalf("unknown tag: %v", err)
	}
}

func TestPushAuth(t *testing.T) {
	s := newStore(t, t.TempDir())
	_, child := twoImages(t, s)
	dst := authRegistry(t)
	if err := s.Tag(t.Context(), child.ID, dst+"/private:1"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Push(t.Context(), dst+"/private:1", portlayer.RegistryAuth{}, nil)
	if !errdefs.IsPermissionDenied(err) {
		t.Fatalf("anonymous push: %v", err)
	}
	_, err = s.Push(t.Context(), dst+"/private:1", portlayer.RegistryAuth{Username: "user", Password: "wrong"}, nil)
	if !errdefs.IsPermissionDenied(err) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := s.Push(t.Context(), dst+"/private:1", portlayer.RegistryAuth{Username: "user", Password: "pw"}, nil); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
