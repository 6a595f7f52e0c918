package compute

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/warmpool"
)

// defaultHosts is the /etc/hosts of a container without a network
// address: localhost on both loopback addresses, and the IPv6 names
// (ip6-localnet, ip6-allnodes, …) of the usual Linux default hosts file,
// which some programs look up.
const defaultHosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"

// container is the in-memory side of one container: its record plus the
// VM, guest connection and process of the current run.
type container struct {
	id     string
	runDir string
	out    *output

	mu  sync.Mutex
	rec portlayer.Container
	// phase is the operation that owns the container, if any, beside
	// the state its record shows (rec.State.Status).
	phase phase
	// startDone is closed when the start in progress (phaseStarting) ends.
	startDone chan struct{}
	// vmGone is closed when the last run's VM has ended and released its
	// disk; nil before the first start.
	vmGone chan struct{}
	killed bool // the current run's VM was killed on purpose
	vm     hypervisor.VM
	// stalledVM is vm while it is stopped on a full disk and shown
	// paused (diskfull.go); nil otherwise.
	stalledVM hypervisor.VM
	guest     *agent.Client
	proc      *agent.Process
	slots     []nicSlot     // the current run's NICs
	vmDir     string        // the current run's warm VM's runtime directory, "" for its own (runDir)
	exited    chan struct{} // closed when the current run has been recorded as ended
	stdins    []*attachment // attached stdin streams waiting for a process

	exitWaiters   []chan portlayer.WaitResult
	removeWaiters []chan portlayer.WaitResult

	// The restart policy's state: the next restart's delay, whether a stop
	// or kill by hand cancelled restarts until the next start by hand, and
	// the pending restart (closed to cancel it; nil when none waits).
	restartDelay  time.Duration
	exitOnNext    bool
	restartCancel chan struct{}
	// restarts counts Restart calls in progress: an exit during one
	// neither removes an auto-remove container nor discards its disk.
	restarts int

	// transferMu is held while the VM's transfer disk holds an archive
	// (transfer.go).
	transferMu sync.Mutex
}

func (s *Service) newContainer(rec portlayer.Container) *container {
	return &container{
		id:     rec.ID,
		runDir: filepath.Join(s.cfg.Root, "run", rec.ID[:12]),
		out:    newOutput(rec.LogPath, rec.Spec.LogMaxSizeBytes, rec.Spec.LogMaxFiles),
		rec:    rec,
	}
}

func (c *container) record() portlayer.Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec
}

// inspected is c's record as Inspect shows it: the record, with the host
// its running VM is on now (vSphere may have moved it since the start).
func (c *container) inspected() portlayer.Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	if c.vm != nil && (rec.State.Status == portlayer.StatusRunning || rec.State.Status == portlayer.StatusPaused) {
		if h := hostOf(c.vm); h != "" {
			rec.State.Host = h
		}
	}
	return rec
}

// hostOf is the host vm runs on if its driver places VMs over several
// hosts (hypervisor.Placer), else "".
func hostOf(vm hypervisor.VM) string {
	if p, ok := vm.(hypervisor.Placer); ok {
		return p.Host()
	}
	return ""
}

func (c *container) name() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec.Spec.Name
}

func (c *container) notifyRemoved(code int) {
	c.mu.Lock()
	ws := c.removeWaiters
	c.removeWaiters = nil
	c.mu.Unlock()
	for _, w := range ws {
		w <- portlayer.WaitResult{ExitCode: code}
	}
}

