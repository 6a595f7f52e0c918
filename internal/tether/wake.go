package tether

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

// wakePoll is how often a template guest reads its port again while no
// host is connected (a restored VM's chardev may connect just after the
// guest resumed).
const wakePoll = 10 * time.Millisecond

// awaitWake announces the template (wire.TemplateReady) and reads the
// host's wire.Wake line. The VMM saves the guest during this wait; each
// restored VM returns from here with its own wake.
func awaitWake(port *os.File) (wire.Wake, error) {
	var w wire.Wake
	if _, err := port.WriteString(wire.TemplateReady); err != nil {
		return w, fmt.Errorf("tether: announce template: %w", err)
	}
	line := make([]byte, 0, 512)
	b := make([]byte, 1)
	for {
		n, err := port.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if len(line) >= wire.MaxWakeBytes {
				return w, fmt.Errorf("tether: wake longer than %d bytes", wire.MaxWakeBytes)
			}
			line = append(line, b[0])
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return w, fmt.Errorf("tether: read wake: %w", err)
		}
		// No host on the port (reads return 0): wait for one.
		time.Sleep(wakePoll)
	}
	if err := json.Unmarshal(line, &w); err != nil {
		return w, fmt.Errorf("tether: bad wake: %w", err)
	}
	return w, nil
}

// applyWake makes a restored guest its own: the host's entropy mixed into
// the kernel's pool and its CRNG reseeded, the host's clock, and the
// device drivers bound to this VM's root disk and shares (and any module
// a template did not load). Other disks and the network devices stay
// unbound until first used (findDisk, nics.locate): spare NICs and the
// image's disk cost a container nothing. It returns the NICs' boot MACs
// in device order.
func applyWake(logger *slog.Logger, w wire.Wake) ([]string, error) {
	if err := reseedAndClock(w); err != nil {
		return nil, err
	}
	if err := setAutoprobe(true); err != nil {
		return nil, err
	}
	if err := probeVirtio(func(typ string) bool { return typ != virtioNet && typ != virtioBlock }); err != nil {
		return nil, err
	}
	// Of the disks, only the first (the container's root, the host's
	// disk 0) binds now; the image's disk (diff, commit) and volumes bind
	// when findDisk first looks for them.
	if root, err := nthDevice(virtioBlock, 0); err == nil {
		bindVirtio(root)
	}
	// Drivers the template did not load (autoprobe could not be turned
	// off there) load now and bind as they load.
	if err := loadModules(logger, func(string) bool { return true }); err != nil {
		return nil, err
	}
	return bootOrder(w.BootMACs)
}

// bootOrder checks a wake's boot MACs and returns them lower-cased, in
// device order.
func bootOrder(macs []string) ([]string, error) {
	order := make([]string, len(macs))
	for i, boot := range macs {
		if _, err := net.ParseMAC(boot); err != nil {
			return nil, fmt.Errorf("tether: wake: NIC %d: %w", i, err)
		}
		order[i] = strings.ToLower(boot)
	}
	return order, nil
}

// claimWake applies a claim's wake in a warm guest that prepareWarm
// prepared: the rest of applyWake is done, so only the entropy, the
// clock and the root disk's binding remain.
func claimWake(w wire.Wake) ([]string, error) {
	if err := reseedAndClock(w); err != nil {
		return nil, err
	}
	if root, err := nthDevice(virtioBlock, 0); err == nil {
		bindVirtio(root)
	}
	return bootOrder(w.BootMACs)
}

// prepareWarm does, in a warm guest (wire.Wake.Deferred), the part of
// applyWake that needs nothing of a container, so its claim does less:
// the drivers of devices that are neither disks nor NICs bind, modules
// the template did not load load, and the first NIC's device binds (its
// tap is the VM's own; the container that claims the VM uses it as its
// first network's, and the guest sees it with the template's MAC until
// its setup gives it the container's). Disks stay unbound: their images
// are plugged at the claim. It reports whether all of it was done
// (claimWake may then stand in for applyWake); a failure only leaves the
// work to the claim.
func prepareWarm(logger *slog.Logger) bool {
	if err := setAutoprobe(true); err != nil {
		logger.Warn("warm guest: autoprobe", "err", err)
		return false
	}
	if err := probeVirtio(func(typ string) bool { return typ != virtioNet && typ != virtioBlock }); err != nil {
		logger.Warn("warm guest: devices", "err", err)
		return false
	}
	if err := loadModules(logger, func(string) bool { return true }); err != nil {
		logger.Warn("warm guest: modules", "err", err)
		return false
	}
	if dev, err := nthDevice(virtioNet, 0); err == nil {
		bindVirtio(dev)
	}
	return true
}

// rehearsalRoot is where a warm guest mounts its root slot's placeholder
// (rehearseRoot).
const rehearsalRoot = "/run/vch/rehearsal"

// rehearseRoot runs, on a warm guest's root disk slot, what its claim
// will run on the container's disk — bind the virtio-blk device, find
// its disk, mount it as a root with the kernel filesystems beneath — then
// undoes it and unbinds the device again, so the claim binds it afresh
// over the plugged image (its capacity and blocks read anew: nothing of
// the placeholder stays cached once the disk is gone). A clone runs code
// it has not run yet translated on first use (TCG), so the claim's bind
// and mount then run translated code. A placeholder without a filesystem
// rehearses the bind alone (mounted false). An error means the device
// is still bound to the placeholder: the guest must refuse its claim.
func rehearseRoot(ctx context.Context) (mounted bool, err error) {
	dev, err := nthDevice(virtioBlock, 0)
	if err != nil {
		return false, nil // no disk slot: nothing to rehearse
	}
	bindVirtio(dev)
	ctx, cancel := context.WithTimeout(ctx, deviceWait)
	defer cancel()
	if disk, err := deviceDisk(ctx, dev); err == nil {
		mounted = mountRootAt(disk, rehearsalRoot) == nil
		unmountRoot(rehearsalRoot)
	}
	if err := unbindVirtio(dev); err != nil {
		return mounted, err
	}
	return mounted, nil
}

