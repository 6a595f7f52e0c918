// Package compute runs containers as VMs: it owns container records (persisted
// in bbolt before they are acted on), each container's copy-on-write disk and
// runtime directory, and the lifecycle — create, start (boot the VM, set the
// guest up, start the process), stop, kill, wait, remove — plus the output
// hub behind attach and logs. It implements portlayer.Compute and
// portlayer.Interaction.
//
// On-disk layout under Config.Root:
//
//	containers.db                bbolt: one JSON record per container ID
//	containers/<id>/rw.qcow2     writable disk over the image's rootfs disk
//	containers/<id>/json.log     output, json-file log format
//	run/<id[:12]>/               VMM runtime files (channel socket, console)
//	templates/                   VM templates, one directory per shape
//	warm/<name>/                 warm VMs' runtime files (package warmpool)
//
// What it does not own: images and rootfs disks (storage), VMM details (the
// hypervisor driver), the tether protocol (package agent).
package compute

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/vmtemplate"
	"github.com/vchproject/vch/internal/portlayer/warmpool"
)

// Config configures the compute service.
type Config struct {
	// Root is the directory compute owns; nothing is written outside it.
	Root string `toml:"root" json:"root"`
	// Kernel and Initrd are the guest boot files every container VM uses.
	Kernel string `toml:"kernel" json:"kernel"`
	Initrd string `toml:"initrd" json:"initrd"`
	// DefaultMemoryMiB is guest RAM when a container sets none; default 256.
	DefaultMemoryMiB int `toml:"default_memory_mib" json:"default_memory_mib"`
	// DefaultCPUs is vCPUs when a container sets none; default 1.
	DefaultCPUs int `toml:"default_cpus" json:"default_cpus"`
	// BootTimeout bounds boot to the guest agent's answer, counted from
	// the boot's admission (MaxConcurrentBoots); default 60 s.
	BootTimeout time.Duration `toml:"boot_timeout" json:"boot_timeout"`
	// MaxConcurrentBoots is how many container VMs may boot (or be
	// restored, or claimed) at once; starts beyond it wait their turn in
	// arrival order. 0 is the host's CPU count.
	MaxConcurrentBoots int `toml:"max_concurrent_boots" json:"max_concurrent_boots"`
	// ChannelName is the guest channel's virtio-serial port name.
	ChannelName string `toml:"channel_name" json:"channel_name"`
	// Network gives container VMs their NICs, addresses, published ports
	// and DNS, and Networks names networks for connect/disconnect; nil:
	// every container has loopback only.
	Network  portlayer.NetworkPlumber `toml:"-" json:"-"`
	Networks portlayer.Networks       `toml:"-" json:"-"`
	// Events receives lifecycle events; nil drops them.
	Events Publisher `toml:"-" json:"-"`
	// Volumes is the volume store behind volume mounts; nil refuses
	// specs with volume mounts (InvalidArgument).
	Volumes portlayer.Volumes `toml:"-" json:"-"`
	// ShareKernel and ShareInitrd boot the VMs of containers with host
	// bind mounts: a kernel with virtio-9p (Debian's generic one). Empty
	// refuses bind mounts (NotImplemented).
	ShareKernel string `toml:"share_kernel" json:"share_kernel"`
	ShareInitrd string `toml:"share_initrd" json:"share_initrd"`
	// BindRoots are the absolute host directories under which bind mount
	// sources may lie ("/" allows any); empty refuses bind mounts
	// (PermissionDenied).
	BindRoots []string `toml:"bind_roots" json:"bind_roots"`
	// VMTemplates restores container VMs from per-shape templates under
	// Root/templates instead of booting each (package vmtemplate);
	// false boots every VM cold and shares no memory between VMs.
	VMTemplates bool `toml:"vm_templates" json:"vm_templates"`
	// WarmVMs is how many VMs of the common shape (default memory and
	// vCPUs, a root disk over an image disk, one network and the spare
	// NICs) are kept restored and woken ahead of need under Root/warm
	// (package warmpool), so a start takes one instead of restoring;
	// 0 keeps none. Needs VMTemplates.
	WarmVMs int `toml:"warm_vms" json:"warm_vms"`
}

