package ctl

import (
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

// TestSpec: ctl run's flags and the image's config make the spec.
func TestSpec(t *testing.T) {
	img := portlayer.Image{ID: "sha256:" + strings.Repeat("a", 64), Config: ocispec.Image{Config: ocispec.ImageConfig{
		Entrypoint: []string{"/init"}, Cmd: []string{"serve"}, Env: []string{"PATH=/bin"}, WorkingDir: "/w", User: "nobody"}}}
	s, err := spec(img, runOptions{env: []string{"A=1"}, network: "net1", volumes: []string{"data:/data", "ro:/r:ro"}, name: "x"}, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Args, " ") != "/init serve" || strings.Join(s.Env, ",") != "PATH=/bin,A=1" || s.WorkingDir != "/w" || s.User != "nobody" || s.Name != "x" {
		t.Errorf("spec %+v", s)
	}
	if len(s.Networks) != 1 || s.Networks[0].Network != "net1" || len(s.Mounts) != 2 || !s.Mounts[1].ReadOnly || s.Mounts[0].Source != "data" {
		t.Errorf("networks %+v, mounts %+v", s.Networks, s.Mounts)
	}
	if s, _ := spec(img, runOptions{network: "none"}, "app", []string{"sh"}); !s.NoNetwork || strings.Join(s.Args, " ") != "/init sh" {
		t.Errorf("--network none, args sh: %+v", s)
	}
	for _, o := range []runOptions{{volumes: []string{"data"}}, {volumes: []string{"data:rel"}}, {volumes: []string{"d:/x:rx"}}, {env: []string{"=x"}}} {
		if _, err := spec(img, o, "app", nil); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if _, err := spec(portlayer.Image{ID: img.ID}, runOptions{}, "empty", nil); err == nil {
		t.Error("an image without a command and no args: no error")
	}
}