// deviceDisk waits for the block device that virtio device dev's driver
// makes and returns its /dev path.
func deviceDisk(ctx context.Context, dev string) (string, error) {
	for {
		es, _ := os.ReadDir(filepath.Join(virtioBus, "devices", dev, "block"))
		if len(es) > 0 {
			p := "/dev/" + es[0].Name()
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("tether: no disk on %s: %w", dev, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// unmountRoot unmounts what mountRootAt mounted at root, beneath first;
// a mount that is not there is skipped.
func unmountRoot(root string) {
	for i := len(rootSubmounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(filepath.Join(root, rootSubmounts[i]), 0)
	}
	_ = unix.Unmount(root, 0)
}

// unbindVirtio unbinds virtio device dev from its driver; nil if it has
// none.
func unbindVirtio(dev string) error {
	link := filepath.Join(virtioBus, "devices", dev, "driver")
	if _, err := os.Lstat(link); err != nil {
		return nil
	}
	if err := os.WriteFile(filepath.Join(link, "unbind"), []byte(dev), 0); err != nil {
		return fmt.Errorf("tether: unbind %s: %w", dev, err)
	}
	if _, err := os.Lstat(link); err == nil {
		return fmt.Errorf("tether: unbind %s: still bound", dev)
	}
	return nil
}

// reseedAndClock takes a wake's entropy (reseed) and clock.
func reseedAndClock(w wire.Wake) error {
	if err := reseed(w.Entropy); err != nil {
		return err
	}
	if w.TimeUnixNano > 0 {
		tv := unix.NsecToTimeval(w.TimeUnixNano)
		if err := unix.Settimeofday(&tv); err != nil {
			return fmt.Errorf("tether: set clock: %w", err)
		}
	}
	return nil
}

// reseed credits entropy to the kernel's input pool (RNDADDENTROPY) and
// makes the CRNG take a new key from it at once (RNDRESEEDCRNG, Linux
// 4.17+), random(4).
func reseed(entropy []byte) error {
	if len(entropy) < wire.EntropyBytes {
		return fmt.Errorf("tether: wake carries %d bytes of entropy, want %d", len(entropy), wire.EntropyBytes)
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("tether: reseed: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(entropy))
	*(*int32)(unsafe.Pointer(&info[0])) = int32(len(entropy) * 8)
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(entropy))
	copy(info[8:], entropy)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("tether: reseed: RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("tether: reseed: RNDRESEEDCRNG: %w", e)
	}
	return nil
}

// virtioBus is the virtio bus in sysfs (Documentation/ABI/testing/sysfs-bus).
const virtioBus = "/sys/bus/virtio"

// setAutoprobe turns the virtio bus's automatic binding of drivers to
// devices on or off (drivers_autoprobe).
func setAutoprobe(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile(filepath.Join(virtioBus, "drivers_autoprobe"), []byte(v), 0); err != nil {
		return fmt.Errorf("tether: virtio autoprobe %s: %w", v, err)
	}
	return nil
}

// Virtio device IDs (virtio 1.2, 5 "Device Types") as sysfs shows them
// in a device's "device" file.
const (
	virtioNet   = "0x0001"
	virtioBlock = "0x0002"
)

// virtioDevices lists the virtio devices in the order the bus numbered
// them (virtio0, virtio1, …: the VMM's device order on microvm).
func virtioDevices() ([]string, error) {
	es, err := os.ReadDir(filepath.Join(virtioBus, "devices"))
	if err != nil {
		return nil, fmt.Errorf("tether: virtio devices: %w", err)
	}
	num := func(name string) int {
		n, _ := strconv.Atoi(strings.TrimPrefix(name, "virtio"))
		return n
	}
	names := make([]string, 0, len(es))
	for _, e := range es {
		names = append(names, e.Name())
	}
	slices.SortFunc(names, func(a, b string) int { return num(a) - num(b) })
	return names, nil
}

// virtioType is a virtio device's ID as sysfs shows it ("0x0001").
func virtioType(dev string) string {
	b, _ := os.ReadFile(filepath.Join(virtioBus, "devices", dev, "device"))
	return strings.TrimSpace(string(b))
}

// bindVirtio binds a driver to dev if it has none (drivers_probe, as
// autoprobe would have when the device appeared). A device no loaded
// driver matches (ENODEV, EINVAL) is left alone.
func bindVirtio(dev string) {
	if _, err := os.Lstat(filepath.Join(virtioBus, "devices", dev, "driver")); err == nil {
		return
	}
	_ = os.WriteFile(filepath.Join(virtioBus, "drivers_probe"), []byte(dev), 0)
}

// probeVirtio binds a driver to every unbound virtio device whose type
// want accepts.
func probeVirtio(want func(typ string) bool) error {
	devs, err := virtioDevices()
	if err != nil {
		return err
	}
	for _, d := range devs {
		if want(virtioType(d)) {
			bindVirtio(d)
		}
	}
	return nil
}

// nthDevice names the i-th virtio device of type typ, in device order.
func nthDevice(typ string, i int) (string, error) {
	devs, err := virtioDevices()
	if err != nil {
		return "", err
	}
	n := 0
	for _, d := range devs {
		if virtioType(d) != typ {
			continue
		}
		if n == i {
			return d, nil
		}
		n++
	}
	return "", fmt.Errorf("tether: no virtio device %d of type %s (%d there)", i, typ, n)
}
