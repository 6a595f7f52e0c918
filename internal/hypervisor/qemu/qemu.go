// Package qemu is the hypervisor driver for local QEMU microVMs: it builds
// QEMU's command line from a [hypervisor.Spec], chooses the accelerator
// (KVM when usable, TCG otherwise), supervises the VMM process and connects
// the guest channel. It knows nothing of containers.
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor"
)

// Config configures the driver.
type Config struct {
	// Binary is the QEMU system emulator; default "qemu-system-x86_64" from PATH.
	Binary string `toml:"binary" json:"binary"`
	// ImgBinary is qemu-img; default "qemu-img" from PATH.
	ImgBinary string `toml:"img_binary" json:"img_binary"`
	// Accel is "auto" (default), "kvm" or "tcg".
	Accel string `toml:"accel" json:"accel"`
	// ConnectTimeout bounds how long Start waits for QEMU to connect the
	// guest channel; default 10 s.
	ConnectTimeout time.Duration `toml:"connect_timeout" json:"connect_timeout"`
	// RAMShim is the preload library (LD_PRELOAD, built from ramshim/)
	// that lets a VM restored from a template return the memory its
	// guest frees without punching holes in the template's RAM file.
	// Empty or missing: restored VMs (and their templates) run without
	// free page reporting; cold-booted VMs have it either way.
	RAMShim string `toml:"ram_shim" json:"ram_shim"`
	// MemoryMerge makes the RAM shim mark the whole memory of each VM
	// restored from a template mergeable (prctl PR_SET_MEMORY_MERGE,
	// Linux 6.4): where the host runs KSM (/sys/kernel/mm/ksm/run = 1,
	// the operator's choice), pages equal across VMs are shared. Needs
	// RAMShim; cold-booted VMs are never marked. KSM merges across every
	// process so marked, so across VCHs on one host too.
	MemoryMerge bool `toml:"memory_merge" json:"memory_merge"`
}

// validName is what Spec.Name may hold: it ends up in QEMU's -name, where
// ',' and '=' would be parsed as options.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// validMAC is a unicast hardware address in colon form.
var validMAC = regexp.MustCompile(`^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$`)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Driver runs QEMU microVMs. Safe for concurrent use.
type Driver struct {
	cfg    Config
	accel  string
	tscKHz int
	logger *slog.Logger
	ids    fileIDs // template keys' file digests
}

// New returns a driver. InvalidArgument for an unknown accelerator;
// Unavailable if the QEMU binaries are not installed.
func New(cfg Config, logger *slog.Logger) (*Driver, error) {
	if cfg.Binary == "" {
		cfg.Binary = "qemu-system-x86_64"
	}
	if cfg.ImgBinary == "" {
		cfg.ImgBinary = "qemu-img"
	}
	if cfg.Accel == "" {
		cfg.Accel = AccelAuto
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	switch cfg.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return nil, fmt.Errorf("qemu: accelerator %q: want auto, kvm or tcg: %w", cfg.Accel, errdefs.ErrInvalidArgument)
	}
	if cfg.RAMShim != "" {
		// LD_PRELOAD splits its list at spaces and colons.
		if _, err := os.Stat(cfg.RAMShim); err != nil || strings.ContainsAny(cfg.RAMShim, " :") {
			logger.Warn("no RAM shim: VMs restored from templates do not return freed memory", "ram_shim", cfg.RAMShim, "err", err)
			cfg.RAMShim = ""
		}
	}
	for _, b := range []*string{&cfg.Binary, &cfg.ImgBinary} {
		p, err := exec.LookPath(*b)
		if err != nil {
			return nil, fmt.Errorf("qemu: %s not found (install Debian's qemu-system-x86 and qemu-utils): %w", *b, errdefs.ErrUnavailable)
		}
		*b = p
	}
	return &Driver{cfg: cfg, accel: chooseAccel(cfg.Accel), tscKHz: hostTSCKHz(), logger: logger.With("component", "qemu")}, nil
}