// waitExited blocks until the current run (if any) has been recorded as ended.
func (c *container) waitExited(ctx context.Context) error {
	c.mu.Lock()
	ch := c.exited
	c.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// phase is where one container VM's lifecycle stands as far as the
// operations on it are concerned. The record's State.Status says what
// users see (created, running, paused, restarting, exited); the phase
// says which operation, if any, owns the container now, so that each
// operation checks the state and acts under the container's lock in one
// step:
//
//	phaseCreating --Create done--> phaseIdle <--boot ends-- phaseStarting
//	                                   |  \--start, restart, maintenance boot--^
//	                                   \--Remove--> phaseRemoved (final)
//
// A container being created or removed is invisible (NotFound); a start
// in progress makes other starts, copies and removals wait for it
// (startDone). Remove may take a container in phaseStarting to
// phaseRemoved (a forced removal during a boot): the boot then finds it
// removed and ends its VM.
type phase int

const (
	// phaseIdle: no create, start or removal is in progress.
	phaseIdle phase = iota
	// phaseCreating: Create has reserved the ID and name and is making
	// the disks and the record.
	phaseCreating
	// phaseStarting: a start, a restart policy's start or a maintenance
	// boot (archives of a stopped container) owns the VM slot.
	phaseStarting
	// phaseRemoved: the container is gone; nothing may act on it again.
	phaseRemoved
)

// hidden reports whether operations must not see c: being created, or
// removed. c.mu is held.
func (c *container) hidden() bool {
	return c.phase == phaseCreating || c.phase == phaseRemoved
}

// endPhase returns c to phaseIdle if it is still in p (a removal may have
// moved it on meanwhile). c.mu is held.
func (c *container) endPhase(p phase) {
	if c.phase == p {
		c.phase = phaseIdle
	}
}

// startKind says who starts a container.
type startKind int

const (
	// startByHand is a caller's start (Start, Restart) or the VCH's own
	// start at boot: the restart policy starts over (its retry count and
	// delay reset), since the container is started afresh.
	startByHand startKind = iota
	// startByPolicy is a restart by the container's restart policy.
	startByPolicy
)

// Start implements portlayer.Compute. A running container, or one
// waiting for its restart policy's restart, is left as it is: NotModified
// (Unchanged, ReasonRunning), decided under the container's lock with the
// start itself. A start by hand sets RestartCount back to 0 and clears
// ManuallyStopped.
func (s *Service) Start(ctx context.Context, idOrName string) error {
	c, err := s.lookup(idOrName)
	if err != nil {
		return err
	}
	return s.start(ctx, c, idOrName, startByHand)
}

func (s *Service) start(ctx context.Context, c *container, idOrName string, kind startKind) error {
	// Lock order is s.mu before c.mu: check for shutdown first.
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return portlayer.Errorf(portlayer.ClassUnavailable, "shutting down")
	}
	var rec portlayer.Container
	var gone chan struct{}
	for {
		c.mu.Lock()
		switch {
		case c.hidden():
			c.mu.Unlock()
			return portlayer.NoSuchContainer(idOrName)
		case c.rec.State.Status == portlayer.StatusRunning,
			c.rec.State.Status == portlayer.StatusRestarting && kind == startByHand && c.phase != phaseStarting:
			c.mu.Unlock()
			return portlayer.Unchanged("start", c.id, portlayer.ReasonRunning)
		case c.rec.State.Status == portlayer.StatusPaused:
			c.mu.Unlock()
			return portlayer.ContainerState("start", c.id, portlayer.ReasonPaused)
		case c.phase == phaseStarting:
			// Another start is in progress: wait for it, then see what it
			// left (running, or failed and startable again).
			ch := c.startDone
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return fmt.Errorf("compute: start %s: %w", c.id, ctx.Err())
			}
		}
		break
	}
	c.phase = phaseStarting
	c.startDone = make(chan struct{})
	if kind == startByHand {
		c.rec.RestartCount, c.rec.ManuallyStopped = 0, false
		c.restartDelay, c.exitOnNext = 0, false
	}
	rec, gone = c.rec, c.vmGone
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.endPhase(phaseStarting)
		close(c.startDone)
		c.mu.Unlock()
	}()
	if gone != nil {
		// The previous run's VM may still be powering off with the disk open.
		select {
		case <-gone:
		case <-ctx.Done():
			return fmt.Errorf("compute: start %s: %w", c.id, ctx.Err())
		}
	}

	// A volume held by another running container fails the start like a
	// boot failure (recorded, waiters told, --rm honoured).
	var (
		vm      hypervisor.VM
		g       *agent.Client
		proc    *agent.Process
		plumbed *plumbing
		token   uint64
		err     error
		// bootWait is how long the start queued for a boot slot.
		bootWait time.Duration
	)
	token, err = s.claimVolumes(ctx, c, rec)
	supervised := false
	if err == nil {
		defer func() {
			if !supervised {
				s.releaseVolumes(c.id, token)
			}
		}()
		var wait time.Duration
		var ahead int
		if wait, ahead, err = s.boots.enter(ctx); err == nil {
			if wait > 0 {
				s.logger.Info("boot admitted after waiting", "container", c.id, "waited", wait.Round(time.Millisecond), "queued_ahead", ahead, "still_queued", s.boots.queued())
			}
			bootWait = wait
			vm, g, proc, plumbed, err = s.boot(ctx, c, rec)
			s.boots.leave()
		}
	}
	if err != nil {
		rec := s.failStart(c, err)
		if rec.Spec.AutoRemove {
			// An auto-remove container whose start failed is removed too:
			// it will never run, and a caller waiting for its removal
			// (WaitRemoved) is released.
			if rerr := s.remove(c); rerr != nil {
				s.logger.Warn("auto-remove after failed start", "container", c.id, "err", rerr)
			} else {
				s.releaseVolumes(c.id, token)
				s.removeAnonymousVolumes(rec)
			}
		}
		return err
	}

	c.mu.Lock()
	if c.phase == phaseRemoved {
		// Removed (forced) while booting: nothing may outlive the record.
		c.mu.Unlock()
		g.Close()
		_ = vm.Kill()
		<-vm.Done()
		s.net.unplumb(c.id)
		return portlayer.NoSuchContainer(idOrName)
	}
	// The previous run's FinishedAt stays while the container runs: it is
	// when the container last ended, which a new start does not change.
	c.rec.State = portlayer.State{Status: portlayer.StatusRunning, Pid: vm.Pid(), StartedAt: time.Now().UTC(), FinishedAt: c.rec.State.FinishedAt, Host: hostOf(vm)}
	c.vm, c.guest, c.proc, c.killed = vm, g, proc, false
	c.slots = plumbed.slots
	c.rec.Endpoints, c.rec.Ports = plumbed.eps, plumbed.ports
	c.exited = make(chan struct{})
	c.vmGone = make(chan struct{})
	pending := c.stdins
	c.stdins = nil
	rec = c.rec
	c.vmDir = plumbed.warmDir
	run := runState{RunID: newRunID(), NICs: slotRecords(c.slots), VMName: plumbed.warmName, VMDir: plumbed.warmDir}
	c.mu.Unlock()
	c.out.beginRun(run.RunID, 0, 0)
	if err := s.recs.putRun(c.id, run); err != nil {
		s.logger.Warn("persist run state", "container", c.id, "err", err)
	}
	if err := s.recs.put(rec); err != nil {
		s.logger.Warn("persist running state", "container", c.id, "err", err)
	}
	for _, a := range pending {
		s.feedStdin(c, proc, a)
	}
	s.logger.Info("container started", "container", c.id, "vm_pid", vm.Pid(), "restart_count", rec.RestartCount)
	s.volumeEvents("mount", rec)
	var attrs map[string]string
	if bootWait > 0 {
		// How long the start waited for the host (bootGate), in ms.
		attrs = map[string]string{"bootWaitMs": strconv.FormatInt(bootWait.Milliseconds(), 10)}
	}
	s.event("start", rec, attrs)
	if !s.track() {
		// The daemon began to stop while this VM booted: leave it
		// running for the next daemon to adopt, as every other one.
		g.Close()
		return nil
	}
	supervised = true
	go s.supervise(c, vm, g, proc, token)
	return nil
}