// Publisher receives the events compute emits (package events implements
// it). Publish must not block.
type Publisher interface {
	Publish(portlayer.Event)
}

// eventFunc publishes a container event (Service.event); the areas that
// emit events hold it instead of the service.
type eventFunc func(action string, rec portlayer.Container, extra map[string]string)

// lookupFunc resolves a container as Service.lookup does (it takes the
// service's lock, so a caller must not hold a container's).
type lookupFunc func(idOrName string) (*container, error)

// event publishes a container event with its attributes: name, image
// (the reference the user gave) and any extra ones.
func (s *Service) event(action string, rec portlayer.Container, extra map[string]string) {
	if s.cfg.Events == nil {
		return
	}
	attrs := map[string]string{"name": rec.Spec.Name, "image": rec.Spec.ImageRef}
	if attrs["image"] == "" {
		attrs["image"] = rec.Spec.Image
	}
	for k, v := range extra {
		attrs[k] = v
	}
	s.cfg.Events.Publish(portlayer.Event{Type: "container", Action: action, ID: rec.ID, Attributes: attrs})
}

// Defaults, each with its reason.
const (
	// defaultMemoryMiB: enough for a Debian kernel plus a small workload;
	// QEMU's host RSS stays near 200 MiB (DESIGN.md).
	defaultMemoryMiB = 256
	// defaultBootTimeout: TCG boots take ~2–5 s; a loaded 2-core host may
	// take ten times that.
	defaultBootTimeout = 60 * time.Second
	// defaultStopTimeout is how long a stop waits for the stop signal to
	// end the process when neither the call nor the container sets it:
	// long enough for most processes to shut down cleanly, short enough
	// that stopping one that ignores the signal does not hang for long.
	defaultStopTimeout = 10 * time.Second
	// powerOffTimeout bounds the wait for a guest to power off after it
	// acknowledged the request; then the VM is killed.
	powerOffTimeout = 10 * time.Second
)

// Service implements portlayer.Compute and portlayer.Interaction, and
// the port layer's optional areas (Pauser, Restarter, Monitor, Updater,
// NetworkConnector; Execs and Archives through their own types). It
// owns the container table and every container's lifecycle (create,
// start, supervise, stop, kill, remove; lifecycle.go) and composes the
// areas that can be read alone:
//
//   - networking (network.go): a container VM's NICs, its networks and
//     published ports, connect and disconnect while it runs;
//   - monitor (monitor.go): top and stats of a running guest;
//   - updater (update.go): changes to a container after its creation;
//   - Execs (exec.go): processes beside the main one, each with its
//     own lifecycle (execState);
//   - Archives (archive.go): files copied in and out, export, changes.
//
// networking, monitor and updater hold only what they use; Execs and
// Archives start and stop guests through the service. Service's
// exported methods of an area delegate to it.
type Service struct {
	cfg    Config
	driver hypervisor.Driver
	disks  diskPlace
	vms    *vmtemplate.Starter // starts VMs: restored from templates, or booted
	warm   *warmpool.Pool      // warm VMs of the common shape
	boots  *bootGate           // admits boots, MaxConcurrentBoots at once
	rootfs portlayer.RootfsStore
	logger *slog.Logger
	base   *slog.Logger // the logger New was given
	recs   *records

	mu         sync.Mutex
	containers map[string]*container  // by ID
	execs      *Execs                 // the exec area
	net        *networking            // the network area
	mon        *monitor               // the monitoring area
	upd        *updater               // the update area
	bindRoots  []string               // Config.BindRoots with links resolved
	claims     map[string]volumeClaim // volumes held by a container's VM, by container ID
	claimSeq   uint64
	closed     bool
	done       chan struct{} // closed by Close
	wg         sync.WaitGroup
}

