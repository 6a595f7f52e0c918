// Package hvfake is an in-process fake of the hypervisor driver contract,
// for unit tests of the layers above it (compute). It boots nothing: Start
// returns a [VM] whose guest channel is one end of a unix socket pair, with a
// fake tether (package wire's protocol v3 over package link, like
// internal/tether/server.go) serving the other end in a goroutine.
//
// The fake records what it was asked (every Spec, overlay, Setup, process
// spec and signal) and fails on demand: [Driver.FailStart],
// [Driver.FailOverlay], [Driver.HangNextBoot], [Driver.HoldNextBoot] and
// [VM.Crash]. The fake tether runs canned programs instead of executables;
// see [Programs].
//
// VMs outlive the host's connection, as QEMU VMs outlive the daemon: a
// driver's [Driver.Adopt] (the same Driver, standing in for a restarted
// daemon's) gives a running VM a new channel, and the fake tether serves a
// new session on it with the processes it already runs ([Driver.FailAdopt]
// fails it on demand). A host reboot is [Driver.CrashAll].
//
// What it does not do: run real processes or apply Setup to anything. Pid
// values are above Linux's PID_MAX_LIMIT (2^22), so code that signals a
// recorded PID can never hit a real process.
package hvfake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/tether/proctable"
)

// pidBase is above Linux's PID_MAX_LIMIT (4194304 on 64-bit), so no real
// process ever has a fake VM's Pid.
const pidBase = 1 << 22

// ErrKilled is the Status().Err of a VM ended by [VM.Kill].
var ErrKilled = errors.New("hvfake: VM killed")

// Overlay records one CreateOverlay call.
type Overlay struct {
	Base      hypervisor.Disk
	Path      string
	SizeBytes int64
}

// Driver is a fake hypervisor.Driver. The zero value is not usable; call
// [New]. Safe for concurrent use.
type Driver struct {
	mu          sync.Mutex
	specs       []hypervisor.Spec
	overlays    []Overlay
	vms         []*VM
	failStart   []error
	failOverlay []error
	failAdopt   []error
	adopts      []hypervisor.Spec
	gates       []<-chan struct{} // boot gates for the next Starts, in order
	changed     chan struct{}     // closed and replaced when a VM starts
}

var (
	_ hypervisor.Driver  = (*Driver)(nil)
	_ hypervisor.Adopter = (*Driver)(nil)
)

// New returns a driver with no failures armed.
func New() *Driver {
	return &Driver{changed: make(chan struct{})}
}

// FailStart makes the next Start return err (once per call; calls queue).
func (d *Driver) FailStart(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failStart = append(d.failStart, err)
}

// FailOverlay makes the next CreateOverlay return err (calls queue).
func (d *Driver) FailOverlay(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failOverlay = append(d.failOverlay, err)
}

// FailAdopt makes the next Adopt return err (calls queue).
func (d *Driver) FailAdopt(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failAdopt = append(d.failAdopt, err)
}

// HangNextBoot makes the next started VM's guest never answer the host's
// hello, as a guest that does not boot: the caller's boot timeout must
// end it.
func (d *Driver) HangNextBoot() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gates = append(d.gates, nil) // a nil channel never becomes ready
}

// HoldNextBoot makes the next started VM's guest wait before it answers the
// handshake until release is called. release is idempotent.
func (d *Driver) HoldNextBoot() (release func()) {
	ch := make(chan struct{})
	d.mu.Lock()
	d.gates = append(d.gates, ch)
	d.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// Start implements hypervisor.Driver. It validates spec as a real driver
// would (InvalidArgument: no name or channel, memory or CPUs out of range,
// a disk neither raw nor qcow2, missing RuntimeDir, name of a VM still
// running; kernel and initrd are not checked), records it, and returns a VM
// whose fake tether serves the guest channel.
func (d *Driver) Start(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hvfake: start: %w: %w", err, errdefs.ErrUnavailable)
	}
	if err := validate(spec); err != nil {
		return nil, err
	}
	spec.Disks = append([]hypervisor.Disk(nil), spec.Disks...)
	spec.Shares = append([]hypervisor.Share(nil), spec.Shares...)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.specs = append(d.specs, spec)
	if len(d.failStart) > 0 {
		err := d.failStart[0]
		d.failStart = d.failStart[1:]
		return nil, err
	}
	for _, vm := range d.vms {
		if vm.spec.Name == spec.Name && !vm.ended() {
			return nil, fmt.Errorf("hvfake: VM %s already runs: %w", spec.Name, errdefs.ErrInvalidArgument)
		}
	}
	gate := closedGate
	if len(d.gates) > 0 {
		gate = d.gates[0]
		d.gates = d.gates[1:]
	}
	vm, err := newVM(spec, pidBase+len(d.vms)+1, gate)
	if err != nil {
		return nil, err
	}
	d.vms = append(d.vms, vm)
	close(d.changed)
	d.changed = make(chan struct{})
	return vm, nil
}