// failStart records a start that failed: the guest's exit code for a
// process that could not start (127, 126), else 128; a container that was
// waiting for its restart policy is exited. Waiters that registered while
// the start was in progress learn that the container is not running
// after all. It returns the record.
func (s *Service) failStart(c *container, err error) portlayer.Container {
	c.mu.Lock()
	st := c.rec.State
	st.Error = err.Error()
	if _, code, ok := portlayer.StartFailure(err); ok {
		st.ExitCode = code
	} else {
		st.ExitCode = 128
	}
	if st.Status == portlayer.StatusRestarting {
		st.Status, st.Pid = portlayer.StatusExited, 0
	}
	c.rec.State = st
	rec := c.rec
	waiters := c.exitWaiters
	c.exitWaiters = nil
	c.mu.Unlock()
	if perr := s.recs.put(rec); perr != nil {
		s.logger.Warn("persist failed start", "container", c.id, "err", perr)
	}
	for _, w := range waiters {
		w <- portlayer.WaitResult{ExitCode: st.ExitCode}
	}
	return rec
}

// newRunID names one run of a container: 16 hex digits.
func newRunID() string { return newID()[:16] }

// slotRecords converts a run's NICs for persistence.
func slotRecords(slots []nicSlot) []nicRecord {
	out := make([]nicRecord, len(slots))
	for i, sl := range slots {
		out[i] = nicRecord{Tap: sl.tap, BootMAC: sl.bootMAC, Network: sl.network, Name: sl.name}
	}
	return out
}

// slotsFrom converts persisted NICs back.
func slotsFrom(recs []nicRecord) []nicSlot {
	out := make([]nicSlot, len(recs))
	for i, r := range recs {
		out[i] = nicSlot{tap: r.Tap, bootMAC: r.BootMAC, network: r.Network, name: r.Name}
	}
	return out
}

