// Package vch assembles one Virtual Container Host: its root directories,
// the guest boot files, the hypervisor driver, the port layer (storage and
// compute) and the Docker personality, and serves the Engine API on a
// listener until told to stop. It owns the VCH's directory layout:
//
//	<root>/guest/initrd.img   initramfs built at start from tether + modules
//	<root>/images/            image store (package storage)
//	<root>/compute/           container records, disks, logs (package compute)
//	<root>/volumes/           volumes: one sparse ext4 disk each (package volume)
//	<root>/network/           network records (package network); the
//	                          networks themselves live in the network
//	                          namespace /run/netns/vch-<hash of root>
//
// It holds no container logic: only the wiring and the host facts that
// `docker info` shows.
package vch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/qemu"
	"github.com/vchproject/vch/internal/hypervisor/vsphere"
	"github.com/vchproject/vch/internal/initramfs"
	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/budget"
	"github.com/vchproject/vch/internal/portlayer/compute"
	"github.com/vchproject/vch/internal/portlayer/events"
	"github.com/vchproject/vch/internal/portlayer/network"
	"github.com/vchproject/vch/internal/portlayer/network/dns"
	"github.com/vchproject/vch/internal/portlayer/network/portmap"
	"github.com/vchproject/vch/internal/portlayer/storage"
	"github.com/vchproject/vch/internal/portlayer/volume"
)

// Version is vch's version, set at build time with
// -ldflags "-X github.com/vchproject/vch/internal/vch.Version=…".
var Version = "0.1.0-dev"

// DefaultMemoryMiB is a container VM's RAM when neither the container nor
// the VCH sets one: enough for a Debian kernel plus a small workload.
const DefaultMemoryMiB = 256

// GitCommit is the commit vch was built from, set at build time like
// Version; shown by `docker version`.
var GitCommit = ""