var closedGate = func() <-chan struct{} { c := make(chan struct{}); close(c); return c }()

func validate(spec hypervisor.Spec) error {
	switch {
	case spec.Name == "":
		return fmt.Errorf("hvfake: VM name is empty: %w", errdefs.ErrInvalidArgument)
	case spec.MemoryMiB < hypervisor.MinMemoryMiB || spec.MemoryMiB > hypervisor.MaxMemoryMiB:
		return fmt.Errorf("hvfake: memory %d MiB outside %d..%d: %w", spec.MemoryMiB, hypervisor.MinMemoryMiB, hypervisor.MaxMemoryMiB, errdefs.ErrInvalidArgument)
	case spec.CPUs < 1 || spec.CPUs > hypervisor.MaxCPUs:
		return fmt.Errorf("hvfake: %d CPUs outside 1..%d: %w", spec.CPUs, hypervisor.MaxCPUs, errdefs.ErrInvalidArgument)
	case spec.ChannelName == "":
		return fmt.Errorf("hvfake: channel name is empty: %w", errdefs.ErrInvalidArgument)
	}
	for _, d := range spec.Disks {
		if d.Format != "raw" && d.Format != "qcow2" {
			return fmt.Errorf("hvfake: disk %s: format %q is not raw or qcow2: %w", d.Path, d.Format, errdefs.ErrInvalidArgument)
		}
	}
	if fi, err := os.Stat(spec.RuntimeDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("hvfake: runtime dir %q missing: %w", spec.RuntimeDir, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CreateOverlay implements hypervisor.Driver: it checks that the base disk
// exists, writes an empty file at path and records the call. The returned
// disk is qcow2.
func (d *Driver) CreateOverlay(ctx context.Context, base hypervisor.Disk, path string, sizeBytes int64) (hypervisor.Disk, error) {
	d.mu.Lock()
	if len(d.failOverlay) > 0 {
		err := d.failOverlay[0]
		d.failOverlay = d.failOverlay[1:]
		d.mu.Unlock()
		return hypervisor.Disk{}, err
	}
	d.mu.Unlock()
	if _, err := os.Stat(base.Path); err != nil {
		return hypervisor.Disk{}, fmt.Errorf("hvfake: overlay base: %w", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return hypervisor.Disk{}, fmt.Errorf("hvfake: overlay: %w", err)
	}
	d.mu.Lock()
	d.overlays = append(d.overlays, Overlay{Base: base, Path: path, SizeBytes: sizeBytes})
	d.mu.Unlock()
	return hypervisor.Disk{Path: path, Format: "qcow2"}, nil
}

// Capabilities implements hypervisor.Driver: no pause, shares (recorded,
// not served), accelerator "fake", VMs can be adopted.
func (d *Driver) Capabilities() hypervisor.Capabilities {
	return hypervisor.Capabilities{Accelerator: "fake", Shares: true, Adopt: true}
}

// Adopt implements hypervisor.Adopter: it finds the running VM named
// spec.Name in spec.RuntimeDir and gives it a new channel, on which the
// fake tether serves a new session once the previous one has ended (the
// host closed it), as QEMU reconnects only then; ctx bounds that wait
// (Unavailable; the VM is then killed, as the contract says). NotFound if
// no such VM runs. Every call is recorded ([Driver.Adopts]).
func (d *Driver) Adopt(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	d.mu.Lock()
	d.adopts = append(d.adopts, spec)
	if len(d.failAdopt) > 0 {
		err := d.failAdopt[0]
		d.failAdopt = d.failAdopt[1:]
		d.mu.Unlock()
		return nil, err
	}
	var vm *VM
	for _, v := range d.vms {
		if v.spec.Name == spec.Name && v.spec.RuntimeDir == spec.RuntimeDir && !v.ended() {
			vm = v
		}
	}
	d.mu.Unlock()
	if vm == nil {
		return nil, fmt.Errorf("hvfake: no VM %s runs: %w", spec.Name, errdefs.ErrNotFound)
	}
	host, guest, err := socketPair()
	if err != nil {
		return nil, err
	}
	select {
	case vm.sessions <- guest:
	case <-vm.done:
		host.Close()
		guest.Close()
		return nil, fmt.Errorf("hvfake: VM %s ended: %w", spec.Name, errdefs.ErrNotFound)
	case <-ctx.Done():
		host.Close()
		guest.Close()
		vm.end(ErrKilled)
		return nil, fmt.Errorf("hvfake: adopt %s: channel not connected: %w: %w", spec.Name, ctx.Err(), errdefs.ErrUnavailable)
	}
	h := &Adopted{VM: vm, host: closeAtEOF{host}}
	vm.setHost(h.host)
	return h, nil
}

// Adopted is a VM taken back by Adopt: the same VM with the new channel.
type Adopted struct {
	*VM
	host net.Conn
}

// Channel implements hypervisor.VM: the channel Adopt connected.
func (a *Adopted) Channel() net.Conn { return a.host }

// Adopts returns every Spec Adopt was called with, oldest first.
func (d *Driver) Adopts() []hypervisor.Spec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]hypervisor.Spec(nil), d.adopts...)
}

// CrashAll ends every running VM at once with err, as a host reboot does.
func (d *Driver) CrashAll(err error) {
	for _, vm := range d.Running() {
		vm.Crash(err)
	}
}

// Specs returns every Spec Start was called with (failed starts included),
// oldest first.
func (d *Driver) Specs() []hypervisor.Spec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]hypervisor.Spec(nil), d.specs...)
}