// boot starts the VM, connects to tether, applies setup and starts the
// main process. On error nothing is left running.
func (s *Service) boot(ctx context.Context, c *container, rec portlayer.Container) (hypervisor.VM, *agent.Client, *agent.Process, *plumbing, error) {
	_ = os.Remove(filepath.Join(c.runDir, changesFile)) // an earlier run's
	if err := os.MkdirAll(c.runDir, 0o700); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("compute: %w", err)
	}
	volDisks, mounts, err := s.volumeDisks(ctx, rec.Spec)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	shares, err := s.shares(rec.Spec)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	mem, cpus := rec.Spec.VMMemoryMiB(s.cfg.DefaultMemoryMiB), rec.Spec.VMCPUs(s.cfg.DefaultCPUs)
	spec := hypervisor.Spec{
		Name: c.id[:12], Kernel: s.cfg.Kernel, Initrd: s.cfg.Initrd,
		MemoryMiB: mem, CPUs: cpus, ChannelName: s.cfg.ChannelName,
		Disks:      append(s.rootDisks(ctx, c.id, rec), volDisks...),
		RuntimeDir: c.runDir,
		Shares:     shares,
	}
	if len(shares) > 0 {
		// Only the share kernel has virtio-9p; it boots slower, so the
		// others keep the default one.
		spec.Kernel, spec.Initrd = s.cfg.ShareKernel, s.cfg.ShareInitrd
	}
	shape := spec
	shape.NICs = make([]hypervisor.NIC, s.net.nicCount(rec))
	var vm hypervisor.VM
	var g *agent.Client
	var plumbed *plumbing
	t0 := time.Now()
	if w, ok := s.warm.Take(ctx, shape); ok {
		vm, g, plumbed, err = s.claimWarm(ctx, c, rec, w, spec.Disks)
		if err != nil {
			s.warm.Started()
			if ctx.Err() != nil {
				return nil, nil, nil, nil, err
			}
			s.logger.Warn("warm VM failed its claim; starting another", "container", c.id, "vm", w.Name, "err", err)
		}
	}
	if vm == nil {
		if plumbed, err = s.net.plumb(ctx, c, rec, nil); err != nil {
			return nil, nil, nil, nil, err
		}
		spec.NICs = plumbed.nics
		vm, err = s.vms.Start(ctx, spec)
		plumbed.closeFiles()
		if err != nil {
			s.net.unplumb(c.id)
			return nil, nil, nil, nil, fmt.Errorf("compute: start VM: %w", err)
		}
	}
	bootCtx, cancel := context.WithTimeout(ctx, s.cfg.BootTimeout)
	defer cancel()
	if g == nil {
		t0 = time.Now()
		if g, err = agent.DialWith(bootCtx, vm.Channel(), s.net.guestHandlers(rec)); err != nil {
			_ = vm.Kill()
			<-vm.Done()
			s.net.unplumb(c.id)
			return nil, nil, nil, nil, fmt.Errorf("compute: guest did not answer: %w (console: %s)", err, consoleTail(c.runDir))
		}
	}
	fail := func(g *agent.Client, err error) (hypervisor.VM, *agent.Client, *agent.Process, *plumbing, error) {
		g.Close()
		_ = vm.Kill()
		<-vm.Done()
		s.net.unplumb(c.id)
		if plumbed.warmDir != "" {
			_ = os.RemoveAll(plumbed.warmDir)
		}
		return nil, nil, nil, nil, err
	}
	setup := wire.Setup{Hostname: rec.Spec.Hostname, Domainname: rec.Spec.Domainname, Hosts: s.net.hostsFile(rec, plumbed.eps),
		TimeUnixNano: time.Now().UnixNano(), ShmSizeBytes: rec.Spec.ShmSizeBytes, Sysctls: rec.Spec.Sysctls, Interfaces: plumbed.ifs,
		Mounts: mounts, ReadOnlyRoot: rec.Spec.ReadOnlyRootfs, Resources: guestResources(rec.Spec.Limits, cpus),
		NoNewPrivileges: rec.Spec.NoNewPrivileges, WritableCgroup: rec.Spec.WritableCgroup,
		MaskedPaths: rec.Spec.MaskedPaths, ReadonlyPaths: rec.Spec.ReadonlyPaths, Seccomp: rec.Spec.Seccomp}
	var relay bool
	if setup.ResolvConf, relay = resolvConf(rec.Spec); relay {
		setup.DNSRelay = dnsRelayAddr
	}
	t1 := time.Now()
	if err := g.Setup(bootCtx, setup); err != nil {
		return fail(g, setupErr(rec.Spec, err))
	}
	t2 := time.Now()
	proc, err := g.Start(bootCtx, processFor(rec.Spec))
	if plumbed.warmName != "" {
		s.warm.Started()
	}
	s.logger.Debug("guest phases", "container", c.id, "warm_vm", plumbed.warmName, "connect", t1.Sub(t0), "setup", t2.Sub(t1), "process_start", time.Since(t2))
	if err != nil {
		var se *agent.StartError
		if errors.As(err, &se) {
			err = portlayer.StartFailed(portlayer.KindContainer, c.id, se.Message, se.ExitCode)
		}
		return fail(g, err)
	}
	return vm, g, proc, plumbed, nil
}

// claimWarm makes warm VM w container c's: its taps join c's networks
// (plumb), its disk slots get disks, the guest gets its claim (its own
// entropy, clock and NIC identities; it mounts the root) and its DNS
// queries go to c's view. Bounded by Config.BootTimeout. On error the
// warm VM is ended and nothing of the container stays plumbed.
func (s *Service) claimWarm(ctx context.Context, c *container, rec portlayer.Container, w *warmpool.VM, disks []hypervisor.Disk) (hypervisor.VM, *agent.Client, *plumbing, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.BootTimeout)
	defer cancel()
	var plumbed *plumbing
	fail := func(err error) (hypervisor.VM, *agent.Client, *plumbing, error) {
		w.Guest.Close()
		_ = w.VM.Kill()
		<-w.VM.Done()
		if plumbed != nil {
			s.net.unplumb(c.id)
		}
		_ = os.RemoveAll(w.Dir)
		return nil, nil, nil, err
	}
	var err error
	t0 := time.Now()
	if plumbed, err = s.net.plumb(ctx, c, rec, w.Taps); err != nil {
		// The container's own refusal (a network not found): the
		// same error a VM of its own would have met.
		plumbed = nil
		return fail(err)
	}
	plumbed.warmName, plumbed.warmDir = w.Name, w.Dir
	dp, ok := w.VM.(hypervisor.DiskPlugger)
	if !ok {
		return fail(portlayer.Errorf(portlayer.ClassNotImplemented, "warm VM cannot take disks"))
	}
	if err := dp.PlugDisks(ctx, disks); err != nil {
		return fail(err)
	}
	if h := s.net.guestHandlers(rec); h.DNS != nil {
		w.SetDNS(h.DNS)
	}
	t1 := time.Now()
	if err := w.Guest.Claim(ctx, plumbed.bootMACs()); err != nil {
		return fail(fmt.Errorf("compute: warm guest claim: %w (console: %s)", err, consoleTail(w.Dir)))
	}
	s.logger.Info("warm VM claimed", "container", c.id, "vm", w.Name, "vm_pid", w.VM.Pid(), "plumb_and_plug", t1.Sub(t0).Round(time.Millisecond), "guest_claim", time.Since(t1).Round(time.Millisecond))
	return w.VM, w.Guest, plumbed, nil
}