// New opens (or creates) the compute state under cfg.Root, reloads every
// container record and takes back the container VMs an earlier daemon
// left running (a daemon restart, an upgrade say, does not stop
// containers): each VM whose VMM still runs is adopted
// (hypervisor.Adopter), its guest channel reconnected, its network
// endpoints and published ports restored, and its main process's
// output resumed where the log ends. A container whose VM is gone is
// recorded exited with code 255 (and a die event). Then the containers
// whose restart policy says so are started again, in the background.
// New returns once every adoption has ended, each bounded by the
// driver's connect bound and cfg.BootTimeout. InvalidArgument for a bad
// config.
func New(cfg Config, driver hypervisor.Driver, rootfs portlayer.RootfsStore, logger *slog.Logger) (*Service, error) {
	store, _ := driver.(hypervisor.DiskStore)
	// A store's boot file may hold the initramfs (vSphere's ISO).
	if cfg.Root == "" || cfg.Kernel == "" || (cfg.Initrd == "" && store == nil) || cfg.ChannelName == "" {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "root, kernel, initrd and channel name are required")
	}
	if cfg.DefaultMemoryMiB == 0 {
		cfg.DefaultMemoryMiB = defaultMemoryMiB
	}
	if cfg.DefaultCPUs == 0 {
		cfg.DefaultCPUs = 1
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = defaultBootTimeout
	}
	if cfg.MaxConcurrentBoots <= 0 {
		cfg.MaxConcurrentBoots = runtime.NumCPU()
	}
	for _, d := range []string{cfg.Root, filepath.Join(cfg.Root, "containers"), filepath.Join(cfg.Root, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("compute: %w", err)
		}
	}
	if cfg.DefaultMemoryMiB < hypervisor.MinMemoryMiB || cfg.DefaultMemoryMiB > hypervisor.MaxMemoryMiB {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "default container memory %d MiB outside %d..%d MiB", cfg.DefaultMemoryMiB, hypervisor.MinMemoryMiB, hypervisor.MaxMemoryMiB)
	}
	if cfg.DefaultCPUs < 1 || cfg.DefaultCPUs > hypervisor.MaxCPUs {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "default CPUs %d outside 1..%d", cfg.DefaultCPUs, hypervisor.MaxCPUs)
	}
	bindRoots, err := resolveBindRoots(cfg.BindRoots)
	if err != nil {
		return nil, err
	}
	recs, err := openRecords(filepath.Join(cfg.Root, "containers.db"))
	if err != nil {
		return nil, err
	}
	vms, err := vmtemplate.New(vmtemplate.Config{Enabled: cfg.VMTemplates, Dir: filepath.Join(cfg.Root, TemplatesDir)}, driver, logger)
	if err != nil {
		recs.close()
		return nil, err
	}
	s := &Service{cfg: cfg, driver: driver, disks: diskPlace{root: cfg.Root, store: store}, vms: vms, rootfs: rootfs, logger: logger.With("component", "compute"), base: logger, recs: recs,
		boots: newBootGate(cfg.MaxConcurrentBoots), containers: map[string]*container{}, claims: map[string]volumeClaim{}, bindRoots: bindRoots, done: make(chan struct{})}
	all, err := recs.all()
	if err != nil {
		recs.close()
		return nil, err
	}
	s.execs = &Execs{lookup: s.lookup, event: s.event, stopping: s.stopping, logger: s.logger, byID: map[string]*execRec{}}
	s.net = &networking{plumber: cfg.Network, networks: cfg.Networks, recs: recs, lookup: s.lookup, logger: s.logger}
	s.mon = &monitor{lookup: s.lookup}
	s.upd = &updater{lookup: s.lookup, recs: recs, event: s.event, defaultMemoryMiB: cfg.DefaultMemoryMiB, defaultCPUs: cfg.DefaultCPUs}
	for _, rec := range all {
		s.containers[rec.ID] = s.newContainer(rec)
	}
	s.sweepLeftovers()
	toStart := s.restore()
	vms.Prepare(s.commonShape())
	if err := s.openWarmPool(); err != nil {
		s.logger.Warn("no warm VMs", "err", err)
	}
	s.startAtBoot(toStart)
	s.wg.Add(1)
	go s.watchDisk()
	return s, nil
}