// Capabilities reports the accelerator in use; VMs can be paused (QMP),
// adopted by a later driver (Adopt) and restored from templates.
func (d *Driver) Capabilities() hypervisor.Capabilities {
	return hypervisor.Capabilities{Accelerator: d.accel, Pause: true, Shares: true, Adopt: true, Templates: true, WarmRestore: true, TransferDisk: true}
}

// validSerial is what Disk.Serial may hold (empty included).
var validSerial = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)

func validate(spec hypervisor.Spec) error { return validateShape(spec, false) }

// validateShape checks spec; a template's (template true) NICs have no
// device behind them, only a MAC.
func validateShape(spec hypervisor.Spec, template bool) error {
	switch {
	case !validName.MatchString(spec.Name):
		return fmt.Errorf("qemu: VM name %q: want letters, digits, '_', '.', '-': %w", spec.Name, errdefs.ErrInvalidArgument)
	case spec.MemoryMiB < hypervisor.MinMemoryMiB || spec.MemoryMiB > hypervisor.MaxMemoryMiB:
		return fmt.Errorf("qemu: memory %d MiB outside %d..%d: %w", spec.MemoryMiB, hypervisor.MinMemoryMiB, hypervisor.MaxMemoryMiB, errdefs.ErrInvalidArgument)
	case spec.CPUs < 1 || spec.CPUs > hypervisor.MaxCPUs:
		return fmt.Errorf("qemu: %d vCPUs outside 1..%d: %w", spec.CPUs, hypervisor.MaxCPUs, errdefs.ErrInvalidArgument)
	case spec.ChannelName == "":
		return fmt.Errorf("qemu: spec has no channel name: %w", errdefs.ErrInvalidArgument)
	}
	for _, f := range []string{spec.Kernel, spec.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("qemu: guest boot file: %w: %w", err, errdefs.ErrUnavailable)
		}
	}
	for _, n := range spec.NICs {
		if (n.File == nil) != template || !validMAC.MatchString(n.MAC) {
			return fmt.Errorf("qemu: NIC needs an open device and a MAC like 02:42:ac:11:00:02 (got %q): %w", n.MAC, errdefs.ErrInvalidArgument)
		}
	}
	for _, d := range spec.Disks {
		if d.Format != "raw" && d.Format != "qcow2" {
			return fmt.Errorf("qemu: disk %s: format %q: %w", d.Path, d.Format, errdefs.ErrInvalidArgument)
		}
		if len(d.Serial) > hypervisor.MaxDiskSerial || !validSerial.MatchString(d.Serial) {
			return fmt.Errorf("qemu: disk %s: serial %q: want at most %d letters, digits, '-' or '_': %w", d.Path, d.Serial, hypervisor.MaxDiskSerial, errdefs.ErrInvalidArgument)
		}
	}
	tags := map[string]bool{}
	for _, sh := range spec.Shares {
		if sh.Tag == "" || len(sh.Tag) > hypervisor.MaxShareTag || !validSerial.MatchString(sh.Tag) || tags[sh.Tag] {
			return fmt.Errorf("qemu: share %s: tag %q: want 1 to %d letters, digits, '-' or '_', unique: %w", sh.Path, sh.Tag, hypervisor.MaxShareTag, errdefs.ErrInvalidArgument)
		}
		tags[sh.Tag] = true
		if !filepath.IsAbs(sh.Path) {
			return fmt.Errorf("qemu: share %q: want an absolute path: %w", sh.Path, errdefs.ErrInvalidArgument)
		}
		if st, err := os.Stat(sh.Path); err != nil || !st.IsDir() {
			return fmt.Errorf("qemu: share %s: not a directory: %w", sh.Path, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// runtimePaths are the files of one VM in its runtime directory.
func runtimePaths(dir string) paths {
	return paths{
		channel: filepath.Join(dir, "tether.sock"),
		console: filepath.Join(dir, "console.log"),
		pidfile: filepath.Join(dir, "qemu.pid"),
		qmp:     filepath.Join(dir, "qmp.sock"),
		log:     filepath.Join(dir, "qemu.log"),
		// The transfer disk's empty image, sparse.
		transfer: filepath.Join(dir, "transfer.img"),
	}
}

// Start boots the VM and returns once QEMU has connected the guest channel
// (the guest may still be booting; the agent answers on the channel when
// ready). Unavailable if QEMU exits or does not connect in time.
//
// QEMU runs in its own session with its output in the runtime directory's
// qemu.log, so it outlives the daemon; its chardev reconnects to the
// channel socket every second (reconnect=1) after a disconnect, which is
// how Adopt gets the channel back.
func (d *Driver) Start(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	v, err := d.launch(ctx, spec, vmOptions{})
	if err != nil {
		return nil, err
	}
	d.logger.Info("vm started", "vm", spec.Name, "pid", v.Pid(), "accel", d.accel)
	return v, nil
}

// launch starts QEMU for a validated spec and returns once it connected
// the guest channel.
func (d *Driver) launch(ctx context.Context, spec hypervisor.Spec, o vmOptions) (*vm, error) {
	p := runtimePaths(spec.RuntimeDir)
	if len(p.channel) > maxSocketPath || len(p.qmp) > maxSocketPath {
		return nil, fmt.Errorf("qemu: runtime dir %s too long for a unix socket: %w", spec.RuntimeDir, errdefs.ErrInvalidArgument)
	}
	ln, err := listenChannel(p.channel)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	defer os.Remove(p.channel)

	if err := writeSparse(p.transfer, hypervisor.TransferDiskBytes); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu: VMM log: %w", err)
	}
	defer logf.Close()
	_ = os.Remove(p.pidfile)
	cmd := exec.Command(d.cfg.Binary, argvWith(spec, d.accel, d.tscKHz, p, o)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// One malloc arena: QEMU's threads mostly run under its big lock, and
	// per-thread arenas cost an idle VMM ~2.5 MiB of PSS (of ~86 MiB,
	// measured on restored busybox VMs, 2026-12-03) for no measurable
	// speed.
	cmd.Env = append(os.Environ(), "MALLOC_ARENA_MAX=1")
	if o.memPath != "" && !o.memShared && !o.noFreePageReporting {
		cmd.Env = append(cmd.Env, "LD_PRELOAD="+d.cfg.RAMShim, "VCH_TEMPLATE_RAM="+o.memPath)
		if d.cfg.MemoryMerge {
			cmd.Env = append(cmd.Env, "VCH_MEMORY_MERGE=1")
		}
	}
	for _, n := range spec.NICs {
		if n.File != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, n.File)
		}
	}
	// Own session: signals to the daemon's process group never reach VMs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: start %s: %w: %w", d.cfg.Binary, err, errdefs.ErrUnavailable)
	}
	v := &vm{cmd: cmd, done: make(chan struct{}), monitor: monitor{qmpPath: p.qmp, transfer: &transferSlot{placeholder: p.transfer}}, logPath: p.log}
	go v.wait()

	c, err := d.accept(ctx, ln, v.done, v.Kill)
	if err != nil {
		if errors.Is(err, errVMMEnded) {
			return nil, fmt.Errorf("qemu: VMM exited at start: %w: %w", v.Status().Err, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	if !v.setChannel(c) {
		return nil, fmt.Errorf("qemu: VMM exited at start: %w: %w", v.Status().Err, errdefs.ErrUnavailable)
	}
	return v, nil
}

// listenChannel listens on the guest channel's socket (a stale one from
// an earlier daemon is replaced).
func listenChannel(path string) (net.Listener, error) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("qemu: listen for guest channel: %w", err)
	}
	return ln, nil
}

// errVMMEnded is accept's error when the VMM ended first.
var errVMMEnded = errors.New("qemu: VMM ended")

// accept waits for the VMM to connect the guest channel, bounded by the
// driver's ConnectTimeout and ctx; kill ends the VMM on a timeout. A
// connection that arrives after accept gave up is closed.
func (d *Driver) accept(ctx context.Context, ln net.Listener, done <-chan struct{}, kill func() error) (net.Conn, error) {
	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		acc <- accepted{c, err}
	}()
	timer := time.NewTimer(d.cfg.ConnectTimeout)
	defer timer.Stop()
	drain := func() {
		go func() {
			if a := <-acc; a.c != nil {
				a.c.Close()
			}
		}()
	}
	select {
	case a := <-acc:
		if a.err != nil {
			_ = kill()
			return nil, fmt.Errorf("qemu: accept guest channel: %w", a.err)
		}
		return a.c, nil
	case <-done:
		drain()
		return nil, errVMMEnded
	case <-timer.C:
		drain()
		_ = kill()
		return nil, fmt.Errorf("qemu: guest channel not connected within %s: %w", d.cfg.ConnectTimeout, errdefs.ErrUnavailable)
	case <-ctx.Done():
		drain()
		_ = kill()
		return nil, fmt.Errorf("%w: %w", ctx.Err(), errdefs.ErrUnavailable)
	}
}