// processFor builds the main process from the spec, adding the variables
// a container's process is given besides its own: HOSTNAME, and
// TERM=xterm with a TTY (what a terminal program needs to draw; the
// spec's own Env, after these, overrides them).
func processFor(spec portlayer.ContainerSpec) wire.Process {
	env := []string{"HOSTNAME=" + spec.Hostname}
	if spec.Tty {
		env = append(env, "TERM=xterm")
	}
	env = append(env, spec.Env...)
	return wire.Process{Args: spec.Args, Env: env, Dir: spec.WorkingDir, User: spec.User, Groups: spec.GroupAdd, Tty: spec.Tty, Stdin: spec.OpenStdin, Init: spec.Init,
		Rows: uint32(spec.ConsoleRows), Cols: uint32(spec.ConsoleCols), ID: wire.MainProcessID, Resumable: true}
}

// consoleTail returns the last lines of the VM's serial console, for errors.
func consoleTail(runDir string) string {
	b, _ := os.ReadFile(filepath.Join(runDir, "console.log"))
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return string(bytes.TrimSpace(b))
}

// ackInterval spaces the acknowledgements of logged output sent to the
// guest: at most this often while little is logged, so a chatty process
// costs few messages.
const ackInterval = 50 * time.Millisecond

// ackBatchBytes is how much newly logged output is acknowledged at once,
// without waiting for ackInterval: a quarter of the guest's spool
// (wire.SpoolLimitBytes), so a process writing fast never waits on a full
// spool for an acknowledgement the host holds back (measured: with acks
// only every 50 ms, a container's stdout was held to about one spool,
// 1 MiB, per 50 ms).
const ackBatchBytes = wire.SpoolLimitBytes / 4

// ackLogged sends the guest acknowledgements of c's logged output each
// time kick delivers, until kick closes: at once when ackBatchBytes or
// more are newly logged, otherwise once ackInterval has passed since the
// last one; when kick closes, what is still unacknowledged is
// acknowledged before it returns.
func ackLogged(c *container, proc *agent.Process, kick <-chan struct{}) {
	var ackedOut, ackedErr int64
	var last time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pending := false
	ack := func() {
		out, errb := c.out.loggedOffsets()
		if out == ackedOut && errb == ackedErr {
			return
		}
		_ = proc.Ack(out, errb)
		ackedOut, ackedErr, last = out, errb, time.Now()
	}
	for {
		select {
		case _, ok := <-kick:
			if !ok {
				if pending {
					timer.Stop()
					ack()
				}
				return
			}
			out, errb := c.out.loggedOffsets()
			if out-ackedOut+errb-ackedErr >= ackBatchBytes {
				ack()
				continue
			}
			if !pending {
				pending = true
				timer.Reset(max(0, ackInterval-time.Since(last)))
			}
		case <-timer.C:
			pending = false
			ack()
		}
	}
}

