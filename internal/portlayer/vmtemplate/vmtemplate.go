// Package vmtemplate starts container VMs from templates instead of
// booting them: for each VM shape (kernel, initramfs, memory, vCPUs, the
// number of disks, NICs and shares: hypervisor.Templater.TemplateKey) it
// boots one guest as a template, saves it once the guest waits for its
// wake (package agent, wire's template messages), and restores every
// later VM of that shape from it, waking each with its own entropy, clock
// and NIC identities. A VM whose template cannot be made or restored is
// booted cold, with a warning in the log: a template never fails a start.
//
// On-disk layout under Config.Dir (the VCH's own, never shared):
//
//	<key>/              one template (the driver's files: RAM, device state)
//	<key[:12]>.run/     the template VM's runtime files while it is built
//
// Config.Dir is emptied when a Starter is made, so a template never
// outlives the daemon, kernel, initramfs, tether or QEMU it was made
// with; running VMs restored from a removed template keep their memory.
//
// What it does not own: the VMs it starts (the caller supervises them),
// the driver's template format, or the guest protocol.
package vmtemplate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// Config configures a Starter.
type Config struct {
	// Enabled restores VMs from templates; false boots every VM cold
	// (no memory shared between VMs). Default false; the daemon's
	// --vm-templates sets it (on by default there).
	Enabled bool `toml:"enabled" json:"enabled"`
	// Dir holds the templates; created if missing, emptied at start.
	Dir string `toml:"dir" json:"dir"`
	// BuildTimeout bounds one template build (a boot and a save);
	// default 90 s.
	BuildTimeout time.Duration `toml:"build_timeout" json:"build_timeout"`
	// WakeTimeout bounds a restored guest's answer to its wake, after
	// which it is killed and the VM booted cold; default 20 s.
	WakeTimeout time.Duration `toml:"wake_timeout" json:"wake_timeout"`
}

// Defaults, each with its reason.
const (
	// defaultBuildTimeout: a template build is one TCG boot (~5 s) and a
	// save (~0.1 s); a loaded 2-core host may take many times that.
	defaultBuildTimeout = 90 * time.Second
	// defaultWakeTimeout: a wake takes ~0.4 s under TCG (module loads and
	// the root mount); beyond this the restore is taken for broken.
	defaultWakeTimeout = 20 * time.Second
	// retryAfter is how long a shape whose template could not be built
	// boots cold before the build is tried again.
	retryAfter = 5 * time.Minute
	// MaxTemplates is how many templates a VCH keeps at once; building
	// one more removes the least recently used. Each holds its guest's
	// touched RAM on disk and in the page cache (~130 MiB for a 256 MiB
	// busybox guest), and a VCH whose users pick many sizes (-m, --cpus)
	// must not grow without bound. VMs restored from a removed template
	// keep running: their mapping holds the file.
	MaxTemplates = 8
)

// Starter starts VMs, from templates where it can. Safe for concurrent use.
type Starter struct {
	cfg    Config
	driver hypervisor.Driver
	tp     hypervisor.Templater // nil: the driver has no templates
	logger *slog.Logger

	ctx    context.Context // cancelled by Close: ends builds
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	shapes map[string]*shape // by template key
}

// shape is one template key's state.
type shape struct {
	building chan struct{} // closed when the running build ends; nil if none
	ready    bool          // a saved template is in its directory
	failedAt time.Time     // last failed build, or second failed restore in a row
	failures int           // restores that failed since the last one that worked
	lastUsed time.Time     // last restore from it, or its build
}