// CreateOverlay creates a qcow2 disk at path backed by base (qemu-img
// create -b), so the base is shared, never copied. sizeBytes 0 keeps the
// base's size.
func (d *Driver) CreateOverlay(ctx context.Context, base hypervisor.Disk, path string, sizeBytes int64) (hypervisor.Disk, error) {
	abs, err := filepath.Abs(base.Path)
	if err != nil {
		return hypervisor.Disk{}, fmt.Errorf("qemu: overlay base: %w", err)
	}
	args := []string{"create", "-q", "-f", "qcow2", "-F", base.Format, "-b", abs, path}
	if sizeBytes > 0 {
		args = append(args, strconv.FormatInt(sizeBytes, 10))
	}
	out, err := exec.CommandContext(ctx, d.cfg.ImgBinary, args...).CombinedOutput()
	if err != nil {
		return hypervisor.Disk{}, fmt.Errorf("qemu: qemu-img create: %s: %w", bytes.TrimSpace(out), err)
	}
	return hypervisor.Disk{Path: path, Format: "qcow2"}, nil
}

// vm is one QEMU process this driver started (its child).
type vm struct {
	monitor
	cmd     *exec.Cmd
	done    chan struct{}
	status  hypervisor.ExitStatus
	logPath string

	mu      sync.Mutex
	channel net.Conn
	ended   bool
	// slots are a warm VM's placeholder disks until PlugDisks (RestoreWarm).
	slots []hypervisor.Disk
}

