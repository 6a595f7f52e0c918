// Package tether is the guest agent: PID 1 inside every container VM. It
// mounts the kernel filesystems and the container's root disk, loads the
// virtio modules, applies the container's identity (hostname, hosts,
// resolv.conf, clock), serves the host's sessions on the virtio-serial
// port (protocol in package wire), runs the container's processes, reaps
// zombies, reports exit statuses and powers the VM off when asked.
//
// It does not decide anything about containers: the host sends what to run.
package tether

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

// Paths inside the initramfs, shared with the host's initramfs builder.
const (
	// ModulesDir holds the kernel modules (*.ko) to load at boot.
	ModulesDir = "/lib/modules"
	// ModulesOrder lists the module file names in load order, one a line.
	ModulesOrder = "/lib/modules/order"
	// RootMount is where the container's root filesystem is mounted.
	RootMount = "/ctr"
)

// deviceWait bounds how long boot waits for the root disk and the port to
// appear after their modules load; under TCG they appear within ~100 ms.
const deviceWait = 10 * time.Second

// Main runs tether as PID 1 and never returns: it powers the VM off on
// every path, printing the reason on the console first.
func Main() {
	if IsSpawnHelper() {
		RunSpawnHelper()
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "tether")
	var channel channelChoice
	err := run(logger, &channel)
	if err != nil {
		logger.Error("tether failed", "err", err)
	}
	if err := channel.markExit(); err != nil {
		logger.Warn("no power-off mark: the VM ends as powered off by someone else", "err", err)
	}
	powerOff()
}

// run boots the guest and serves its host until a power-off; channel is
// set to how the guest reached the host as soon as that is known.
func run(logger *slog.Logger, channel *channelChoice) error {
	ctx := context.Background()
	if err := mountKernelFS(); err != nil {
		return err
	}
	if c, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd <= 2; fd++ {
			_ = unix.Dup2(int(c.Fd()), fd)
		}
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "tether")
	}
	// The container cgroup's hierarchy is made at boot, so a VM restored
	// from a template has it and a container's setup only writes limits.
	if err := prepareCgroup(); err != nil {
		logger.Warn("no container cgroup yet", "err", err)
	}
	reaper := startReaper()
	template := isTemplate()
	if err := loadModules(logger, func(name string) bool { return !template || slices.Contains(wire.ChannelModules, name) }); err != nil {
		return err
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	parsed, err := parseChannel(string(cmdline))
	if err != nil {
		return err
	}
	*channel = parsed
	if channel.serial && len(channel.guestinfo) == 0 {
		store, ok, err := vmwareBackdoor()
		if err != nil {
			logger.Warn("VMware backdoor not reachable", "err", err)
		}
		if ok {
			werr, err := channel.fillGuestinfo(store)
			if err != nil {
				return err
			}
			if werr != nil {
				logger.Warn("channel secret left in guestinfo, readable by the guest's processes", "err", werr)
			}
		}
	}
	diskUnits = scsiUnits(channel.guestinfo)
	var port string
	var f *os.File
	if channel.serial {
		if template {
			return errors.New("tether: a template guest's channel is the virtio-serial port, not a serial line")
		}
		if f, err = openSerialChannel(*channel); err != nil {
			return err
		}
		port = "/dev/" + channel.device
	} else {
		if port, err = waitPort(ctx); err != nil {
			return err
		}
		if f, err = os.OpenFile(port, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("tether: open channel %s: %w", port, err)
		}
	}
	var order []string
	var spares *spareNamespace
	var zyg *zygote
	var deferred, prepared bool
	if template {
		// What a guest does the same way for every container is done
		// once, here, before the save: the device drivers are loaded
		// with the virtio bus's autoprobe off, so they bind only to the
		// restored VM's own devices, after the wake.
		if err := setAutoprobe(false); err == nil {
			if err := loadModules(logger, func(string) bool { return true }); err != nil {
				return err
			}
		} else {
			logger.Warn("device drivers load after the wake", "err", err)
		}
		if sp, err := newSpareNS(); err == nil {
			spares = &sp
		}
		if zyg, err = startZygote(); err != nil {
			logger.Warn("no zygote; the main process's helper starts after the wake", "err", err)
		}
		// Saved here; every restored VM resumes in awaitWake.
		logger.Info("template ready", "port", port)
		w, err := awaitWake(f)
		if err != nil {
			return err
		}
		if w.Deferred {
			// A warm VM: its own entropy and clock now, its container's
			// devices when a claim names them.
			if err = reseedAndClock(w); err == nil {
				prepared = prepareWarm(logger)
			}
		} else {
			order, err = applyWake(logger, w)
		}
		if err != nil {
			return err
		}
		if _, err := f.WriteString(wire.Awake); err != nil {
			return fmt.Errorf("tether: answer wake: %w", err)
		}
		deferred = w.Deferred
	}
	srv := newServer(logger, reaper)
	if channel.serial {
		srv.rehello = channel.hello
		srv.channelTLS = channel.channelTLS()
		srv.frameStall = serialFrameStall
	}
	if spares != nil {
		srv.nics.useSpareNS(*spares)
	}
	srv.zygote = zyg
	if deferred {
		srv.unclaimed, srv.prepared = true, prepared
		t0 := time.Now()
		if err := srv.nics.rehearse(); err != nil {
			logger.Info("warm guest: no NIC rehearsal", "err", err)
		}
		t1 := time.Now()
		mounted, err := rehearseRoot(ctx)
		if err != nil {
			// Its root slot's device still shows the placeholder.
			logger.Warn("warm guest: root rehearsal left its disk bound; refusing claims", "err", err)
			srv.unclaimable = err
		}
		logger.Info("warm guest rehearsed", "nic", t1.Sub(t0), "root", time.Since(t1), "root_mounted", mounted)
		logger.Info("guest ready for a claim", "port", port)
		return srv.serve(f)
	}
	if err := bootRoot(ctx); err != nil {
		return err
	}
	srv.nics.order = order
	logger.Info("guest ready", "port", port, "restored", template)
	return srv.serve(f)
}