// Config is one VCH's configuration.
type Config struct {
	// Name is the VCH's name, shown by docker info; default the host name.
	Name string `toml:"name" json:"name"`
	// Root is the VCH's state directory; created if missing.
	Root string `toml:"root" json:"root"`
	// KernelDir is an unpacked Debian linux-image package (boot/, lib/modules/).
	KernelDir string `toml:"kernel_dir" json:"kernel_dir"`
	// Tether is the static tether binary placed in the initramfs as /init.
	Tether string `toml:"tether" json:"tether"`
	// RAMShim is the QEMU preload library that lets VMs restored from
	// templates return the memory their guests free (qemu.Config.RAMShim).
	RAMShim string `toml:"ram_shim" json:"ram_shim"`
	// ShareKernelDir is an unpacked Debian kernel package with virtio-9p
	// (the generic linux-image-amd64) that boots containers with host bind
	// mounts; empty or missing leaves bind mounts unavailable.
	ShareKernelDir string `toml:"share_kernel_dir" json:"share_kernel_dir"`
	// BindRoots are the absolute host directories containers may
	// bind-mount from (and beneath); "/" allows any; empty allows none.
	BindRoots []string `toml:"bind_roots" json:"bind_roots"`
	// Accel is the accelerator: auto (default), kvm or tcg.
	Accel string `toml:"accel" json:"accel"`
	// DefaultMemoryMiB is a container VM's RAM when it sets none; default 256.
	DefaultMemoryMiB int `toml:"default_memory_mib" json:"default_memory_mib"`
	// DefaultCPUs is a container VM's vCPUs when it sets none; default 1.
	DefaultCPUs int `toml:"default_cpus" json:"default_cpus"`
	// MaxContainers caps how many containers exist; 0 means no cap.
	MaxContainers int `toml:"max_containers" json:"max_containers"`
	// MemoryMiB is the budget of guest RAM all running container VMs share,
	// in MiB; 0 means none. docker info shows it as the total memory.
	MemoryMiB int `toml:"memory_mib" json:"memory_mib"`
	// CPUs is the budget of vCPUs all running container VMs share; 0 means
	// none. docker info shows it as the CPU count.
	CPUs int `toml:"cpus" json:"cpus"`
	// VolumeStores are named directories volume disks may live in
	// (--volume-store NAME:PATH): host directories and, on vSphere,
	// datastore directories ("ds://DATASTORE/PATH"); <root>/volumes is
	// "default" unless named here.
	VolumeStores map[string]string `toml:"volume_stores" json:"volume_stores,omitempty"`
	// StorageQuotaBytes caps the host disk space images, containers and
	// volumes take together (budget.Disk); 0 means none.
	StorageQuotaBytes int64 `toml:"storage_quota_bytes" json:"storage_quota_bytes"`
	// Registries is the pull policy (whitelist, insecure registries).
	Registries storage.Registries `toml:"registries" json:"registries"`
	// NoEgress keeps containers from opening TCP connections to
	// addresses outside the VCH; EgressNamespace names the network
	// namespace such connections leave from (default: the daemon's).
	NoEgress        bool   `toml:"no_egress" json:"no_egress"`
	EgressNamespace string `toml:"egress_namespace" json:"egress_namespace"`
	// NoVMTemplates boots every container VM cold instead of restoring
	// it from a template of its shape (--vm-templates=false): no guest
	// memory is shared between VMs. Default false (templates on).
	NoVMTemplates bool `toml:"no_vm_templates" json:"no_vm_templates"`
	// MemoryMerge marks the whole memory of VMs restored from templates
	// mergeable for the host's KSM (--memory-merge; qemu.Config.MemoryMerge):
	// it saves memory only where the operator runs KSM
	// (/sys/kernel/mm/ksm/run = 1), and KSM merges across VCHs on one
	// host. Default false.
	MemoryMerge bool `toml:"memory_merge" json:"memory_merge"`
	// LogDriver and LogOpts are the logging driver ("json-file", the
	// default, "local" or "none") and options of containers that name
	// none (the daemon's --log-driver and --log-opt, as dockerd's;
	// docker.Config.LogDriver). Open refuses what create would refuse.
	LogDriver string            `toml:"log_driver" json:"log_driver"`
	LogOpts   map[string]string `toml:"log_opts" json:"log_opts"`
	// WarmVMs is how many container VMs of the common shape are kept
	// restored and woken ahead of need (compute.Config.WarmVMs); the
	// daemon's --warm-vms, default 1 there. Each idle one costs what an
	// idle container's VM does (~80 MiB of host memory under TCG).
	WarmVMs int `toml:"warm_vms" json:"warm_vms"`
	// MaxConcurrentBoots is how many container VMs boot at once
	// (compute.Config.MaxConcurrentBoots; 0: the host's CPUs); the
	// daemon's --max-concurrent-boots.
	MaxConcurrentBoots int `toml:"max_concurrent_boots" json:"max_concurrent_boots"`
	// VSphere, when set, runs the container VMs on vSphere (the vsphere
	// driver, on the VCH that vch create --target made there) instead of
	// this host's QEMU: the boot ISO and image disks are uploaded to its
	// image store. Containers there have only the default bridge
	// network (their NICs on the bridge portgroup) or none, no volumes
	// and no host bind mounts; see docs/vsphere.md.
	VSphere *vsphere.Config `toml:"vsphere" json:"vsphere,omitempty"`
	// BridgeInterface is a host interface on the network the container
	// VMs' NICs are on (a vSphere VCH's bridge portgroup), moved into the
	// VCH's network namespace and enslaved to its default bridge
	// (network.Config.Uplink). Empty: none.
	BridgeInterface string `toml:"bridge_interface" json:"bridge_interface,omitempty"`
}

// VCH is an assembled, running Virtual Container Host.
type VCH struct {
	cfg     Config
	logger  *slog.Logger
	images  *storage.Store
	volumes *volume.Store
	network *network.Service
	compute *compute.Service
	server  *docker.Server
	pl      api.Backend // what the Port Layer API serves
	host    docker.HostInfo
	lock    *os.File
	// closeDriver ends a driver that holds a session (vSphere's); nil
	// for QEMU's.
	closeDriver func() error
	vsphere     *vsphere.Driver // nil on QEMU
	disk        *budget.Disk
}

