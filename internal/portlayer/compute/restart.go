package compute

import (
	"context"
	"strconv"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// Restart policy timing: the first restart waits firstRestartDelay,
// each next one twice as long up to maxRestartDelay, so a container that
// keeps failing does not hold the host busy, and a run that lasted
// resetRestartAfter starts the series over (the timing of moby's
// restartmanager, which users of restart policies know).
const (
	firstRestartDelay = 100 * time.Millisecond
	maxRestartDelay   = time.Minute
	resetRestartAfter = 10 * time.Second
)

// checkRestartPolicy is InvalidArgument, with the field and reason, for
// a policy RestartPolicy does not define: an unknown name, a retry count
// without on-failure or below zero, or any policy with AutoRemove.
func checkRestartPolicy(spec portlayer.ContainerSpec) error {
	p := spec.RestartPolicy
	switch p.Name {
	case "", portlayer.RestartNo, portlayer.RestartAlways, portlayer.RestartUnlessStopped:
		if p.MaximumRetryCount != 0 && p.Name != "" {
			return portlayer.Invalid(portlayer.KindContainer, "RestartPolicy.MaximumRetryCount", strconv.Itoa(p.MaximumRetryCount), portlayer.ReasonOnlyOnFailure,
				"compute: a restart policy's retry count needs the on-failure policy")
		}
	case portlayer.RestartOnFailure:
		if p.MaximumRetryCount < 0 {
			return portlayer.Invalid(portlayer.KindContainer, "RestartPolicy.MaximumRetryCount", strconv.Itoa(p.MaximumRetryCount), portlayer.ReasonNegative, "compute: a restart policy's retry count cannot be negative")
		}
	default:
		return portlayer.Invalid(portlayer.KindContainer, "RestartPolicy.Name", p.Name, portlayer.ReasonUnknown, "compute: unknown restart policy "+strconv.Quote(p.Name)+": want no, always, on-failure or unless-stopped")
	}
	if spec.AutoRemove && p.Name != "" && p.Name != portlayer.RestartNo {
		return portlayer.Invalid(portlayer.KindContainer, "AutoRemove", "true", portlayer.ReasonExclusive, "compute: a container removed when it exits cannot have a restart policy")
	}
	return nil
}

// shouldRestartLocked decides, at an exit with exitCode after a run of
// ran, whether the restart policy restarts the container and after how
// long, by the rules of RestartPolicy. Caller holds c.mu.
func (c *container) shouldRestartLocked(exitCode int, ran time.Duration) (bool, time.Duration) {
	p := c.rec.Spec.RestartPolicy
	if p.Name == "" || p.Name == portlayer.RestartNo || c.exitOnNext {
		return false, 0
	}
	if ran >= resetRestartAfter {
		c.restartDelay = 0
	}
	switch {
	case c.restartDelay == 0:
		c.restartDelay = firstRestartDelay
	case c.restartDelay < maxRestartDelay:
		c.restartDelay *= 2
	}
	c.restartDelay = min(c.restartDelay, maxRestartDelay)
	restart := false
	switch p.Name {
	case portlayer.RestartAlways:
		restart = true
	case portlayer.RestartUnlessStopped:
		restart = !c.rec.ManuallyStopped
	case portlayer.RestartOnFailure:
		restart = exitCode != 0 && (p.MaximumRetryCount == 0 || c.rec.RestartCount < p.MaximumRetryCount)
	}
	return restart, c.restartDelay
}

// exitOnNextFor reports whether signal, sent by a user, cancels the
// restart policy until the next start by hand: SIGKILL and the
// container's stop signal do, and any signal when the container sets no
// stop signal: those are meant to end it.
func exitOnNextFor(spec portlayer.ContainerSpec, signal int) bool {
	return spec.StopSignal == 0 || signal == 9 || signal == spec.StopSignal
}

// startsAtBoot reports whether the VCH starts a container whose VM does
// not run when the VCH itself starts, for containers started before:
// always does, even after a stop by hand; unless-stopped unless stopped
// by hand; on-failure after a non-zero exit (RestartPolicy's rules for a
// VCH restart).
func startsAtBoot(rec portlayer.Container) bool {
	if rec.State.StartedAt.IsZero() {
		return false
	}
	switch rec.Spec.RestartPolicy.Name {
	case portlayer.RestartAlways:
		return true
	case portlayer.RestartUnlessStopped:
		return !rec.ManuallyStopped
	case portlayer.RestartOnFailure:
		return rec.State.ExitCode != 0
	}
	return false
}

// restartTimeout bounds one restart's boot.
func (s *Service) restartTimeout() time.Duration { return 2 * s.cfg.BootTimeout }

// scheduleRestart starts c again by its policy after delay, unless cancel
// is closed first (a stop or kill by hand, a removal) or the daemon
// stops (the record then says restarting, and the next daemon starts it).
func (s *Service) scheduleRestart(c *container, delay time.Duration, cancel chan struct{}) {
	if !s.track() {
		return
	}
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-cancel:
			return
		case <-s.done:
			return
		}
		c.mu.Lock()
		if c.restartCancel != cancel || c.phase == phaseRemoved {
			c.mu.Unlock()
			return
		}
		c.restartCancel = nil
		c.mu.Unlock()
		ctx, stop := context.WithTimeout(context.Background(), s.restartTimeout())
		defer stop()
		if err := s.start(ctx, c, c.id, startByPolicy); err != nil && !errdefs.IsNotModified(err) {
			s.logger.Warn("restart by policy failed", "container", c.id, "err", err)
		}
	}()
}

// cancelRestartLocked cancels c's pending restart, if one waits: the
// container is then exited (with the exit code of its last run). It
// returns the waiters to notify and whether it cancelled. Caller holds
// c.mu and persists the record.
func (c *container) cancelRestartLocked() ([]chan portlayer.WaitResult, bool) {
	if c.restartCancel == nil {
		return nil, false
	}
	close(c.restartCancel)
	c.restartCancel = nil
	c.rec.State.Status = portlayer.StatusExited
	ws := c.exitWaiters
	c.exitWaiters = nil
	return ws, true
}

// track counts a goroutine the Service owns (Close waits for it); false
// once the Service is closing.
func (s *Service) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// stopping reports whether Close has begun.
func (s *Service) stopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// startAtBoot starts the containers whose restart policy says so when
// the VCH starts, in the background.
func (s *Service) startAtBoot(cs []*container) {
	for _, c := range cs {
		if !s.track() {
			return
		}
		go func() {
			defer s.wg.Done()
			ctx, stop := context.WithTimeout(context.Background(), s.restartTimeout())
			defer stop()
			s.logger.Info("starting container by its restart policy", "container", c.id, "policy", c.record().Spec.RestartPolicy.Name)
			// NotModified: started by hand meanwhile.
			if err := s.start(ctx, c, c.id, startByHand); err != nil && !errdefs.IsNotModified(err) {
				s.logger.Warn("start by restart policy failed", "container", c.id, "err", err)
			}
		}()
	}
}
