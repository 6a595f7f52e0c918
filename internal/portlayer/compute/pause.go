package compute

import (
	"context"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// Pause implements portlayer.Pauser: the hypervisor freezes the whole VM.
// Conflict (ContainerState, op "pause") with ReasonPaused or
// ReasonNotRunning, checked under the container's lock with the pause.
func (s *Service) Pause(ctx context.Context, idOrName string) error {
	c, err := s.lookup(idOrName)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.rec.State.Status {
	case portlayer.StatusPaused:
		return portlayer.ContainerState("pause", c.id, portlayer.ReasonPaused)
	case portlayer.StatusRunning:
	default:
		return portlayer.ContainerState("pause", c.id, portlayer.ReasonNotRunning)
	}
	p, ok := c.vm.(hypervisor.Pauser)
	if !ok {
		return portlayer.Errorf(portlayer.ClassNotImplemented, "this hypervisor cannot pause VMs")
	}
	if err := p.Pause(ctx); err != nil {
		return err
	}
	c.rec.State.Status = portlayer.StatusPaused
	if err := s.recs.put(c.rec); err != nil {
		s.logger.Warn("persist paused state", "container", c.id, "err", err)
	}
	s.event("pause", c.rec, nil)
	return nil
}

// Unpause implements portlayer.Pauser; the guest clock is reset after the
// VM resumes, since it stood still while frozen.
func (s *Service) Unpause(ctx context.Context, idOrName string) error {
	c, err := s.lookup(idOrName)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.rec.State.Status != portlayer.StatusPaused {
		c.mu.Unlock()
		return portlayer.ContainerState("unpause", c.id, portlayer.ReasonNotPaused)
	}
	p, ok := c.vm.(hypervisor.Pauser)
	if !ok {
		c.mu.Unlock()
		return portlayer.Errorf(portlayer.ClassNotImplemented, "this hypervisor cannot pause VMs")
	}
	if err := p.Resume(ctx); err != nil {
		c.mu.Unlock()
		return err
	}
	c.rec.State.Status = portlayer.StatusRunning
	if c.stalledVM != nil {
		// Stopped on a full disk: the VMM stops it again if there is
		// still no room, and the disk watch marks it again.
		c.stalledVM = nil
		c.rec.State.Error = ""
	}
	if err := s.recs.put(c.rec); err != nil {
		s.logger.Warn("persist running state", "container", c.id, "err", err)
	}
	g, rec := c.guest, c.rec
	c.mu.Unlock()
	s.event("unpause", rec, nil)
	if g != nil {
		if err := g.SetClock(ctx); err != nil {
			s.logger.Warn("guest clock not reset after unpause", "container", c.id, "err", err)
		}
	}
	return nil
}