// Overlays returns every successful CreateOverlay call, oldest first.
func (d *Driver) Overlays() []Overlay {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Overlay(nil), d.overlays...)
}

// VMs returns every VM started, oldest first.
func (d *Driver) VMs() []*VM {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*VM(nil), d.vms...)
}

// Running returns the VMs that have not ended, oldest first.
func (d *Driver) Running() []*VM {
	var out []*VM
	for _, vm := range d.VMs() {
		if !vm.ended() {
			out = append(out, vm)
		}
	}
	return out
}

// WaitVM blocks until at least n VMs have been started and returns the n-th
// (1-based), or ctx's error.
func (d *Driver) WaitVM(ctx context.Context, n int) (*VM, error) {
	for {
		d.mu.Lock()
		if len(d.vms) >= n {
			vm := d.vms[n-1]
			d.mu.Unlock()
			return vm, nil
		}
		ch := d.changed
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// VM is a fake hypervisor.VM. Safe for concurrent use.
type VM struct {
	spec     hypervisor.Spec
	pid      int
	first    net.Conn      // the host end Start returned (Channel)
	sessions chan net.Conn // guest ends for the fake tether's next sessions
	table    *proctable.Table
	done     chan struct{}

	once   sync.Once
	mu     sync.Mutex
	paused bool     // Pause'd and not Resume'd (the fake guest runs on)
	host   net.Conn // the latest host end, cut when the VM is killed
	status hypervisor.ExitStatus
	setup  *wire.Setup
	procs  []wire.Process
	sigs   []int
	ifaces []wire.Interface
	pidSeq int
}

var _ hypervisor.VM = (*VM)(nil)

func newVM(spec hypervisor.Spec, pid int, gate <-chan struct{}) (*VM, error) {
	host, guest, err := socketPair()
	if err != nil {
		return nil, err
	}
	vm := &VM{spec: spec, pid: pid, first: closeAtEOF{host}, sessions: make(chan net.Conn, 1), table: proctable.New(0), done: make(chan struct{})}
	vm.host = vm.first
	vm.sessions <- guest
	go vm.serve(gate)
	return vm, nil
}

// socketPair returns both ends of a connected unix stream socket pair. It
// buffers, as a VM's channel does (a net.Pipe does not).
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("hvfake: socketpair: %w", err)
	}
	conn := func(fd int, name string) (net.Conn, error) {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		return net.FileConn(f)
	}
	a, err := conn(fds[0], "host")
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("hvfake: socketpair: %w", err)
	}
	b, err := conn(fds[1], "guest")
	if err != nil {
		a.Close()
		return nil, nil, fmt.Errorf("hvfake: socketpair: %w", err)
	}
	return a, b, nil
}

