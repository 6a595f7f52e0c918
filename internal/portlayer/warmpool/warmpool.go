// Package warmpool keeps container VMs of the VCH's most common shape
// ready before anyone asks for them: restored from their template, woken
// (their own entropy and clock), their NICs' taps made and their guest
// session open, on placeholder disks. A container's start takes one
// (Take) and gives it the container's disks, NICs and wake (claim), so
// the QEMU start, the state load, the wake and the session handshake —
// about half of a short container's restored run, create to exit, under
// TCG — are off its path.
//
// A warm VM holds nothing of any container: it is made before the
// container is known, and the guest binds no disk, NIC or share and
// mounts no root until its claim (wire.Wake.Deferred). A VM is used by
// one container only and ends with its run, as every container VM.
//
// On-disk layout under Config.Dir: one runtime directory per warm VM,
// named as the VM (w + 11 hex digits). A claimed VM's directory stays
// where it is (its VMM's channel reconnects to a path inside it) and is
// the container's to remove; Sweep ends the unclaimed ones a previous
// daemon left.
package warmpool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// Config configures a Pool.
type Config struct {
	// Size is how many warm VMs are kept ready; 0 turns the pool off.
	Size int
	// Dir holds the warm VMs' runtime directories; created if missing.
	Dir string
	// Shape is the VMs' shape: Kernel, Initrd, Cmdline, MemoryMiB, CPUs,
	// ChannelName, the disk slots (ReadOnly and Serial of each) and the
	// number of NICs (their Files and MACs are not used). Name and
	// RuntimeDir are each VM's own.
	Shape hypervisor.Spec
}

// Starter restores warm VMs (vmtemplate.Starter).
type Starter interface {
	// StartWarm restores a VM of spec's shape from its template, woken
	// deferred, its disks placeholders (hypervisor.WarmRestorer).
	StartWarm(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error)
	// Key is the template key of spec's shape.
	Key(spec hypervisor.Spec) (string, bool)
}

// NICMaker makes the taps of warm VMs (portlayer.NetworkPlumber's
// NewNIC and LeaveAll, with the warm VM's name as the owner).
type NICMaker interface {
	NewNIC(ctx context.Context, owner string) (portlayer.NIC, error)
	LeaveAll(owner string)
}

// VM is a warm VM. After Take it is the caller's: it plugs the disks
// (VM.(hypervisor.DiskPlugger)), joins the taps to networks, claims the
// guest (Guest.Claim) and supervises the VM; SetDNS routes the guest's
// DNS queries to the container's view.
type VM struct {
	// Name is the VM's name for the driver (hypervisor.Spec.Name) and Dir
	// its runtime directory: together they find it again
	// (hypervisor.Adopter) after a daemon restart.
	Name, Dir string
	// VM is the running VM; Guest its open guest session.
	VM    hypervisor.VM
	Guest *agent.Client
	// Taps are the names of its NICs' taps, in NIC order, attached to no
	// network yet.
	Taps []string

	key string
	dns atomic.Pointer[func(ctx context.Context, q []byte) ([]byte, error)]
}

// SetDNS makes fn answer the guest's DNS queries (agent.Handlers.DNS).
func (v *VM) SetDNS(fn func(ctx context.Context, q []byte) ([]byte, error)) { v.dns.Store(&fn) }

// Pool keeps warm VMs. Safe for concurrent use.
type Pool struct {
	cfg     Config
	starter Starter
	nics    NICMaker
	logger  *slog.Logger
	key     string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	ready   []*VM
	filling int
	closed  bool
	taken   int // VMs handed out, for Stats
	waits   int // of them, VMs Take waited for
	misses  int // Takes of the pool's shape that found none
	// changed is closed whenever a fill ends, kick to end the delay of
	// the fills that wait (each then made anew).
	changed, kick chan struct{}
}

// New returns a pool and starts filling it in the background (the first
// fill waits for the shape's template). nics may be nil when the shape
// has no NICs. InvalidArgument without Dir, or with NICs and no nics;
// a pool of Size 0, or whose shape has no template key, stays empty.
func New(cfg Config, starter Starter, nics NICMaker, logger *slog.Logger) (*Pool, error) {
	p := &Pool{cfg: cfg, starter: starter, nics: nics, logger: logger.With("component", "warmpool"),
		changed: make(chan struct{}), kick: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if cfg.Size <= 0 {
		return p, nil
	}
	if cfg.Dir == "" {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "no directory")
	}
	if len(cfg.Shape.NICs) > 0 && nics == nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "a shape with NICs needs a NIC maker")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("warmpool: %w", err)
	}
	key, ok := starter.Key(cfg.Shape)
	if !ok {
		p.logger.Info("no template key for the warm shape; pool off")
		return p, nil
	}
	p.key = key
	p.mu.Lock()
	p.refillLocked(0)
	p.mu.Unlock()
	return p, nil
}