// sweepLeftovers deletes the files of containers that have no record: a
// removal deletes the record first, so a daemon killed in the middle of
// one leaves the container's directory (its disks, its log) and its run
// directory behind, and the next daemon finishes the removal.
func (s *Service) sweepLeftovers() {
	// Archives written for a transfer disk by a daemon that was cut short.
	_ = os.RemoveAll(filepath.Join(s.cfg.Root, transferDir))
	ids := map[string]bool{}
	short := map[string]bool{}
	for id := range s.containers {
		ids[id], short[id[:12]] = true, true
	}
	for _, d := range []struct {
		dir  string
		mine map[string]bool
	}{{filepath.Join(s.cfg.Root, "containers"), ids}, {filepath.Join(s.cfg.Root, "run"), short}} {
		entries, _ := os.ReadDir(d.dir)
		for _, e := range entries {
			if d.mine[e.Name()] {
				continue
			}
			if err := os.RemoveAll(filepath.Join(d.dir, e.Name())); err != nil {
				s.logger.Warn("leftover of a removed container", "path", filepath.Join(d.dir, e.Name()), "err", err)
				continue
			}
			s.logger.Info("removed the leftover of a container whose removal was cut short", "path", filepath.Join(d.dir, e.Name()))
		}
	}
}

// WarmDir is the directory under Config.Root that holds the warm VMs'
// runtime directories (package warmpool).
const WarmDir = "warm"

// openWarmPool ends the warm VMs a previous daemon left unclaimed and
// starts the pool of Config.WarmVMs (none without templates).
func (s *Service) openWarmPool() error {
	dir := filepath.Join(s.cfg.Root, WarmDir)
	keep := map[string]bool{}
	s.mu.Lock()
	for id := range s.containers {
		if run, err := s.recs.run(id); err == nil && run.VMDir != "" {
			keep[run.VMDir] = true
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), orphanTimeout)
	warmpool.Sweep(ctx, dir, s.adopter(), func(d string) bool { return keep[d] }, s.base)
	cancel()
	size := s.cfg.WarmVMs
	if !s.vms.Enabled() {
		size = 0
	}
	shape := s.commonShape()
	shape.Disks = []hypervisor.Disk{{Serial: wire.RootSerial}, {ReadOnly: true, Serial: wire.BaseSerial}}
	var nics warmpool.NICMaker
	if s.cfg.Network != nil {
		nics = s.cfg.Network
	}
	var starter warmpool.Starter = s.vms
	if blank, ok := s.rootfs.(portlayer.BlankRootfsStore); ok {
		starter = rehearsingStarter{Starter: s.vms, driver: s.driver, blank: blank, logger: s.logger}
	}
	pool, err := warmpool.New(warmpool.Config{Size: size, Dir: dir, Shape: shape}, starter, nics, s.base)
	if err != nil {
		s.warm, _ = warmpool.New(warmpool.Config{}, s.vms, nil, s.base)
		return err
	}
	s.warm = pool
	return nil
}

// rehearsingStarter starts warm VMs whose root disk slot starts as a
// copy-on-write disk (rehearsal.qcow2 in the VM's runtime directory) over
// an empty filesystem, the same kind of disk a container's root is, on
// which the warm guest rehearses its claim's root mount before any
// container exists. Without that disk the slot is a plain placeholder
// and only the device's bind is rehearsed.
type rehearsingStarter struct {
	*vmtemplate.Starter
	driver hypervisor.Driver
	blank  portlayer.BlankRootfsStore
	logger *slog.Logger
}

// StartWarm implements warmpool.Starter.
func (r rehearsingStarter) StartWarm(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	if len(spec.Disks) > 0 && !spec.Disks[0].ReadOnly {
		base, err := r.blank.BlankRootfs(ctx)
		if err == nil {
			var d hypervisor.Disk
			d, err = r.driver.CreateOverlay(ctx, hypervisor.Disk{Path: base, Format: "raw", ReadOnly: true}, filepath.Join(spec.RuntimeDir, "rehearsal.qcow2"), 0)
			if err == nil {
				spec.Disks = append([]hypervisor.Disk(nil), spec.Disks...)
				spec.Disks[0].Path, spec.Disks[0].Format = d.Path, d.Format
			}
		}
		if err != nil {
			r.logger.Warn("warm VM without a root rehearsal disk", "vm", spec.Name, "err", err)
		}
	}
	return r.Starter.StartWarm(ctx, spec)
}