// supervise pumps the run's output into the log, acknowledging to the
// guest what the log holds, waits for the exit, records it, powers the VM
// off and applies the restart policy. When the daemon stops first, it
// leaves the run alone: the VM keeps running for the next daemon.
func (s *Service) supervise(c *container, vm hypervisor.VM, g *agent.Client, proc *agent.Process, volumes uint64) {
	defer s.wg.Done()
	acks := make(chan struct{}, 1)
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		ackLogged(c, proc, acks)
	}()
	var wg sync.WaitGroup
	pump := func(stream string, r io.Reader) {
		defer wg.Done()
		buf := make([]byte, outputChunk)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				c.out.write(stream, buf[:n])
				select {
				case acks <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go pump("stdout", proc.Stdout())
	go pump("stderr", proc.Stderr())
	code, waitErr := proc.Wait(context.Background())
	wg.Wait()
	close(acks)
	<-ackerDone
	if waitErr != nil && s.stopping() {
		// The daemon is stopping and closed the channel: the container
		// runs on in its VM (a daemon restart does not stop it), its
		// record says so, and the next daemon takes it back.
		s.logger.Info("container left running", "container", c.id, "vm_pid", vm.Pid())
		return
	}
	c.out.flush()
	captured := waitErr == nil && c.record().Spec.CaptureChanges && s.captureChanges(c, g)

	// Record the exit as soon as the process has exited and its output is
	// delivered; the VM powers off afterwards.
	c.mu.Lock()
	st := c.rec.State
	st.Status, st.Pid, st.FinishedAt = portlayer.StatusExited, 0, time.Now().UTC()
	switch {
	case waitErr == nil:
		st.ExitCode = code
		st.OOMKilled = proc.OOMKilled()
	case c.killed:
		st.ExitCode = 137
	default:
		select {
		case <-vm.Done():
		case <-time.After(powerOffTimeout):
			_ = vm.Kill()
			<-vm.Done()
		}
		st.ExitCode = 255
		st.Error = fmt.Sprintf("container VM ended unexpectedly: %v", vm.Status().Err)
	}
	restart, delay := c.shouldRestartLocked(st.ExitCode, st.FinishedAt.Sub(st.StartedAt))
	// A Restart by hand is stopping this run to start the next.
	byRestart := c.restarts > 0
	if restart {
		st.Status = portlayer.StatusRestarting
		c.rec.RestartCount++
		c.restartCancel = make(chan struct{})
	}
	c.rec.State = st
	c.proc = nil
	c.rec.Endpoints, c.rec.Ports, c.slots = nil, nil, nil
	s.net.unplumb(c.id)
	exited, gone, cancelRestart := c.exited, c.vmGone, c.restartCancel
	waiters := c.exitWaiters
	c.exitWaiters = nil
	rec := c.rec
	c.mu.Unlock()
	if err := s.recs.put(rec); err != nil {
		s.logger.Error("persist exit", "container", c.id, "err", err)
	}
	s.logger.Info("container exited", "container", c.id, "exit_code", st.ExitCode, "oom_killed", st.OOMKilled, "restart", restart)
	if st.OOMKilled {
		s.event("oom", rec, nil)
	}
	s.event("die", rec, map[string]string{"exitCode": strconv.Itoa(st.ExitCode), "execDuration": strconv.Itoa(int(st.FinishedAt.Sub(st.StartedAt).Seconds()))})
	c.out.endRun()
	close(exited)
	for _, w := range waiters {
		w <- portlayer.WaitResult{ExitCode: st.ExitCode}
	}

	leave := false
	// A container removed next (--rm) that has no volume or bind mount
	// leaves nothing its guest would have to write back: its VM is
	// killed, not powered off (the guest's sync and power-off are ~100 ms
	// of a short auto-remove run under TCG, spent on a disk deleted next).
	// So is one whose changes were captured at the exit: nothing reads
	// its disk again.
	discard := (rec.Spec.AutoRemove || captured) && !restart && !byRestart && !slices.ContainsFunc(rec.Spec.Mounts, func(m portlayer.MountSpec) bool {
		return m.Type == portlayer.MountVolume || m.Type == portlayer.MountBind
	})
	if waitErr == nil && !discard {
		ctx, cancel := context.WithTimeout(context.Background(), powerOffTimeout)
		if err := g.PowerOff(ctx); err != nil {
			// The channel is gone (the daemon is stopping: Close cut it
			// just after the exit): a VM left running is powered off by
			// the next daemon, which syncs its disk; killing it would not.
			leave = s.stopping()
			s.logger.Warn("power-off request failed", "container", c.id, "err", err, "vm_left_running", leave)
		} else {
			select {
			case <-vm.Done():
			case <-ctx.Done():
				s.logger.Warn("guest did not power off; killing VM", "container", c.id)
			}
		}
		cancel()
	}
	if !leave {
		_ = vm.Kill()
		<-vm.Done()
	}
	g.Close()
	c.mu.Lock()
	c.vm, c.guest = nil, nil
	vmDir := c.vmDir
	c.mu.Unlock()
	if vmDir != "" && !leave {
		_ = os.RemoveAll(vmDir)
	}
	s.releaseVolumes(c.id, volumes)
	s.volumeEvents("unmount", rec)
	close(gone)

	switch {
	case restart:
		s.scheduleRestart(c, delay, cancelRestart)
	case rec.Spec.AutoRemove && !byRestart:
		if err := s.remove(c); err != nil {
			s.logger.Error("auto-remove", "container", c.id, "err", err)
		} else {
			s.removeAnonymousVolumes(rec)
		}
	}
}

// guestKillTimeout bounds how long a SIGKILL waits for the guest to take
// it before the VM itself is killed.
const guestKillTimeout = 3 * time.Second

// killExitTimeout bounds how long Kill with SIGKILL waits for the exit to
// be recorded before it ends the VM itself.
const killExitTimeout = 5 * time.Second

// Kill implements portlayer.Compute. Signals go to the main process in the
// guest; SIGKILL (or 0) falls back to ending the VM at once when the guest
// does not answer. Either way a killed process reports 137. With SIGKILL,
// Kill returns once the container has exited (its state says so), so a
// caller can act on the ended container next (remove it, start it);
// other signals return once sent, since the process may handle them.
func (s *Service) Kill(ctx context.Context, idOrName string, signal int) error {
	c, err := s.lookup(idOrName)
	if err != nil {
		return err
	}
	if err := s.kill(ctx, c, signal); err != nil || (signal != 0 && signal != 9) {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, killExitTimeout)
	err = c.waitExited(wctx)
	cancel()
	if err == nil || ctx.Err() != nil {
		return nil
	}
	c.mu.Lock()
	vm := c.vm
	c.mu.Unlock()
	if vm != nil {
		_ = vm.Kill()
	}
	return c.waitExited(ctx)
}

func (s *Service) kill(ctx context.Context, c *container, signal int) error {
	if signal == 0 {
		signal = 9
	}
	if signal < 1 || signal > 64 {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid signal %d", signal)
	}
	if s.stopping() {
		// Its VMs belong to the next daemon now.
		return portlayer.Errorf(portlayer.ClassUnavailable, "shutting down")
	}
	c.mu.Lock()
	vm, proc := c.vm, c.proc
	status := c.rec.State.Status
	if status == portlayer.StatusPaused && signal != 9 {
		c.mu.Unlock()
		return portlayer.ContainerState("kill", c.id, portlayer.ReasonPaused)
	}
	if status == portlayer.StatusRestarting && c.restartCancel != nil {
		// Waiting for its restart: nothing runs to signal. The signal
		// still counts as a stop by hand and, when it is a stop signal,
		// cancels the restart: the caller meant the container to end.
		c.rec.ManuallyStopped = true
		var waiters []chan portlayer.WaitResult
		if exitOnNextFor(c.rec.Spec, signal) {
			c.exitOnNext = true
			waiters, _ = c.cancelRestartLocked()
		}
		rec := c.rec
		c.mu.Unlock()
		if err := s.recs.put(rec); err != nil {
			s.logger.Warn("persist cancelled restart", "container", c.id, "err", err)
		}
		for _, w := range waiters {
			w <- portlayer.WaitResult{ExitCode: rec.State.ExitCode}
		}
		return nil
	}
	if vm == nil || proc == nil || (status != portlayer.StatusRunning && status != portlayer.StatusPaused) {
		c.mu.Unlock()
		return portlayer.ContainerState("kill", c.id, portlayer.ReasonNotRunning)
	}
	if signal == 9 {
		c.killed = true
	}
	if exitOnNextFor(c.rec.Spec, signal) {
		c.exitOnNext = true
	}
	manual := !c.rec.ManuallyStopped
	c.rec.ManuallyStopped = true
	rec := c.rec
	c.mu.Unlock()
	if manual {
		if err := s.recs.put(rec); err != nil {
			s.logger.Warn("persist manual stop", "container", c.id, "err", err)
		}
	}
	s.event("kill", rec, map[string]string{"signal": strconv.Itoa(signal)})
	if signal == 9 {
		// SIGKILL goes to the process in the guest first, so the guest then
		// syncs and unmounts its disk as after any exit: what the process
		// wrote survives a kill, as it would on a host's own filesystem.
		// Only a guest that does not answer (or is paused) loses its VM
		// at once.
		if status == portlayer.StatusRunning {
			kctx, cancel := context.WithTimeout(ctx, guestKillTimeout)
			err := proc.Signal(kctx, 9)
			cancel()
			if err == nil {
				return nil
			}
		}
		return vm.Kill()
	}
	// A guest that stops answering must not hang the API call.
	ctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()
	return proc.Signal(ctx, signal)
}

var _ portlayer.Restarter = (*Service)(nil)

// Restart implements portlayer.Restarter: the stop (signal, else the
// container's stop signal, then SIGKILL after timeout, as Stop) and the
// start are one operation, so the exit in between neither removes an
// auto-remove container nor is taken for its end: the caller asked for it
// to run on. A container that is not running is just started. Once
// begun, a restart finishes even if ctx ends (the client went away), so a
// container is never left stopped halfway; a "restart" event follows the
// start.
func (s *Service) Restart(ctx context.Context, idOrName string, signal int, timeout *time.Duration) error {
	c, err := s.lookup(idOrName)
	if err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	c.mu.Lock()
	c.restarts++
	st := c.rec.State.Status
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.restarts--
		c.mu.Unlock()
	}()
	if st == portlayer.StatusRunning || st == portlayer.StatusPaused || st == portlayer.StatusRestarting {
		// NotModified: it ended on its own meanwhile; it is started all
		// the same.
		switch err := s.stopVMWith(ctx, c, signal, timeout); {
		case err == nil:
			s.event("stop", c.record(), nil)
		case !errdefs.IsNotModified(err):
			return err
		}
	}
	// NotModified: another start got there first; it runs, as asked.
	if err := s.start(ctx, c, idOrName, startByHand); err != nil && !errdefs.IsNotModified(err) {
		return err
	}
	s.event("restart", c.record(), nil)
	return nil
}