// Key is the template key of the pool's shape; "" when the pool is off.
func (p *Pool) Key() string { return p.key }

// Take hands out a warm VM whose shape is spec's — the same template key
// (vmtemplate.Starter.Key) and the same disk slots (ReadOnly, Serial) —
// or false when none can be had. With none ready but one being restored
// (or waiting to be), it waits for that one, bounded by ctx and MaxWait:
// its restore is under way, so it comes sooner than a VM restored anew.
//
// The VM that replaces a taken one is restored once the caller says its
// start is done (Started), or after RefillDelay: a restore is CPU-bound,
// and on a small host it slows the claimed VM's own start (measured
// under TCG, 2 cores: a busybox `true` created, run, removed 1.1 s median with
// the refill at once, its claim, setup and process start each ~1.5×
// slower, against 0.8 s with the refill after the start).
//
// Take, Started, Stats and Close may be called on a nil *Pool, which has
// no VMs.
func (p *Pool) Take(ctx context.Context, spec hypervisor.Spec) (*VM, bool) {
	if p == nil || p.key == "" {
		return nil, false
	}
	if key, ok := p.starter.Key(spec); !ok || key != p.key || !sameSlots(spec.Disks, p.cfg.Shape.Disks) {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, MaxWait)
	defer cancel()
	waited := false
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed {
		for len(p.ready) > 0 {
			v := p.ready[0]
			p.ready = p.ready[1:]
			select {
			case <-v.VM.Done():
				continue // ended while warm; its watcher cleans it up
			default:
			}
			p.taken++
			if waited {
				p.waits++
			}
			p.refillLocked(RefillDelay)
			if p.nics != nil {
				// The taps are the caller's now (Join names them); the
				// warm owner's entry goes.
				p.nics.LeaveAll(v.Name)
			}
			return v, true
		}
		if p.filling == 0 || waited {
			break
		}
		// Wait for the fill in progress, now if it was delayed.
		p.kickLocked()
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		}
		p.mu.Lock()
		waited = ctx.Err() == nil
		if !waited {
			break
		}
	}
	p.misses++
	p.refillLocked(0)
	return nil, false
}

// Started tells the pool that the start of a container that took a VM
// has done its guest work: the replacement may be restored now.
func (p *Pool) Started() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.kickLocked()
	p.mu.Unlock()
}

// kickLocked ends the delay of the fills that wait. Caller holds p.mu.
func (p *Pool) kickLocked() {
	close(p.kick)
	p.kick = make(chan struct{})
}

// MaxWait bounds how long Take waits for a warm VM being restored.
const MaxWait = 10 * time.Second

// RefillDelay bounds how long the replacement of a taken VM waits for
// Started.
const RefillDelay = 3 * time.Second

// sameSlots reports whether two disk lists have the same slots.
func sameSlots(a, b []hypervisor.Disk) bool {
	return slices.EqualFunc(a, b, func(x, y hypervisor.Disk) bool { return x.ReadOnly == y.ReadOnly && x.Serial == y.Serial })
}

// Stats are the pool's counters.
type Stats struct {
	// Size is the pool's size (0: off); Ready VMs now, VMs being
	// restored now; since New: VMs handed out, of them those a Take
	// waited for, and Takes of the pool's shape that found none.
	Size, Ready, Filling, Taken, Waits, Misses int
}

// Stats reports the pool's counters.
func (p *Pool) Stats() Stats {
	if p == nil {
		return Stats{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	size := p.cfg.Size
	if p.key == "" {
		size = 0
	}
	return Stats{Size: size, Ready: len(p.ready), Filling: p.filling, Taken: p.taken, Waits: p.waits, Misses: p.misses}
}

// refillLocked starts restores until ready and filling VMs make Size,
// each after delay unless kicked first. Caller holds p.mu.
func (p *Pool) refillLocked(delay time.Duration) {
	for !p.closed && len(p.ready)+p.filling < p.cfg.Size {
		p.filling++
		p.wg.Add(1)
		go p.fill(delay, p.kick)
	}
}

// fill restores one warm VM and adds it to the ready list, after delay
// or once kick is closed.
func (p *Pool) fill(delay time.Duration, kick <-chan struct{}) {
	defer p.wg.Done()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-kick:
		case <-p.ctx.Done():
		}
		t.Stop()
	}
	v, err := p.make(p.ctx)
	p.mu.Lock()
	p.filling--
	close(p.changed)
	p.changed = make(chan struct{})
	if err != nil {
		p.mu.Unlock()
		if p.ctx.Err() == nil {
			// No retry loop: the next Take asks for a fill again.
			p.logger.Warn("warm VM not made", "err", err)
		}
		return
	}
	if p.closed {
		p.mu.Unlock()
		p.end(v)
		return
	}
	p.ready = append(p.ready, v)
	p.mu.Unlock()
	p.wg.Add(1)
	go p.watch(v)
}