// WarmStats reports the warm VM pool's counters.
func (s *Service) WarmStats() warmpool.Stats { return s.warm.Stats() }

// TemplatesDir is the directory under Config.Root that holds the VM
// templates (package vmtemplate): a cache the service makes again at
// every start.
const TemplatesDir = "templates"

// VMTemplates reports whether container VMs are restored from templates
// (Config.VMTemplates, and a driver that can).
func (s *Service) VMTemplates() bool { return s.vms.Enabled() }

// commonShape is the VM shape most containers have, whose template the
// service prepares at start: default memory and vCPUs, the default
// kernel, a root disk over an image disk, and one network with its spare
// NICs when there are networks.
func (s *Service) commonShape() hypervisor.Spec {
	spec := hypervisor.Spec{Kernel: s.cfg.Kernel, Initrd: s.cfg.Initrd, MemoryMiB: s.cfg.DefaultMemoryMiB, CPUs: s.cfg.DefaultCPUs,
		ChannelName: s.cfg.ChannelName, Disks: make([]hypervisor.Disk, 2)}
	if s.cfg.Network != nil {
		spec.NICs = make([]hypervisor.NIC, 1+SpareNICs)
	}
	return spec
}

// Close detaches from every container VM and closes the store: the VMs
// keep running, their records say so, and the next daemon on this root
// adopts them: a daemon restart does not stop containers. Pending
// restarts are left to the next daemon too. Close waits for starts in
// progress and for the supervisors to let go. Idempotent.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	all := s.allLocked()
	s.mu.Unlock()
	for _, c := range all {
		c.mu.Lock()
		g := c.guest
		c.mu.Unlock()
		if g != nil {
			g.Close()
		}
	}
	waited := make(chan struct{})
	go func() { s.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		s.logger.Warn("compute: close: supervisors still busy", "err", ctx.Err())
	}
	s.warm.Close()
	s.vms.Close()
	for _, c := range all {
		c.out.close()
	}
	return s.recs.close()
}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// imageID is an image's full ID, as MountImage's Source must be.
var imageID = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func newID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// allLocked is every container, in no order; s.mu is held.
func (s *Service) allLocked() []*container {
	all := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		all = append(all, c)
	}
	return all
}

// lookup resolves a full ID, a name (with or without a leading slash) or a
// unique ID prefix. NotFound / InvalidArgument (ambiguous prefix).
func (s *Service) lookup(idOrName string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookupLocked(idOrName)
}

func (s *Service) lookupLocked(idOrName string) (*container, error) {
	if idOrName == "" {
		return nil, portlayer.NoSuchContainer(idOrName)
	}
	if c, ok := s.containers[idOrName]; ok {
		return c, nil
	}
	name := strings.TrimPrefix(idOrName, "/")
	for _, c := range s.containers {
		if c.name() == name {
			return c, nil
		}
	}
	var found *container
	for id, c := range s.containers {
		if strings.HasPrefix(id, idOrName) {
			if found != nil {
				return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Kind: portlayer.KindContainer, ID: idOrName, Reason: portlayer.ReasonAmbiguous, Message: "container ID prefix " + idOrName + " matches several containers"}
			}
			found = c
		}
	}
	if found == nil {
		return nil, portlayer.NoSuchContainer(idOrName)
	}
	return found, nil
}

func (s *Service) nameTakenLocked(name, exceptID string) (string, bool) {
	for id, c := range s.containers {
		if id != exceptID && c.name() == name {
			return id, true
		}
	}
	return "", false
}