// setChannel records the guest channel; false (and the conn closed) if
// the VMM has already ended.
func (v *vm) setChannel(c net.Conn) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ended {
		c.Close()
		return false
	}
	v.channel = c
	return true
}

func (v *vm) wait() {
	err := v.cmd.Wait()
	st := hypervisor.ExitStatus{At: time.Now()}
	if err != nil {
		if msg := logTail(v.logPath); msg != "" {
			st.Err = fmt.Errorf("qemu: %s: %w", msg, err)
		} else {
			st.Err = fmt.Errorf("qemu: %w", err)
		}
	}
	v.status = st
	v.mu.Lock()
	v.ended = true
	if v.channel != nil {
		v.channel.Close()
	}
	v.mu.Unlock()
	close(v.done)
}

// logTail is the end of the VMM's log, for errors: its last lines
// without the chardev's reconnect complaints.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	var keep []string
	for _, l := range strings.Split(string(bytes.TrimSpace(b)), "\n") {
		if l != "" && !strings.Contains(l, "Unable to connect character device") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 5 {
		keep = keep[len(keep)-5:]
	}
	return strings.Join(keep, "; ")
}

func (v *vm) Channel() net.Conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.channel
}
func (v *vm) Pid() int                      { return v.cmd.Process.Pid }
func (v *vm) Done() <-chan struct{}         { return v.done }
func (v *vm) Status() hypervisor.ExitStatus { <-v.done; return v.status }

// Kill sends SIGKILL to QEMU. Idempotent; harmless after exit.
func (v *vm) Kill() error {
	err := v.cmd.Process.Kill()
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}
