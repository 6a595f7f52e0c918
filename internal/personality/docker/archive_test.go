package docker_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/dockertest"
	"github.com/vchproject/vch/internal/portlayer"
)

// missingArchives answers every archive operation as the port layer does
// for container "gone" (NotFound, kind container) and for a missing path
// in any other (NotFound without a kind, the guest's refusal).
type missingArchives struct{}

func (missingArchives) err(idOrName string) error {
	if idOrName == "gone" {
		return portlayer.NoSuchContainer(idOrName)
	}
	return portlayer.Errorf(portlayer.ClassNotFound, "stat /nope: no such file or directory")
}

func (a missingArchives) StatPath(_ context.Context, id, _ string) (portlayer.PathStat, error) {
	return portlayer.PathStat{}, a.err(id)
}
func (a missingArchives) GetArchive(_ context.Context, id, _ string) (portlayer.PathStat, io.ReadCloser, error) {
	return portlayer.PathStat{}, nil, a.err(id)
}
func (a missingArchives) PutArchive(_ context.Context, id, _ string, _ io.Reader, _ portlayer.PutArchiveOptions) error {
	return a.err(id)
}
func (a missingArchives) Export(_ context.Context, id string) (io.ReadCloser, error) {
	return nil, a.err(id)
}
func (a missingArchives) Changes(_ context.Context, id string) ([]portlayer.Change, error) {
	return nil, a.err(id)
}
func (a missingArchives) ChangesLayer(_ context.Context, id string) (portlayer.Container, io.ReadCloser, error) {
	return portlayer.Container{}, nil, a.err(id)
}

// TestArchiveNotFound: the personality tells a missing container from a
// missing path by the port layer's typed error of the operation itself
// (no inspection first): 404 "No such container: gone" against 404
// "Could not find the file /nope in container c1", for cp's three
// routes, export and diff.
func TestArchiveNotFound(t *testing.T) {
	f := dockertest.New()
	h := docker.New(docker.Config{Version: "0.0.0-test"}, docker.Backend{
		Compute: f, Interaction: f, Images: f.Images(), System: f, Archives: missingArchives{},
	}, nil).Handler()
	for _, tt := range []struct{ method, target, want string }{
		{"HEAD", "/v1.50/containers/gone/archive?path=/nope", ""},
		{"GET", "/v1.50/containers/gone/archive?path=/nope", "No such container: gone"},
		{"PUT", "/v1.50/containers/gone/archive?path=/nope", "No such container: gone"},
		{"GET", "/v1.50/containers/gone/export", "No such container: gone"},
		{"GET", "/v1.50/containers/gone/changes", "No such container: gone"},
		{"GET", "/v1.50/containers/c1/archive?path=/nope", "Could not find the file /nope in container c1"},
		{"PUT", "/v1.50/containers/c1/archive?path=/nope", "Could not find the file /nope in container c1"},
	} {
		rec := do(t, h, tt.method, tt.target, "")
		if rec.Code != 404 || !strings.Contains(rec.Body.String(), tt.want) {
			t.Errorf("%s %s: %d %s; want 404 %q", tt.method, tt.target, rec.Code, rec.Body, tt.want)
		}
	}
}