// checkVMSize refuses limits whose VM would pass the hypervisor's bounds
// (InvalidArgument naming the size); defaultMiB and defaultCPUs size a
// VM the spec does not size (Config.DefaultMemoryMiB, DefaultCPUs).
func checkVMSize(spec portlayer.ContainerSpec, defaultMiB, defaultCPUs int) error {
	if mem := spec.VMMemoryMiB(defaultMiB); mem > hypervisor.MaxMemoryMiB {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "a memory limit of %d bytes needs a VM of %d MiB, above the largest, %d MiB", spec.Limits.MemoryBytes, mem, hypervisor.MaxMemoryMiB)
	}
	if cpus := spec.VMCPUs(defaultCPUs); cpus > hypervisor.MaxCPUs {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "a CPU limit of %d nano CPUs needs %d vCPUs, above the most, %d", spec.Limits.NanoCPUs, cpus, hypervisor.MaxCPUs)
	}
	return nil
}

// Create implements portlayer.Compute.
func (s *Service) Create(ctx context.Context, spec portlayer.ContainerSpec) (portlayer.Container, error) {
	if len(spec.Args) == 0 {
		return portlayer.Container{}, portlayer.Invalid(portlayer.KindContainer, "Args", "", portlayer.ReasonRequired, "compute: no command to run")
	}
	if spec.MemoryMiB != 0 && (spec.MemoryMiB < hypervisor.MinMemoryMiB || spec.MemoryMiB > hypervisor.MaxMemoryMiB) {
		return portlayer.Container{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "memory %d MiB outside %d..%d MiB", spec.MemoryMiB, hypervisor.MinMemoryMiB, hypervisor.MaxMemoryMiB)
	}
	if spec.CPUs < 0 || spec.CPUs > hypervisor.MaxCPUs {
		return portlayer.Container{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "%d CPUs outside 1..%d", spec.CPUs, hypervisor.MaxCPUs)
	}
	if err := checkVMSize(spec, s.cfg.DefaultMemoryMiB, s.cfg.DefaultCPUs); err != nil {
		return portlayer.Container{}, err
	}
	if err := checkProcessSize(processFor(spec)); err != nil {
		return portlayer.Container{}, err
	}
	spec.Name = strings.TrimPrefix(spec.Name, "/")
	if spec.Name != "" && !validName.MatchString(spec.Name) {
		return portlayer.Container{}, invalidName(spec.Name)
	}
	if err := s.checkMounts(&spec); err != nil {
		return portlayer.Container{}, err
	}
	if err := checkRestartPolicy(spec); err != nil {
		return portlayer.Container{}, err
	}
	id := newID()
	dir := filepath.Join(s.cfg.Root, "containers", id)
	rec := portlayer.Container{ID: id, Created: time.Now().UTC(), Spec: spec, State: portlayer.State{Status: portlayer.StatusCreated}, LogPath: filepath.Join(dir, "json.log")}
	if rec.Spec.Hostname == "" {
		rec.Spec.Hostname = id[:12]
	}
	if rec.Spec.NoLog {
		rec.LogPath = ""
	}

	// Reserve the name and persist the record before preparing the disk.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return portlayer.Container{}, portlayer.Errorf(portlayer.ClassUnavailable, "shutting down")
	}
	if rec.Spec.Name == "" {
		// An unnamed container is named by its short ID.
		rec.Spec.Name = id[:12]
	}
	if other, taken := s.nameTakenLocked(rec.Spec.Name, ""); taken {
		s.mu.Unlock()
		return portlayer.Container{}, nameInUse(rec.Spec.Name, other)
	}
	c := s.newContainer(rec)
	c.phase = phaseCreating
	s.containers[id] = c
	s.mu.Unlock()

	volumesMade := false
	fail := func(err error) (portlayer.Container, error) {
		s.mu.Lock()
		delete(s.containers, id)
		s.mu.Unlock()
		if volumesMade {
			s.removeAnonymousVolumes(rec)
		}
		_ = os.RemoveAll(dir)
		return portlayer.Container{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(fmt.Errorf("compute: %w", err))
	}
	// The volumes are made once the record is reserved: the volume store
	// then sees them in use and cannot delete them under this create.
	if err := s.createVolumes(ctx, rec.Spec); err != nil {
		return fail(err)
	}
	volumesMade = true
	// Images a mount names are checked (and their disks made) once the
	// record is reserved too: the image store then sees them in use, so
	// a removal racing this create either comes first and fails it, or
	// is refused.
	for _, m := range rec.Spec.Mounts {
		if m.Type != portlayer.MountImage {
			continue
		}
		if _, err := s.rootfs.Rootfs(ctx, m.Source); err != nil {
			return fail(fmt.Errorf("compute: image mount at %s: %w", m.Target, err))
		}
	}
	base, err := s.rootfs.Rootfs(ctx, spec.Image)
	if err != nil {
		return fail(fmt.Errorf("compute: rootfs for %s: %w", spec.Image, err))
	}
	baseDisk, err := s.disks.base(ctx, base)
	if err != nil {
		return fail(fmt.Errorf("compute: image disk for %s: %w", spec.Image, err))
	}
	if _, err := s.driver.CreateOverlay(ctx, baseDisk, s.disks.rw(id).Path, 0); err != nil {
		return fail(fmt.Errorf("compute: writable disk: %w", err))
	}
	if err := s.recs.put(rec); err != nil {
		return fail(err)
	}
	c.mu.Lock()
	c.endPhase(phaseCreating)
	c.mu.Unlock()
	s.logger.Info("container created", "container", id, "name", rec.Spec.Name, "image", spec.Image)
	s.event("create", rec, nil)
	return rec, nil
}

