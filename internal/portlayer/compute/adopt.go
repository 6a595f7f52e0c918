package compute

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// Taking container VMs back after a daemon restart, so that restarting
// or upgrading the daemon does not stop containers. A container VM
// outlives the daemon: QEMU runs in its own
// session, its guest channel's chardev reconnects, tether keeps the
// processes and their unacknowledged output (wire protocol v2), and the
// VCH's network namespace keeps the VM's taps on their bridges. So the
// next daemon adopts the VM, lists the guest's processes, resumes the main
// process's output at the end of its own log, and supervises the run as
// if it had started it.

// orphanTimeout bounds the search for a VM that outlived its container's
// run (a crash between recording an exit and powering the VM off).
const orphanTimeout = 5 * time.Second

// restore settles every container after a daemon start: running and
// paused ones are adopted (or recorded exited when their VM is gone), a
// pending restart becomes an exit, and a VM left behind by a container
// that is not running is killed. It returns the containers to start by
// their restart policy.
func (s *Service) restore() []*container {
	s.mu.Lock()
	all := s.allLocked()
	s.mu.Unlock()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		toStart []*container
	)
	startLater := func(c *container) {
		if startsAtBoot(c.record()) {
			mu.Lock()
			toStart = append(toStart, c)
			mu.Unlock()
		}
	}
	for _, c := range all {
		rec := c.record()
		switch rec.State.Status {
		case portlayer.StatusRunning, portlayer.StatusPaused:
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.readopt(c); err != nil {
					s.vmLost(c, err)
					startLater(c)
				}
			}()
		case portlayer.StatusRestarting:
			// The daemon stopped while a restart was pending.
			c.mu.Lock()
			c.rec.State.Status = portlayer.StatusExited
			rec := c.rec
			c.mu.Unlock()
			if err := s.recs.put(rec); err != nil {
				s.logger.Warn("persist exit", "container", c.id, "err", err)
			}
			fallthrough
		default:
			// Its last VM may still run (the daemon stopped between the
			// exit and the power-off): end it before anything starts.
			if _, err := os.Stat(s.vmSpec(c).RuntimeDir); err == nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.killOrphan(c)
				}()
			}
			startLater(c)
		}
	}
	wg.Wait()
	return toStart
}

// adopter is the driver's Adopter, nil when it has none.
func (s *Service) adopter() hypervisor.Adopter {
	if a, ok := s.driver.(hypervisor.Adopter); ok && s.driver.Capabilities().Adopt {
		return a
	}
	return nil
}

// vmSpec locates container c's VM for the driver: the warm VM its run
// took, as the run state records, or the one started for it.
func (s *Service) vmSpec(c *container) hypervisor.Spec {
	if run, err := s.recs.run(c.id); err == nil && run.VMName != "" {
		return hypervisor.Spec{Name: run.VMName, RuntimeDir: run.VMDir}
	}
	return hypervisor.Spec{Name: c.id[:12], RuntimeDir: c.runDir}
}

// killOrphan ends a VM still running for a container that is not: no VM
// outlives its container's run. The guest is asked to power off first (it
// syncs its disks), and killed if it does not.
func (s *Service) killOrphan(c *container) {
	a := s.adopter()
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), orphanTimeout)
	defer cancel()
	spec := s.vmSpec(c)
	if spec.RuntimeDir != c.runDir {
		// A warm VM's directory goes with it.
		defer os.RemoveAll(spec.RuntimeDir)
	}
	vm, err := a.Adopt(ctx, spec)
	if err != nil {
		return
	}
	s.logger.Warn("ending a VM left running by a container that is not", "container", c.id, "vm_pid", vm.Pid())
	if g, err := agent.Dial(ctx, vm.Channel()); err == nil {
		if g.PowerOff(ctx) == nil {
			select {
			case <-vm.Done():
			case <-time.After(powerOffTimeout):
			}
		}
		g.Close()
	}
	_ = vm.Kill()
	<-vm.Done()
}