// New returns a Starter for driver; with cfg.Enabled it empties (or
// creates) cfg.Dir. Templates stay off when the driver cannot make them
// (hypervisor.Capabilities.Templates). InvalidArgument without cfg.Dir
// while enabled.
func New(cfg Config, driver hypervisor.Driver, logger *slog.Logger) (*Starter, error) {
	if cfg.BuildTimeout == 0 {
		cfg.BuildTimeout = defaultBuildTimeout
	}
	if cfg.WakeTimeout == 0 {
		cfg.WakeTimeout = defaultWakeTimeout
	}
	s := &Starter{cfg: cfg, driver: driver, logger: logger.With("component", "vmtemplate"), shapes: map[string]*shape{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !cfg.Enabled {
		return s, nil
	}
	if cfg.Dir == "" {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "no template directory")
	}
	if tp, ok := driver.(hypervisor.Templater); ok && driver.Capabilities().Templates {
		s.tp = tp
	} else {
		s.logger.Warn("the hypervisor driver cannot restore VMs from templates; every VM boots")
		return s, nil
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("vmtemplate: clear %s: %w", cfg.Dir, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("vmtemplate: %w", err)
	}
	return s, nil
}

// Enabled reports whether VMs are restored from templates (for a front
// end's system information).
func (s *Starter) Enabled() bool { return s.tp != nil }

// Close ends template builds in progress and waits for them; VMs already
// started are not touched. Idempotent.
func (s *Starter) Close() {
	s.cancel()
	s.wg.Wait()
}

// templateSpec is spec as its template knows it: booted as a template.
func templateSpec(spec hypervisor.Spec) hypervisor.Spec {
	if spec.Cmdline == "" {
		spec.Cmdline = wire.TemplateCmdline
	} else {
		spec.Cmdline += " " + wire.TemplateCmdline
	}
	return spec
}

// Start starts a VM for spec and returns once its guest channel carries
// tether's session (agent.Dial works on it), as hypervisor.Driver
// Start does for a booted VM. With templates on, the VM is restored from
// its shape's template, which is built first (the caller waits, bounded
// by ctx) when there is none; any failure of the template path is logged
// and the VM booted instead. Errors are Start's.
func (s *Starter) Start(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	if s.tp == nil {
		return s.driver.Start(ctx, spec)
	}
	tspec := templateSpec(spec)
	key, err := s.tp.TemplateKey(tspec)
	if err != nil {
		s.logger.Warn("no template key; booting", "vm", spec.Name, "err", err)
		return s.driver.Start(ctx, spec)
	}
	if !s.ensure(ctx, key, tspec) {
		return s.driver.Start(ctx, spec)
	}
	start := time.Now()
	vm, err := s.restore(ctx, key, tspec)
	if err == nil {
		s.mu.Lock()
		s.shapes[key].failures = 0
		s.mu.Unlock()
		s.logger.Info("vm restored", "vm", spec.Name, "key", key, "took", time.Since(start).Round(time.Millisecond))
		return vm, nil
	}
	if ctx.Err() != nil {
		return nil, portlayer.Errorf(portlayer.ClassUnavailable, "start %s: %w", spec.Name, ctx.Err())
	}
	s.logger.Warn("restore from template failed; booting, and the template is made again", "vm", spec.Name, "key", key, "err", err)
	s.discard(key)
	return s.driver.Start(ctx, spec)
}

// Key is the template key of spec's shape; false when templates are off
// or the key cannot be made.
func (s *Starter) Key(spec hypervisor.Spec) (string, bool) {
	if s.tp == nil {
		return "", false
	}
	key, err := s.tp.TemplateKey(templateSpec(spec))
	return key, err == nil
}

// StartWarm restores a warm VM of spec's shape from its template (built
// first if there is none, the caller waiting, bounded by ctx) and wakes
// it deferred (agent.WakeDeferred): it is nobody's yet, runs on
// placeholder disks and gets its container's disks and wake later
// (hypervisor.DiskPlugger, agent.Client.Claim). spec's Disks give only
// the slots' shape; its NICs and Shares are the VM's own. Returned once
// the guest serves sessions. FailedPrecondition if templates are off,
// the driver cannot restore warm VMs, or no template of this shape can
// be had now; otherwise Restore's and Wake's errors (the VM is killed).
func (s *Starter) StartWarm(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	wr, ok := s.driver.(hypervisor.WarmRestorer)
	if s.tp == nil || !ok || !s.driver.Capabilities().WarmRestore {
		return nil, portlayer.Errorf(portlayer.ClassFailedPrecondition, "no warm restore here")
	}
	tspec := templateSpec(spec)
	key, err := s.tp.TemplateKey(tspec)
	if err != nil {
		return nil, portlayer.Errorf(portlayer.ClassFailedPrecondition, "template for %s: %w", spec.Name, err)
	}
	if !s.ensure(ctx, key, tspec) {
		return nil, portlayer.Errorf(portlayer.ClassFailedPrecondition, "no template for %s now", spec.Name)
	}
	tspec.NICs = append([]hypervisor.NIC(nil), tspec.NICs...)
	for i := range tspec.NICs {
		tspec.NICs[i].MAC = wire.TemplateMAC(i)
	}
	vm, err := wr.RestoreWarm(ctx, tspec, filepath.Join(s.cfg.Dir, key))
	if err != nil {
		if ctx.Err() == nil {
			s.discard(key)
		}
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WakeTimeout)
	defer cancel()
	if err := agent.WakeDeferred(wctx, vm.Channel()); err != nil {
		_ = vm.Kill()
		<-vm.Done()
		if ctx.Err() == nil {
			s.discard(key)
		}
		return nil, err
	}
	return vm, nil
}

// Prepare builds the template for spec's shape in the background if
// there is none yet (the daemon prepares its most common shape at start).
func (s *Starter) Prepare(spec hypervisor.Spec) {
	if s.tp == nil {
		return
	}
	tspec := templateSpec(spec)
	key, err := s.tp.TemplateKey(tspec)
	if err != nil {
		s.logger.Warn("no template key", "err", err)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.ensure(s.ctx, key, tspec)
	}()
}

// restore restores a VM of tspec from key's template and wakes it.
func (s *Starter) restore(ctx context.Context, key string, tspec hypervisor.Spec) (hypervisor.VM, error) {
	vm, err := s.tp.Restore(ctx, tspec, filepath.Join(s.cfg.Dir, key))
	if err != nil {
		return nil, err
	}
	macs := make([]string, len(tspec.NICs))
	for i, n := range tspec.NICs {
		macs[i] = n.MAC
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WakeTimeout)
	defer cancel()
	if err := agent.Wake(wctx, vm.Channel(), macs); err != nil {
		_ = vm.Kill()
		<-vm.Done()
		if st := vm.Status(); st.Err != nil {
			return nil, fmt.Errorf("%w (VMM: %w)", err, st.Err)
		}
		return nil, err
	}
	return vm, nil
}

// ensure returns true once key's template is ready, building it if no
// build runs (a build in progress is waited for, bounded by ctx); false
// if it cannot be had now.
func (s *Starter) ensure(ctx context.Context, key string, tspec hypervisor.Spec) bool {
	for {
		s.mu.Lock()
		sh := s.shapes[key]
		if sh == nil {
			sh = &shape{}
			s.shapes[key] = sh
		}
		if sh.ready {
			sh.lastUsed = time.Now()
			s.mu.Unlock()
			return true
		}
		if sh.building != nil {
			wait := sh.building
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return false
			}
		}
		if !sh.failedAt.IsZero() && time.Since(sh.failedAt) < retryAfter {
			s.mu.Unlock()
			return false
		}
		done := make(chan struct{})
		sh.building = done
		s.evictLocked()
		s.mu.Unlock()

		// The build is the VCH's, not the request's: a caller that
		// gives up does not waste it for the next.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := s.build(key, tspec)
			s.mu.Lock()
			sh.building = nil
			if err != nil {
				sh.failedAt = time.Now()
			} else {
				sh.ready, sh.failedAt, sh.lastUsed = true, time.Time{}, time.Now()
			}
			s.mu.Unlock()
			close(done)
			if err != nil && !errors.Is(err, context.Canceled) {
				s.logger.Warn("template build failed; VMs of this shape boot", "key", key, "err", err)
			}
		}()
	}
}