// MaxProcessSpecBytes bounds a process's spec as sent to the guest (argv,
// environment, working dir, user; JSON-encoded), in bytes: it travels in
// one channel-open message, which for a guest of protocol v1 or v2 is an
// SSH packet, limited to 256 KiB (RFC 4253 §6.1 lets implementations cap
// them; x/crypto/ssh does). Protocol v3's frames allow more
// (link.MaxFrameBytes), but one limit for both keeps behaviour the same.
const MaxProcessSpecBytes = 200 << 10

// checkProcessSize is InvalidArgument when p is too large to send.
func checkProcessSize(p wire.Process) error {
	if n := len(wire.Encode(p)); n > MaxProcessSpecBytes {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "command and environment take %d bytes encoded, more than the %d allowed: argument list too long", n, MaxProcessSpecBytes)
	}
	return nil
}

// nameInUse is the AlreadyExists error for a name that container id has.
func nameInUse(name, id string) error {
	return &portlayer.Error{Class: portlayer.ClassAlreadyExists, Kind: portlayer.KindContainer, ID: id, Name: name,
		Reason: portlayer.ReasonNameInUse, Message: fmt.Sprintf("name %q is already in use by container %s", name, id)}
}

// Inspect implements portlayer.Compute.
func (s *Service) Inspect(ctx context.Context, idOrName string) (portlayer.Container, error) {
	c, err := s.lookup(idOrName)
	if err != nil {
		return portlayer.Container{}, err
	}
	return c.inspected(), nil
}