// Open validates cfg, builds the guest initramfs and opens the stores.
// InvalidArgument for a bad config; Unavailable when QEMU, the kernel or
// tether is missing (the message says which and how to get it).
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*VCH, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("vch: --root is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := CheckLogDefaults(cfg.LogDriver, cfg.LogOpts); err != nil {
		return nil, err
	}
	dcfg := docker.Config{Version: Version, GitCommit: GitCommit, LogDriver: cfg.LogDriver, LogOpts: cfg.LogOpts}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("vch: root: %w", err)
	}
	cfg.Root = root
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.DefaultMemoryMiB == 0 {
		cfg.DefaultMemoryMiB = DefaultMemoryMiB
	}
	if cfg.DefaultCPUs == 0 {
		cfg.DefaultCPUs = 1
	}
	if err := os.MkdirAll(filepath.Join(root, "guest"), 0o700); err != nil {
		return nil, fmt.Errorf("vch: %w", err)
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	kt := initramfs.KernelTree{Dir: cfg.KernelDir}
	kernel, err := kt.Kernel()
	if err != nil {
		return nil, fmt.Errorf("vch: guest kernel in %q (run `make guest`): %w: %w", cfg.KernelDir, err, errdefs.ErrUnavailable)
	}
	kver, _ := kt.Version()
	if _, err := os.Stat(cfg.Tether); err != nil {
		return nil, fmt.Errorf("vch: tether binary (run `make build`): %w: %w", err, errdefs.ErrUnavailable)
	}
	initrd := filepath.Join(root, "guest", "initrd.img")
	want := append(slices.Clone(initramfs.BootModules), initramfs.FilesystemModules...)
	if cfg.VSphere != nil {
		want = append(want, initramfs.VSphereModules...)
	}
	modules, err := kt.LoadOrder(want)
	if err != nil {
		return nil, fmt.Errorf("vch: guest kernel modules: %w", err)
	}
	if err := initramfs.WriteFile(initrd, cfg.Tether, kt, modules); err != nil {
		return nil, fmt.Errorf("vch: build initramfs: %w", err)
	}
	shareKernel, shareInitrd, err := shareGuest(root, cfg, logger)
	if err != nil {
		return nil, err
	}
	v := &VCH{cfg: cfg, logger: logger, lock: lock}
	var driver hypervisor.Driver
	var volumeDisks hypervisor.VolumeStore // datastore volume stores' disks
	hypervisorName := "qemu"
	if cfg.VSphere != nil {
		vc := *cfg.VSphere
		vc.Logger = logger
		vd, err := vsphere.New(ctx, vc)
		if err != nil {
			return nil, fmt.Errorf("vch: vSphere: %w", err)
		}
		v.closeDriver, v.vsphere = vd.Close, vd
		// ISOLINUX boots a bzImage, not the ELF vmlinux QEMU takes.
		bz, err := kt.BzImage()
		if err != nil {
			vd.Close()
			return nil, fmt.Errorf("vch: vSphere boot ISO: %w", err)
		}
		if kernel, initrd, err = vd.ImportBoot(ctx, bz, initrd); err != nil {
			vd.Close()
			return nil, fmt.Errorf("vch: vSphere: %w", err)
		}
		// No shares on vSphere: bind mounts stay unavailable.
		shareKernel, shareInitrd = "", ""
		driver, hypervisorName, volumeDisks = vd, "vsphere", vd
	} else {
		qd, err := qemu.New(qemu.Config{Accel: cfg.Accel, RAMShim: cfg.RAMShim, MemoryMerge: cfg.MemoryMerge}, logger)
		if err != nil {
			return nil, err
		}
		driver = qd
	}
	defer func() {
		if !ok && v.closeDriver != nil {
			_ = v.closeDriver()
		}
	}()
	evlog := events.New(events.DefaultCapacity)
	v.disk = &budget.Disk{Limit: cfg.StorageQuotaBytes, Dirs: []string{root}, Skip: []string{filepath.Join(root, "compute", compute.TemplatesDir)}}
	for _, name := range slices.Sorted(maps.Keys(cfg.VolumeStores)) {
		if dir := cfg.VolumeStores[name]; !strings.HasPrefix(dir, volume.DatastoreScheme) {
			v.disk.Dirs = append(v.disk.Dirs, dir)
		}
	}
	v.images, err = storage.New(storage.Config{
		Root: filepath.Join(root, "images"),
		InUse: func(id string) (string, bool) {
			if v.compute == nil {
				return "", false
			}
			return v.compute.ImageInUse(id)
		},
		Registries: cfg.Registries,
		Reserve:    v.disk.Reserve,
	}, logger)
	if err != nil {
		return nil, err
	}
	v.volumes, err = volume.New(volume.Config{
		Root: filepath.Join(root, "volumes"), Events: evlog, Stores: cfg.VolumeStores, Disks: volumeDisks,
		// A new volume's sparse disk holds only mkfs metadata (a few MiB),
		// so its nominal size is not reserved: the create is refused only
		// when the quota is already used up.
		Reserve: func(int64) error { return v.disk.Reserve("volume create", 0) },
		InUse: func(name string) []string {
			if v.compute == nil {
				return nil
			}
			return v.compute.VolumeUsers(name)
		},
	}, logger)
	if err != nil {
		v.images.Close()
		return nil, err
	}
	resolver := dns.NewResolver(dns.HostUpstreams("/etc/resolv.conf"), logger)
	v.network, err = network.New(network.Config{Root: filepath.Join(root, "network"), Namespace: NamespaceName(root),
		NoEgress: cfg.NoEgress, EgressNamespace: cfg.EgressNamespace, Uplink: cfg.BridgeInterface},
		func(d network.Dialer) network.PortPublisher { return portmap.New(portmap.Dialer(d), logger) },
		func(ctx context.Context, q []byte, lookup func(string) ([]netip.Addr, bool), reverse func(netip.Addr) (string, bool), external bool, upstreams []string) ([]byte, error) {
			return resolver.Answer(ctx, q, dns.View{Lookup: lookup, Reverse: reverse, External: external, Upstreams: upstreams})
		}, logger)
	if err != nil {
		v.images.Close()
		return nil, err
	}
	v.compute, err = compute.New(compute.Config{
		Root: filepath.Join(root, "compute"), Kernel: kernel, Initrd: initrd,
		DefaultMemoryMiB: cfg.DefaultMemoryMiB, DefaultCPUs: cfg.DefaultCPUs, ChannelName: wire.PortName,
		Events: evlog, Network: v.network, Networks: v.network, Volumes: v.volumes,
		ShareKernel: shareKernel, ShareInitrd: shareInitrd, BindRoots: cfg.BindRoots,
		VMTemplates: !cfg.NoVMTemplates, WarmVMs: cfg.WarmVMs, MaxConcurrentBoots: cfg.MaxConcurrentBoots,
	}, driver, v.images, logger)
	if err != nil {
		v.network.Close()
		v.images.Close()
		return nil, err
	}
	budgeted, err := budget.New(v.compute, budget.Limits{
		Containers: cfg.MaxContainers, MemoryMiB: cfg.MemoryMiB, CPUs: cfg.CPUs,
		DefaultMemoryMiB: cfg.DefaultMemoryMiB, DefaultCPUs: cfg.DefaultCPUs,
	})
	if err != nil {
		_ = v.Close()
		return nil, err
	}
	var si unix.Sysinfo_t
	_ = unix.Sysinfo(&si)
	v.host = docker.HostInfo{
		Name: cfg.Name, Hypervisor: hypervisorName, Accelerator: driver.Capabilities().Accelerator,
		GuestKernelVersion: kver, NCPU: runtime.NumCPU(), MemTotalBytes: int64(si.Totalram) * int64(si.Unit),
		RootDir: root,
	}
	if v.host.ID, err = engineID(root); err != nil {
		_ = v.Close()
		return nil, err
	}
	if cfg.CPUs > 0 {
		v.host.NCPU = cfg.CPUs
	}
	if cfg.MemoryMiB > 0 {
		v.host.MemTotalBytes = int64(cfg.MemoryMiB) << 20
	}
	v.pl = api.Backend{Compute: budgeted, Pauser: v.compute, Images: events.Images(v.images, evlog), Interaction: v.compute,
		Volumes: v.volumes, Networks: v.network, Events: evlog, Execs: v.compute.Execs(),
		Host:    v.Host,
		Monitor: v.compute, NetworkConnector: v.compute, Updater: v.compute, Archives: v.compute.Archives(),
		Committer: v.images, Login: v.images, Publish: evlog.Publish}
	dcfg.BuildRoot = filepath.Join(root, "build")
	v.server = docker.New(dcfg, docker.Backend{
		Compute: budgeted, Interaction: v.compute, Images: events.Images(v.images, evlog),
		Execs: v.compute.Execs(), Pauser: v.compute, Monitor: v.compute, Events: evlog, Publish: evlog.Publish, System: v,
		Volumes:  v.volumes,
		Networks: v.network, NetworkConnector: v.compute,
		Archives: v.compute.Archives(), Committer: v.images, Trees: v.images, Login: v.images, Updater: v.compute,
	}, logger)
	ok = true
	return v, nil
}