// Stop implements portlayer.Compute. A container that does not run (nor
// waits for its restart) is left as it is: NotModified (Unchanged,
// ReasonNotRunning), and no stop event.
func (s *Service) Stop(ctx context.Context, idOrName string, timeout *time.Duration) error {
	c, err := s.lookup(idOrName)
	if err != nil {
		return err
	}
	return s.stop(ctx, c, timeout)
}

func (s *Service) stop(ctx context.Context, c *container, timeout *time.Duration) error {
	err := s.stopVM(ctx, c, timeout)
	if err == nil {
		s.event("stop", c.record(), nil)
	}
	return err
}

func (s *Service) stopVM(ctx context.Context, c *container, timeout *time.Duration) error {
	return s.stopVMWith(ctx, c, 0, timeout)
}

// stopVMWith is stopVM with signal sent first instead of the container's
// stop signal (0: the stop signal).
func (s *Service) stopVMWith(ctx context.Context, c *container, signal int, timeout *time.Duration) error {
	c.mu.Lock()
	status := c.rec.State.Status
	spec := c.rec.Spec
	pendingRestart := c.restartCancel != nil
	startDone := c.startDone
	restarting := status == portlayer.StatusRestarting && c.phase == phaseStarting
	c.mu.Unlock()
	sig := cmp.Or(signal, spec.StopSignal, 15)
	switch {
	case status == portlayer.StatusRestarting && pendingRestart:
		// Waiting for its restart: the stop signal cancels it.
		return s.kill(ctx, c, sig)
	case restarting:
		// Being restarted right now: stop the new run once it runs.
		select {
		case <-startDone:
		case <-ctx.Done():
			return fmt.Errorf("compute: stop %s: %w", c.id, ctx.Err())
		}
		return s.stopVMWith(ctx, c, signal, timeout)
	case status == portlayer.StatusPaused:
		// A frozen guest cannot handle its stop signal: resume it first.
		if err := s.Unpause(ctx, c.id); err != nil && !errdefs.IsConflict(err) {
			return err
		}
	case status != portlayer.StatusRunning:
		return portlayer.Unchanged("stop", c.id, portlayer.ReasonNotRunning)
	}
	wait := defaultStopTimeout
	if spec.StopTimeout != nil {
		wait = *spec.StopTimeout
	}
	if timeout != nil {
		wait = *timeout
	}
	if wait != 0 {
		if err := s.kill(ctx, c, sig); err == nil {
			wctx := ctx
			var cancel context.CancelFunc = func() {}
			if wait > 0 {
				wctx, cancel = context.WithTimeout(ctx, wait)
			}
			err := c.waitExited(wctx)
			cancel()
			if err == nil {
				return nil
			}
		}
	}
	if err := s.kill(ctx, c, 9); err != nil && !errdefs.IsConflict(err) {
		return err
	}
	return c.waitExited(ctx)
}