// List implements portlayer.Compute: newest first.
func (s *Service) List(ctx context.Context) ([]portlayer.Container, error) {
	s.mu.Lock()
	out := make([]portlayer.Container, 0, len(s.containers))
	for _, c := range s.containers {
		c.mu.Lock()
		creating := c.phase == phaseCreating
		c.mu.Unlock()
		if !creating {
			out = append(out, c.record())
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// invalidName is the InvalidArgument error for a container name outside
// validName.
func invalidName(name string) error {
	e := portlayer.Invalid(portlayer.KindContainer, "Name", name, portlayer.ReasonInvalidName,
		"compute: container name "+strconv.Quote(name)+" has characters outside [a-zA-Z0-9][a-zA-Z0-9_.-]")
	e.Name = name
	return e
}

// Rename implements portlayer.Compute.
func (s *Service) Rename(ctx context.Context, idOrName, newName string) error {
	newName = strings.TrimPrefix(newName, "/")
	if !validName.MatchString(newName) {
		return invalidName(newName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.lookupLocked(idOrName)
	if err != nil {
		return err
	}
	if other, taken := s.nameTakenLocked(newName, c.id); taken {
		return nameInUse(newName, other)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	old := rec.Spec.Name
	rec.Spec.Name = newName
	if err := s.recs.put(rec); err != nil {
		return err
	}
	if eps, ok := s.net.renameEndpoints(c.id, old, newName, rec.Endpoints); ok {
		rec.Endpoints = eps
		_ = s.recs.put(rec)
	}
	c.rec = rec
	s.event("rename", rec, map[string]string{"oldName": "/" + old})
	return nil
}

// ImageInUse reports a container (any state) created from imageID or
// mounting it (MountImage), for the image store's removal check: the
// image, and its rootfs disk, stay while a container needs either.
func (s *Service) ImageInUse(imageID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.containers {
		spec := c.record().Spec
		if spec.Image == imageID || slices.ContainsFunc(spec.Mounts, func(m portlayer.MountSpec) bool {
			return m.Type == portlayer.MountImage && m.Source == imageID
		}) {
			return id, true
		}
	}
	return "", false
}

// Remove implements portlayer.Compute.
func (s *Service) Remove(ctx context.Context, idOrName string, force bool) error {
	c, err := s.lookup(idOrName)
	if err != nil {
		return err
	}
	// A start in progress finishes first, so a VM being booted is never
	// left without its record.
	for {
		c.mu.Lock()
		ch := c.startDone
		starting := c.phase == phaseStarting
		c.mu.Unlock()
		if !starting {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("compute: remove %s: %w", c.id, ctx.Err())
		}
	}
	c.mu.Lock()
	if c.rec.State.Status == portlayer.StatusRestarting && c.restartCancel != nil {
		if !force {
			c.mu.Unlock()
			return portlayer.ContainerState("remove", c.id, portlayer.ReasonRestarting)
		}
		// Forced: the pending restart is cancelled, the container
		// removed.
		waiters, _ := c.cancelRestartLocked()
		code := c.rec.State.ExitCode
		c.mu.Unlock()
		for _, w := range waiters {
			w <- portlayer.WaitResult{ExitCode: code}
		}
	} else {
		c.mu.Unlock()
	}
	rec := c.record()
	if rec.State.Status == portlayer.StatusRunning || rec.State.Status == portlayer.StatusPaused {
		if !force {
			reason := portlayer.ReasonRunning
			if rec.State.Status == portlayer.StatusPaused {
				reason = portlayer.ReasonPaused
			}
			return portlayer.ContainerState("remove", rec.ID, reason)
		}
		if err := s.kill(ctx, c, 9); err != nil && !errdefs.IsConflict(err) {
			return err
		}
		if err := c.waitExited(ctx); err != nil {
			return err
		}
	}
	return s.remove(c)
}

// remove deletes a stopped container's files and record and releases
// removal waiters.
func (s *Service) remove(c *container) error {
	c.mu.Lock()
	if c.phase == phaseRemoved {
		c.mu.Unlock()
		return nil
	}
	c.phase = phaseRemoved
	code := c.rec.State.ExitCode
	gone, vmDir := c.vmGone, c.vmDir
	c.mu.Unlock()
	if gone != nil {
		// The VM must have released the disk before it is deleted.
		select {
		case <-gone:
		case <-time.After(2 * powerOffTimeout):
			s.logger.Warn("VM still running at removal", "container", c.id)
		}
	}
	if err := s.recs.delete(c.id); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.containers, c.id)
	s.mu.Unlock()
	c.out.close()
	s.execs.dropExecs(c)
	// The removal is decided: the driver's delete of the disk runs to
	// its end, bounded, whoever asked.
	dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := errors.Join(s.disks.removeRW(dctx, c.id), os.RemoveAll(filepath.Join(s.cfg.Root, "containers", c.id)))
	cancel()
	_ = os.RemoveAll(c.runDir)
	if vmDir != "" {
		_ = os.RemoveAll(vmDir)
	}
	c.notifyRemoved(code)
	s.event("destroy", c.record(), nil)
	s.logger.Info("container removed", "container", c.id)
	if err != nil {
		return fmt.Errorf("compute: remove files of %s: %w", c.id, err)
	}
	return nil
}