// shareGuest builds the initramfs for the share kernel (the generic
// Debian kernel, with virtio-9p) and returns its kernel and initrd paths;
// both empty when cfg.ShareKernelDir is unset or holds no kernel, which
// leaves host bind mounts unavailable (logged).
func shareGuest(root string, cfg Config, logger *slog.Logger) (string, string, error) {
	if cfg.ShareKernelDir == "" {
		return "", "", nil
	}
	kt := initramfs.KernelTree{Dir: cfg.ShareKernelDir}
	kernel, err := kt.Kernel()
	if err != nil {
		logger.Info("no share kernel: host bind mounts are unavailable", "share_kernel_dir", cfg.ShareKernelDir, "err", err)
		return "", "", nil
	}
	modules, err := kt.LoadOrder(append(append(slices.Clone(initramfs.BootModules), initramfs.FilesystemModules...), initramfs.ShareModules...))
	if err != nil {
		return "", "", fmt.Errorf("vch: share kernel modules in %q: %w", cfg.ShareKernelDir, err)
	}
	initrd := filepath.Join(root, "guest", "initrd-share.img")
	if err := initramfs.WriteFile(initrd, cfg.Tether, kt, modules); err != nil {
		return "", "", fmt.Errorf("vch: build share initramfs: %w", err)
	}
	return kernel, initrd, nil
}

