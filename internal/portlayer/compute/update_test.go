package compute_test

import (
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

func TestUpdate(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	mem, cpus := 512, 2
	got, err := h.svc.Update(t.Context(), c.ID, portlayer.ContainerUpdate{MemoryMiB: &mem, CPUs: &cpus,
		RestartPolicy: &portlayer.RestartPolicy{Name: portlayer.RestartOnFailure, MaximumRetryCount: 3},
		Annotations:   map[string][]byte{"front": []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.MemoryMiB != 512 || got.Spec.CPUs != 2 || got.Spec.RestartPolicy.MaximumRetryCount != 3 || string(got.Spec.Annotations["front"]) != "x" {
		t.Errorf("updated spec %+v", got.Spec)
	}
	if _, err := h.svc.Update(t.Context(), c.ID, portlayer.ContainerUpdate{RestartPolicy: &portlayer.RestartPolicy{Name: "sometimes"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad policy: %v", err)
	}
	h.start(c.ID)
	mem = 1024
	if _, err := h.svc.Update(t.Context(), c.ID, portlayer.ContainerUpdate{MemoryMiB: &mem}); !errdefs.IsConflict(err) {
		t.Errorf("resize of a running VM: %v", err)
	}
	same := 512
	if _, err := h.svc.Update(t.Context(), c.ID, portlayer.ContainerUpdate{MemoryMiB: &same, RestartPolicy: &portlayer.RestartPolicy{Name: portlayer.RestartAlways}}); err != nil {
		t.Errorf("policy of a running container: %v", err)
	}
	if p := h.inspect(c.ID).Spec.RestartPolicy.Name; p != portlayer.RestartAlways {
		t.Errorf("policy %q", p)
	}
	if _, err := h.svc.Update(t.Context(), "nosuch", portlayer.ContainerUpdate{}); !errdefs.IsNotFound(err) {
		t.Errorf("missing container: %v", err)
	}
}
