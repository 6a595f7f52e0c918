package compute

import (
	"context"
	"fmt"
	"maps"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

var _ portlayer.Updater = (*Service)(nil)

// Update implements portlayer.Updater. The restart policy changes in any
// state and counts from the next exit; the VM's memory and vCPUs change
// only while no VM runs (created or exited): a running VM keeps the size
// it booted with, so a different size then is Conflict naming it.
func (s *Service) Update(ctx context.Context, idOrName string, u portlayer.ContainerUpdate) (portlayer.Container, error) {
	c, err := s.lookup(idOrName)
	if err != nil {
		return portlayer.Container{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	rec.Spec.Annotations = maps.Clone(rec.Spec.Annotations)
	running := c.vm != nil || c.starting || rec.State.Status == portlayer.StatusRunning || rec.State.Status == portlayer.StatusPaused
	mem, cpus := rec.Spec.MemoryMiB, rec.Spec.CPUs
	if u.MemoryMiB != nil {
		mem = *u.MemoryMiB
	}
	if u.CPUs != nil {
		cpus = *u.CPUs
	}
	if running && (mem != rec.Spec.MemoryMiB || cpus != rec.Spec.CPUs) {
		booted := s.cfg.DefaultMemoryMiB
		if rec.Spec.MemoryMiB > 0 {
			booted = rec.Spec.MemoryMiB
		}
		vcpus := max(rec.Spec.CPUs, 1)
		return portlayer.Container{}, fmt.Errorf("compute: Cannot update container %s: its VM runs with %d MiB and %d vCPU, which a running VM cannot change: stop the container, update it, then start it: %w", c.id[:12], booted, vcpus, errdefs.ErrConflict)
	}
	rec.Spec.MemoryMiB, rec.Spec.CPUs = mem, cpus
	if u.RestartPolicy != nil {
		rec.Spec.RestartPolicy = *u.RestartPolicy
		if err := checkRestartPolicy(rec.Spec); err != nil {
			return portlayer.Container{}, err
		}
	}
	for k, v := range u.Annotations {
		if rec.Spec.Annotations == nil {
			rec.Spec.Annotations = map[string][]byte{}
		}
		rec.Spec.Annotations[k] = v
	}
	if err := s.recs.put(rec); err != nil {
		return portlayer.Container{}, err
	}
	c.rec = rec
	s.event("update", rec, nil)
	return rec, nil
}