// CheckLogDefaults refuses a default logging driver or option
// (Config.LogDriver, LogOpts) that container create would refuse, in
// dockerd's words ("failed to set log opts: …"); InvalidArgument.
func CheckLogDefaults(driver string, opts map[string]string) error {
	if err := (docker.Config{LogDriver: driver, LogOpts: opts}).CheckLogDefaults(); err != nil {
		return fmt.Errorf("vch: %w", err)
	}
	return nil
}

// lockRoot takes an exclusive lock on root/vch.lock for the daemon's
// lifetime: two daemons on one root would corrupt each other's stores.
// FailedPrecondition if another daemon holds it.
func lockRoot(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, "vch.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vch: lock root: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("vch: root %s is in use by another vch daemon: %w", root, errdefs.ErrFailedPrecondition)
	}
	return f, nil
}

// Host implements docker.SystemInfo.
// The storage quota's usage is measured on each call.
func (v *VCH) Host(ctx context.Context) (docker.HostInfo, error) {
	h := v.host
	h.DriverStatus = nil
	if used, err := v.disk.Usage(); err == nil {
		h.DriverStatus = append(h.DriverStatus, [2]string{"Storage Used", units.BytesSize(float64(used))}, [2]string{"Storage Used Bytes", strconv.FormatInt(used, 10)})
	}
	if v.disk.Limit > 0 {
		h.DriverStatus = append(h.DriverStatus, [2]string{"Storage Quota", units.BytesSize(float64(v.disk.Limit))}, [2]string{"Storage Quota Bytes", strconv.FormatInt(v.disk.Limit, 10)})
	}
	stores := v.volumes.Stores()
	for _, name := range slices.Sorted(maps.Keys(stores)) {
		h.DriverStatus = append(h.DriverStatus, [2]string{"Volume Store " + name, stores[name]})
	}
	templates := "off (every container VM boots)"
	if v.compute.VMTemplates() {
		templates = "on (container VMs are restored from templates)"
	}
	h.DriverStatus = append(h.DriverStatus, [2]string{"VM Templates", templates})
	if v.cfg.MemoryMerge {
		h.DriverStatus = append(h.DriverStatus, [2]string{"Memory Merge", "on (restored VMs' memory is mergeable; host KSM " + ksmState() + ")"})
	}
	warm := "off"
	if st := v.compute.WarmStats(); st.Size > 0 {
		warm = fmt.Sprintf("%d of %d ready, %d being restored; %d starts took one", st.Ready, st.Size, st.Filling, st.Taken)
	}
	h.DriverStatus = append(h.DriverStatus, [2]string{"Warm VMs", warm})
	if v.vsphere != nil {
		p := v.vsphere.Paths()
		h.DriverStatus = append(h.DriverStatus,
			[2]string{"vSphere Compute Resource", v.cfg.VSphere.ComputeResource},
			[2]string{"vSphere Placement", v.vsphere.Placement()},
			[2]string{"vSphere Resource Pool", p.ResourcePool},
			[2]string{"vSphere Image Store", p.ImageStore})
	}
	return h, nil
}

