package compute

import (
	"context"
	"fmt"
	"maps"

	"github.com/vchproject/vch/internal/portlayer"
)

var (
	_ portlayer.Updater = (*Service)(nil)
	_ portlayer.Updater = (*updater)(nil)
)

// Update implements portlayer.Updater. The restart policy changes in any
// state and counts from the next exit. Resource limits change at once in
// a running VM when it can hold them (its guest's cgroup is updated
// under the container's lock), else Conflict naming its size; an
// explicit VM size (MemoryMiB, CPUs) changes only while no VM runs
// (created or exited).
func (s *Service) Update(ctx context.Context, idOrName string, u portlayer.ContainerUpdate) (portlayer.Container, error) {
	return s.upd.Update(ctx, idOrName, u)
}

// updater is compute's update area: the changes a container takes after
// its creation (its restart policy, resource limits, VM size and front
// end annotations), checked against its state and applied to its record
// and, for limits, to its running guest, all under the container's
// lock. It owns the rules of what may change in which state; the record
// store, the VCH's default VM size and the event sink are what it uses.
type updater struct {
	lookup lookupFunc
	recs   *records
	event  eventFunc
	// defaultMemoryMiB and defaultCPUs size the VM of a container that
	// sets no size (Config.DefaultMemoryMiB, DefaultCPUs).
	defaultMemoryMiB, defaultCPUs int
}

// Update is Service.Update.
func (up *updater) Update(ctx context.Context, idOrName string, u portlayer.ContainerUpdate) (portlayer.Container, error) {
	c, err := up.lookup(idOrName)
	if err != nil {
		return portlayer.Container{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	rec.Spec.Annotations = maps.Clone(rec.Spec.Annotations)
	running := c.vm != nil || c.phase == phaseStarting || rec.State.Status == portlayer.StatusRunning || rec.State.Status == portlayer.StatusPaused
	if u.RestartPolicy != nil {
		rec.Spec.RestartPolicy = *u.RestartPolicy
		if err := checkRestartPolicy(rec.Spec); err != nil {
			return portlayer.Container{}, err
		}
	}
	if u.MemoryMiB != nil {
		rec.Spec.MemoryMiB = *u.MemoryMiB
	}
	if u.CPUs != nil {
		rec.Spec.CPUs = *u.CPUs
	}
	if u.Limits != nil {
		rec.Spec.Limits = *u.Limits
	}
	if err := checkVMSize(rec.Spec, up.defaultMemoryMiB, up.defaultCPUs); err != nil {
		return portlayer.Container{}, err
	}
	sized := rec.Spec.MemoryMiB != c.rec.Spec.MemoryMiB || rec.Spec.CPUs != c.rec.Spec.CPUs
	if running && (sized || rec.Spec.Limits != c.rec.Spec.Limits) {
		bootMiB, bootCPUs := c.rec.Spec.VMMemoryMiB(up.defaultMemoryMiB), c.rec.Spec.VMCPUs(up.defaultCPUs)
		mem, cpus := rec.Spec.VMMemoryMiB(up.defaultMemoryMiB), rec.Spec.VMCPUs(up.defaultCPUs)
		if mem > bootMiB || cpus > bootCPUs || sized {
			e := portlayer.ContainerState("update", c.id[:12], portlayer.ReasonVMSize).(*portlayer.Error)
			e.Value = fmt.Sprintf("%d MiB and %d vCPU", bootMiB, bootCPUs)
			e.Message = fmt.Sprintf("compute: update %s: its VM runs with %s, which a running VM cannot change: stop the container, update it, then start it", c.id[:12], e.Value)
			return portlayer.Container{}, e
		}
		if c.guest == nil {
			return portlayer.Container{}, portlayer.ContainerState("update", c.id[:12], portlayer.ReasonStarting)
		}
		if rec.Spec.Limits != c.rec.Spec.Limits {
			// The limits change in the running guest; its VM keeps its
			// boot size until the next start.
			if err := applyLimits(ctx, c.guest, rec.Spec.Limits, bootCPUs); err != nil {
				return portlayer.Container{}, err
			}
		}
	}
	for k, v := range u.Annotations {
		if rec.Spec.Annotations == nil {
			rec.Spec.Annotations = map[string][]byte{}
		}
		rec.Spec.Annotations[k] = v
	}
	if err := up.recs.put(rec); err != nil {
		return portlayer.Container{}, err
	}
	c.rec = rec
	up.event("update", rec, nil)
	return rec, nil
}