// readopt takes back the VM of a container recorded as running or paused
// and supervises its run. On error no VM of it runs any more.
func (s *Service) readopt(c *container) error {
	a := s.adopter()
	if a == nil {
		return portlayer.Errorf(portlayer.ClassNotImplemented, "the hypervisor driver cannot adopt VMs")
	}
	rec := c.record()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BootTimeout)
	defer cancel()
	vm, err := a.Adopt(ctx, s.vmSpec(c))
	if err != nil {
		return err
	}
	var g *agent.Client
	fail := func(err error) error {
		if g != nil {
			g.Close()
		}
		_ = vm.Kill()
		<-vm.Done()
		s.net.unplumb(c.id)
		return err
	}
	// Adopt returns the VM running (a frozen guest cannot take its
	// channel back); one recorded paused is frozen again below.
	paused := rec.State.Status == portlayer.StatusPaused
	pauser, _ := vm.(hypervisor.Pauser)
	if paused && pauser == nil {
		return fail(portlayer.Errorf(portlayer.ClassNotImplemented, "the VM was paused and the driver cannot pause it"))
	}
	g, err = agent.DialWith(ctx, vm.Channel(), s.net.guestHandlers(rec))
	if err != nil {
		return fail(err)
	}
	list, err := g.Processes(ctx)
	if err != nil {
		return fail(err)
	}
	var execs []string
	var main wire.ProcessStatus
	found := false
	for _, p := range list.Processes {
		switch {
		case p.ID == wire.MainProcessID:
			found, main = true, p
		case p.Exec:
			execs = append(execs, p.ID)
		}
	}
	if !found {
		return fail(portlayer.Errorf(portlayer.ClassNotFound, "the guest has no main process"))
	}
	run, err := s.recs.run(c.id)
	if err != nil {
		return fail(err)
	}
	slots := slotsFrom(run.NICs)
	ports, err := s.net.restore(ctx, c, rec, slots)
	if err != nil {
		return fail(err)
	}
	token, err := s.claimVolumes(ctx, c, rec)
	if err != nil {
		return fail(err)
	}
	stdout, stderr := c.out.recoverOffsets(run.RunID)
	if rec.Spec.NoLog {
		// No log says how far the output went: resume at its end as the
		// guest counts it (what it still holds would reach no one), so
		// the acknowledgements count as the guest does.
		stdout, stderr = main.Stdout, main.Stderr
	}
	c.out.beginRun(run.RunID, stdout, stderr)
	proc, err := g.Attach(ctx, wire.Attach{ID: wire.MainProcessID, Stdout: stdout, Stderr: stderr}, true)
	if err != nil {
		s.releaseVolumes(c.id, token)
		return fail(err)
	}
	if paused {
		if err := pauser.Pause(ctx); err != nil {
			s.releaseVolumes(c.id, token)
			return fail(err)
		}
	}
	c.mu.Lock()
	c.vm, c.guest, c.proc, c.killed = vm, g, proc, false
	c.slots = slots
	c.vmDir = run.VMDir
	c.rec.State.Pid = vm.Pid()
	if h := hostOf(vm); h != "" {
		c.rec.State.Host = h
	}
	c.rec.Ports = ports
	c.exited = make(chan struct{})
	c.vmGone = make(chan struct{})
	rec = c.rec
	c.mu.Unlock()
	if err := s.recs.put(rec); err != nil {
		s.logger.Warn("persist adopted state", "container", c.id, "err", err)
	}
	for _, id := range execs {
		if s.track() {
			go s.drainExec(c, g, id)
		}
	}
	s.logger.Info("container VM adopted", "container", c.id, "vm_pid", vm.Pid(), "status", rec.State.Status,
		"resume_stdout", stdout, "resume_stderr", stderr, "execs", len(execs))
	if !s.track() {
		g.Close()
		return nil
	}
	go s.supervise(c, vm, g, proc, token)
	return nil
}

// drainExec attaches to an exec that an earlier daemon started: nobody
// reads its output any more (exec records are kept in memory only, so
// the new daemon knows no client of it), so
// it is drained, lest the exec block on a full spool, until it exits.
func (s *Service) drainExec(c *container, g *agent.Client, id string) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), monitorTimeout)
	p, err := g.Attach(ctx, wire.Attach{ID: id}, false)
	cancel()
	if err != nil {
		s.logger.Warn("exec not re-attached", "container", c.id, "exec", id, "err", err)
		return
	}
	go func() { _, _ = io.Copy(io.Discard, p.Stdout()) }()
	go func() { _, _ = io.Copy(io.Discard, p.Stderr()) }()
	code, err := p.Wait(context.Background())
	if err == nil {
		s.logger.Info("exec exited", "container", c.id, "exec", id, "exit_code", code)
	}
}

// vmLost records a container whose VM is gone (or could not be taken
// back) as exited with 255, with a die event.
func (s *Service) vmLost(c *container, cause error) {
	reason := "container VM ended while the VCH was down"
	if !errdefs.IsNotFound(cause) || errors.Is(cause, errdefs.ErrNotImplemented) {
		reason = "container VM could not be taken back after a VCH restart: " + cause.Error()
	}
	c.mu.Lock()
	st := c.rec.State
	st.Status, st.Pid, st.ExitCode, st.Error, st.FinishedAt = portlayer.StatusExited, 0, 255, reason, time.Now().UTC()
	c.rec.State = st
	c.rec.Endpoints, c.rec.Ports = nil, nil
	rec := c.rec
	c.mu.Unlock()
	if err := s.recs.put(rec); err != nil {
		s.logger.Warn("persist exit", "container", c.id, "err", err)
	}
	s.logger.Info("container exited while the VCH was down", "container", c.id, "exit_code", 255, "err", cause)
	s.event("die", rec, map[string]string{"exitCode": strconv.Itoa(255)})
}