// watch removes a ready VM that ends before it is taken.
func (p *Pool) watch(v *VM) {
	defer p.wg.Done()
	select {
	case <-v.VM.Done():
	case <-p.ctx.Done():
		return
	}
	p.mu.Lock()
	i := slices.Index(p.ready, v)
	if i >= 0 {
		p.ready = slices.Delete(p.ready, i, i+1)
	}
	p.mu.Unlock()
	if i >= 0 {
		p.logger.Warn("warm VM ended before use", "vm", v.Name, "err", v.VM.Status().Err)
		p.end(v)
	}
}

// make restores one warm VM: its runtime directory, taps, the restore
// and the guest session. On error nothing of it is left.
func (p *Pool) make(ctx context.Context) (*VM, error) {
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("warmpool: %w", err)
	}
	v := &VM{Name: "w" + hex.EncodeToString(id)[:11], key: p.key}
	v.Dir = filepath.Join(p.cfg.Dir, v.Name)
	if err := os.MkdirAll(v.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("warmpool: %w", err)
	}
	spec := p.cfg.Shape
	spec.Name, spec.RuntimeDir = v.Name, v.Dir
	spec.NICs = make([]hypervisor.NIC, len(p.cfg.Shape.NICs))
	fail := func(err error) (*VM, error) {
		for _, n := range spec.NICs {
			if n.File != nil {
				n.File.Close()
			}
		}
		p.end(v)
		return nil, err
	}
	for i := range spec.NICs {
		nic, err := p.nics.NewNIC(ctx, v.Name)
		if err != nil {
			return fail(err)
		}
		spec.NICs[i].File = nic.File
		v.Taps = append(v.Taps, nic.Name)
	}
	start := time.Now()
	vm, err := p.starter.StartWarm(ctx, spec)
	for _, n := range spec.NICs {
		n.File.Close() // the VMM holds its own copies
	}
	spec.NICs = nil
	if err != nil {
		return fail(err)
	}
	v.VM = vm
	g, err := agent.DialWith(ctx, vm.Channel(), agent.Handlers{DNS: func(ctx context.Context, q []byte) ([]byte, error) {
		if fn := v.dns.Load(); fn != nil {
			return (*fn)(ctx, q)
		}
		return nil, portlayer.Errorf(portlayer.ClassUnavailable, "VM not claimed")
	}})
	if err != nil {
		return fail(fmt.Errorf("warmpool: guest did not answer: %w", err))
	}
	v.Guest = g
	p.logger.Info("warm VM ready", "vm", v.Name, "vm_pid", vm.Pid(), "took", time.Since(start).Round(time.Millisecond))
	return v, nil
}

// end kills a warm VM nobody took and removes what it had.
func (p *Pool) end(v *VM) {
	if v.Guest != nil {
		v.Guest.Close()
	}
	if v.VM != nil {
		_ = v.VM.Kill()
		<-v.VM.Done()
	}
	if p.nics != nil {
		p.nics.LeaveAll(v.Name)
	}
	_ = os.RemoveAll(v.Dir)
}

// Close ends the fills in progress and every warm VM not taken; VMs
// already taken are not touched. Idempotent.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	ready := p.ready
	p.ready = nil
	p.mu.Unlock()
	p.cancel()
	for _, v := range ready {
		p.end(v)
	}
	p.wg.Wait()
}

// Sweep ends the warm VMs a previous daemon left unclaimed in dir and
// removes their directories: every directory named as a warm VM for
// which keep (given its path) is false. A VM that still runs is found
// through adopter (nil: the directories are only removed). Call it
// before New on the same dir.
func Sweep(ctx context.Context, dir string, adopter hypervisor.Adopter, keep func(dir string) bool, logger *slog.Logger) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, e := range es {
		name := e.Name()
		path := filepath.Join(dir, name)
		if !e.IsDir() || !strings.HasPrefix(name, "w") || len(name) != 12 || keep(path) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if adopter != nil {
				if vm, err := adopter.Adopt(ctx, hypervisor.Spec{Name: name, RuntimeDir: path}); err == nil {
					logger.Info("ending a warm VM a previous daemon left", "component", "warmpool", "vm", name, "vm_pid", vm.Pid())
					_ = vm.Kill()
					<-vm.Done()
				}
			}
			_ = os.RemoveAll(path)
		}()
	}
	wg.Wait()
}