// Wait implements portlayer.Compute.
func (s *Service) Wait(ctx context.Context, idOrName string, cond portlayer.WaitCondition) (<-chan portlayer.WaitResult, error) {
	c, err := s.lookup(idOrName)
	if err != nil {
		return nil, err
	}
	ch := make(chan portlayer.WaitResult, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch cond {
	case portlayer.WaitNotRunning, "":
		// A container waiting for its restart counts as running: it has
		// not ended, its policy runs it again.
		if st := c.rec.State.Status; st != portlayer.StatusRunning && st != portlayer.StatusPaused && st != portlayer.StatusRestarting && c.phase != phaseStarting {
			ch <- portlayer.WaitResult{ExitCode: c.rec.State.ExitCode}
			return ch, nil
		}
		c.exitWaiters = append(c.exitWaiters, ch)
	case portlayer.WaitNextExit:
		c.exitWaiters = append(c.exitWaiters, ch)
	case portlayer.WaitRemoved:
		c.removeWaiters = append(c.removeWaiters, ch)
	default:
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid condition: %q", cond)
	}
	return ch, nil
}

// Attach implements portlayer.Interaction.
func (s *Service) Attach(ctx context.Context, idOrName string, opts portlayer.AttachOptions) (portlayer.Attachment, error) {
	c, err := s.lookup(idOrName)
	if err != nil {
		return nil, err
	}
	if opts.Logs && c.record().Spec.NoLog {
		return nil, noLog(c.id)
	}
	a := &attachment{out: c.out, stdout: opts.Stdout, stderr: opts.Stderr, stdin: opts.Stdin, done: make(chan struct{})}
	c.out.mu.Lock()
	if opts.Logs {
		msgs, err := c.out.readAll(portlayer.LogOptions{Stdout: true, Stderr: true, Tail: -1})
		if err == nil {
			for _, m := range msgs {
				a.deliver(m.Stream, m.Data)
			}
		}
	}
	if !opts.Stream {
		c.out.mu.Unlock()
		a.finish()
		return a, nil
	}
	c.out.subs[a] = struct{}{}
	c.out.mu.Unlock()
	s.event("attach", c.record(), nil)

	c.mu.Lock()
	proc, spec := c.proc, c.rec.Spec
	if opts.Stdin != nil && spec.OpenStdin && proc == nil {
		c.stdins = append(c.stdins, a)
	}
	c.mu.Unlock()
	if opts.Stdin != nil && spec.OpenStdin && proc != nil {
		s.feedStdin(c, proc, a)
	}
	return a, nil
}

// feedStdin copies an attachment's stdin to the process; at EOF it closes
// the process's stdin when the container has StdinOnce.
func (s *Service) feedStdin(c *container, proc *agent.Process, a *attachment) {
	c.mu.Lock()
	once, tty := c.rec.Spec.StdinOnce, c.rec.Spec.Tty
	c.mu.Unlock()
	go func() {
		w := proc.Stdin()
		_, err := io.Copy(w, a.stdin)
		// Without a TTY, EOF on the client's stdin closes the container's
		// stdin when StdinOnce (that is what StdinOnce means); with a TTY
		// it never does (a terminal client ends its stdin to detach), and
		// the attach ends instead. A failed stdin or the detach sequence
		// also ends the attach; the container's stdin stays open.
		if err == nil && once && !tty {
			_ = w.Close()
			return
		}
		if err != nil || tty {
			_ = a.Close()
			s.event("detach", c.record(), nil)
		}
	}()
}

// Logs implements portlayer.Interaction.
func (s *Service) Logs(ctx context.Context, idOrName string, opts portlayer.LogOptions) (<-chan portlayer.LogMessage, error) {
	c, err := s.lookup(idOrName)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	running := c.rec.State.Status == portlayer.StatusRunning || c.rec.State.Status == portlayer.StatusPaused || c.phase == phaseStarting
	none := c.rec.Spec.NoLog
	c.mu.Unlock()
	if none {
		return nil, noLog(c.id)
	}
	return c.out.logs(ctx, opts, running)
}

// noLog is the error of reading the log of container id, which keeps
// none (ContainerSpec.NoLog).
func noLog(id string) error {
	return &portlayer.Error{Class: portlayer.ClassFailedPrecondition, Kind: portlayer.KindContainer, ID: id,
		Reason: portlayer.ReasonNoLog, Message: "container " + id + " keeps no log of its output"}
}