// bootRoot finds the container's root disk and mounts it (rootfs.go).
func bootRoot(ctx context.Context) error {
	root, err := findDisk(ctx, wire.RootSerial, true)
	if err != nil {
		return err
	}
	return mountRoot(root)
}

// claim makes a warm guest (woken with wire.Wake.Deferred) its
// container's: w is that container's wake. See wire.RequestClaim.
func (s *server) claim(ctx context.Context, w wire.Wake) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.unclaimed {
		return errors.New("tether: not a warm guest, or already claimed")
	}
	if s.unclaimable != nil {
		return s.unclaimable
	}
	t0 := time.Now()
	var order []string
	var err error
	if s.prepared {
		order, err = claimWake(w)
	} else {
		order, err = applyWake(s.logger, w)
	}
	if err != nil {
		return err
	}
	t1 := time.Now()
	if err := bootRoot(ctx); err != nil {
		return err
	}
	s.nics.order = order
	s.unclaimed = false
	s.logger.Info("guest claimed", "wake", t1.Sub(t0), "root", time.Since(t1))
	return nil
}

// isTemplate reports whether the kernel command line boots this guest as
// a template (wire.TemplateCmdline).
func isTemplate() bool {
	b, err := os.ReadFile("/proc/cmdline")
	return err == nil && slices.Contains(strings.Fields(string(b)), wire.TemplateCmdline)
}

func mountKernelFS() error {
	mounts := []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("tether: mkdir %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("tether: mount %s: %w", m.dst, err)
		}
	}
	return nil
}

// moduleParams holds the parameters a module is loaded with, by name.
//
// virtio_net's napi_tx=0 frees sent buffers when the next packet is sent
// instead of on a transmit interrupt (Linux drivers/net/virtio_net.c:
// the transmit queue's interrupt stays off and start_xmit orphans each
// skb). A guest under TCG pays dearly for every interrupt, and a
// container VM has one queue and one flow or few: HTTP through a
// published port from busybox httpd ran at a median 145 MiB/s against
// 101 with transmit NAPI (10 alternating rounds on one host, 2026-12-07;
// see docs/notes.md, Networks). What is given up is byte queue limits and
// TCP small queues' back-pressure on the sender, which bound latency
// under many competing flows on one NIC.
var moduleParams = map[string]string{"virtio_net": "napi_tx=0"}

// loadModules loads the modules named in ModulesOrder, in order, that
// want accepts (by name without ".ko"); a template guest loads only
// wire.ChannelModules at boot and the rest after its wake. A module that
// is already present (loaded before, or built in) is skipped.
func loadModules(logger *slog.Logger, want func(name string) bool) error {
	data, err := os.ReadFile(ModulesOrder)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tether: read module order: %w", err)
	}
	for _, name := range strings.Fields(string(data)) {
		mod := strings.TrimSuffix(name, ".ko")
		if !want(mod) {
			continue
		}
		// A loaded module is skipped before finit_module: the kernel would
		// copy and check the whole image before it answered EEXIST.
		if _, err := os.Stat(filepath.Join("/sys/module", strings.ReplaceAll(mod, "-", "_"))); err == nil {
			continue
		}
		f, err := os.Open(filepath.Join(ModulesDir, name))
		if err != nil {
			return fmt.Errorf("tether: module %s: %w", name, err)
		}
		err = unix.FinitModule(int(f.Fd()), moduleParams[mod], 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("tether: load module %s: %w", name, err)
		}
		logger.Debug("module loaded", "module", name)
	}
	return nil
}

// waitPort finds the virtio-serial port named wire.PortName and returns its
// device path.
func waitPort(ctx context.Context) (string, error) {
	deadline := time.Now().Add(deviceWait)
	for {
		matches, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err == nil && strings.TrimSpace(string(b)) == portName {
				dev := "/dev/" + filepath.Base(filepath.Dir(m))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("tether: virtio port %q did not appear within %s", portName, deviceWait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// powerOff syncs and powers the VM off. It never returns.
func powerOff() {
	unix.Sync()
	_ = unix.Unmount(RootMount, unix.MNT_DETACH)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Power-off unsupported: a reboot makes QEMU exit under -no-reboot.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		time.Sleep(time.Hour)
	}
}