// closeAtEOF is the host end of the channel: it closes itself once it has
// read EOF, as the VMM's socket closes when the VMM exits.
type closeAtEOF struct{ net.Conn }

func (c closeAtEOF) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if errors.Is(err, io.EOF) {
		c.Conn.Close()
	}
	return n, err
}

// Spec returns the spec the VM was started with.
func (vm *VM) Spec() hypervisor.Spec { return vm.spec }

// Channel implements hypervisor.VM: the channel Start connected.
func (vm *VM) Channel() net.Conn { return vm.first }

func (vm *VM) setHost(c net.Conn) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.host = c
}

// Pid implements hypervisor.VM: a value above PID_MAX_LIMIT, unique per
// driver.
func (vm *VM) Pid() int { return vm.pid }

// Done implements hypervisor.VM.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Status implements hypervisor.VM: Err is nil after a guest power-off,
// [ErrKilled] after Kill, the given error after Crash.
func (vm *VM) Status() hypervisor.ExitStatus {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.status
}

// Kill implements hypervisor.VM: the channel closes at once and the VM ends
// with [ErrKilled]. Idempotent.
func (vm *VM) Kill() error {
	vm.end(ErrKilled)
	return nil
}

// Crash ends the VM as if the VMM died: the channel closes mid-stream, no
// exit status is sent, and Status().Err is err.
func (vm *VM) Crash(err error) { vm.end(err) }

// Setup returns the Setup the guest received, and whether it received one.
func (vm *VM) Setup() (wire.Setup, bool) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.setup == nil {
		return wire.Setup{}, false
	}
	return *vm.setup, true
}

// Interfaces returns every interface request (network connect and
// disconnect on the running VM), oldest first.
func (vm *VM) Interfaces() []wire.Interface {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]wire.Interface(nil), vm.ifaces...)
}

// Processes returns the spec of every process the guest was asked to start
// (rejected ones included), oldest first.
func (vm *VM) Processes() []wire.Process {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]wire.Process(nil), vm.procs...)
}

// Signals returns every signal number delivered to a process, oldest first.
func (vm *VM) Signals() []int {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]int(nil), vm.sigs...)
}

// end ends the VM once: record the status, cut the channel, close Done.
func (vm *VM) end(err error) {
	vm.once.Do(func() {
		vm.mu.Lock()
		vm.status = hypervisor.ExitStatus{Err: err, At: time.Now()}
		vm.mu.Unlock()
		// A power-off lets the host read what the guest sent before it (the
		// reply), then EOF (the session closes its guest end; the host end
		// closes itself at that EOF). A killed or crashed VM cuts the
		// channel at once.
		if err != nil {
			vm.mu.Lock()
			h := vm.host
			vm.mu.Unlock()
			h.Close()
		}
		close(vm.done)
	})
}

func (vm *VM) ended() bool {
	select {
	case <-vm.done:
		return true
	default:
		return false
	}
}

// Pause implements hypervisor.Pauser for control-plane tests: the VM is
// recorded paused (Paused), but the fake guest is not frozen.
func (v *VM) Pause(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = true
	return nil
}

// Resume implements hypervisor.Pauser.
func (v *VM) Resume(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = false
	return nil
}

// Paused reports whether the VM is paused.
func (v *VM) Paused() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.paused
}

var _ hypervisor.Pauser = (*VM)(nil)