// Serve serves the Engine API on l until ctx ends, then stops every
// container VM and closes the stores. It returns nil after a clean stop.
func (v *VCH) Serve(ctx context.Context, l net.Listener) error {
	addr := l.Addr().String()
	if s, ok := l.(fmt.Stringer); ok {
		addr = s.String() // every address of a multi-address listener
	}
	v.logger.Info("vch serving", "addr", addr, "root", v.cfg.Root, "accel", v.host.Accelerator, "guest_kernel", v.host.GuestKernelVersion)
	serveErr := v.server.Serve(ctx, l)
	if errors.Is(serveErr, context.Canceled) {
		serveErr = nil
	}
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := errors.Join(serveErr, v.compute.Close(closeCtx), v.network.Close(), v.images.Close(), v.lock.Close())
	v.logger.Info("vch stopped")
	return err
}

// ServePortLayer serves the Port Layer API (package api, version 1) on
// l until ctx ends: the same port layer the Docker endpoint uses, so a
// container made through either is seen by both. Call it before Serve,
// in its own goroutine.
func (v *VCH) ServePortLayer(ctx context.Context, l net.Listener) error {
	h, err := api.Handler(v.pl, v.logger)
	if err != nil {
		return err
	}
	v.logger.Info("port layer API serving", "addr", l.Addr().String())
	return api.Serve(ctx, l, h)
}

// Close releases a VCH that was opened but never served: it closes the
// stores and the root lock. Serve closes them itself.
func (v *VCH) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := errors.Join(v.compute.Close(ctx), v.network.Close(), v.images.Close())
	if v.closeDriver != nil {
		err = errors.Join(err, v.closeDriver())
	}
	return errors.Join(err, v.lock.Close())
}

// NamespaceName is the network namespace of the VCH rooted at root
// (an absolute path): "vch-" and 12 hex digits of the path's SHA-256, so
// VCHs on one host never share one and the name fits any length limit.
func NamespaceName(root string) string {
	h := sha256.Sum256([]byte(root))
	return "vch-" + hex.EncodeToString(h[:6])
}

// engineIDFile holds the VCH's ID under its root, as dockerd keeps its
// engine ID in DATA-ROOT/engine-id (a UUID since Docker 23).
const engineIDFile = "engine-id"

// engineID returns the ID kept in root/engine-id, made (a random UUID)
// and stored on first use: GET /info's ID, stable across restarts.
func engineID(root string) (string, error) {
	p := filepath.Join(root, engineIDFile)
	if b, err := os.ReadFile(p); err == nil {
		if id, err := uuid.ParseBytes(bytes.TrimSpace(b)); err == nil {
			return id.String(), nil
		}
	}
	id := uuid.NewString()
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("vch: engine ID: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("vch: engine ID: %w", err)
	}
	return id, nil
}

// ksmState says whether the host runs KSM (/sys/kernel/mm/ksm/run):
// "running", "off" or "unknown".
func ksmState() string {
	b, err := os.ReadFile("/sys/kernel/mm/ksm/run")
	switch {
	case err != nil:
		return "unknown"
	case bytes.HasPrefix(bytes.TrimSpace(b), []byte("1")):
		return "running"
	default:
		return "off"
	}
}