// build boots tspec as a template into Dir/key.
func (s *Starter) build(key string, tspec hypervisor.Spec) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.BuildTimeout)
	defer cancel()
	dir := filepath.Join(s.cfg.Dir, key)
	run := filepath.Join(s.cfg.Dir, key[:12]+".run") // short: it holds unix sockets
	for _, d := range []string{dir, run} {
		_ = os.RemoveAll(d)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("vmtemplate: %w", err)
		}
	}
	defer os.RemoveAll(run)
	tspec.Name = "tmpl-" + key[:12]
	tspec.RuntimeDir = run
	tspec.NICs = append([]hypervisor.NIC(nil), tspec.NICs...)
	for i := range tspec.NICs {
		tspec.NICs[i] = hypervisor.NIC{MAC: wire.TemplateMAC(i)}
	}
	start := time.Now()
	err := s.tp.SaveTemplate(ctx, tspec, dir, agent.AwaitTemplate)
	if err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	s.logger.Info("template built", "key", key, "memory_mib", tspec.MemoryMiB, "cpus", tspec.CPUs,
		"disks", len(tspec.Disks), "nics", len(tspec.NICs), "shares", len(tspec.Shares), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// discard forgets key's template after a failed restore, so the next VM
// of that shape makes it again; after a second failure in a row, VMs of
// that shape boot for retryAfter before the template is tried again.
func (s *Starter) discard(key string) {
	s.mu.Lock()
	if sh := s.shapes[key]; sh != nil && sh.building == nil && sh.ready {
		sh.ready = false
		sh.failures++
		if sh.failures >= 2 {
			sh.failedAt = time.Now()
		}
		_ = os.RemoveAll(filepath.Join(s.cfg.Dir, key))
	}
	s.mu.Unlock()
}

// evictLocked removes the least recently used ready templates while a
// build would make more than MaxTemplates (ready or being built). Caller
// holds s.mu.
func (s *Starter) evictLocked() {
	for {
		n := 0
		var oldest string
		for key, sh := range s.shapes {
			if sh.ready || sh.building != nil {
				n++
			}
			if sh.ready && (oldest == "" || sh.lastUsed.Before(s.shapes[oldest].lastUsed)) {
				oldest = key
			}
		}
		if n <= MaxTemplates || oldest == "" {
			return
		}
		s.shapes[oldest].ready = false
		_ = os.RemoveAll(filepath.Join(s.cfg.Dir, oldest))
		s.logger.Info("template removed (least recently used)", "key", oldest)
	}
}

// Count is the number of templates ready to restore from.
func (s *Starter) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sh := range s.shapes {
		if sh.ready {
			n++
		}
	}
	return n
}
