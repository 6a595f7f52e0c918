package tether

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/tether/wire"
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
// the kernel's pool and its CRNG reseeded, the host's clock, the device
// modules a template did not load (they probe this VM's disks and NICs),
// and the NICs' identities. It returns the boot MAC → current MAC map for
// the NICs, which still carry the template's addresses.
func applyWake(logger *slog.Logger, w wire.Wake) (map[string]string, error) {
	if err := reseed(w.Entropy); err != nil {
		return nil, err
	}
	if w.TimeUnixNano > 0 {
		tv := unix.NsecToTimeval(w.TimeUnixNano)
		if err := unix.Settimeofday(&tv); err != nil {
			return nil, fmt.Errorf("tether: set clock: %w", err)
		}
	}
	if err := setAutoprobe(true); err != nil {
		return nil, err
	}
	if err := probeVirtio(); err != nil {
		return nil, err
	}
	// Drivers the template did not load (autoprobe could not be turned
	// off there) load now and bind as they load.
	if err := loadModules(logger, func(string) bool { return true }); err != nil {
		return nil, err
	}
	current := map[string]string{}
	for i, boot := range w.BootMACs {
		tmac := wire.TemplateMAC(i)
		if linkByMAC(netlink.LinkList, tmac) == nil {
			continue // the NIC already shows its own address
		}
		if _, err := net.ParseMAC(boot); err != nil {
			return nil, fmt.Errorf("tether: wake: NIC %d: %w", i, err)
		}
		current[strings.ToLower(boot)] = tmac
	}
	return current, nil
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

// probeVirtio binds a driver to every virtio device that has none
// (drivers_probe), as autoprobe would have when the device appeared.
func probeVirtio() error {
	devs, err := os.ReadDir(filepath.Join(virtioBus, "devices"))
	if err != nil {
		return fmt.Errorf("tether: virtio devices: %w", err)
	}
	for _, d := range devs {
		if _, err := os.Lstat(filepath.Join(virtioBus, "devices", d.Name(), "driver")); err == nil {
			continue
		}
		// A device no loaded driver matches (ENODEV, EINVAL) is left alone.
		_ = os.WriteFile(filepath.Join(virtioBus, "drivers_probe"), []byte(d.Name()), 0)
	}
	return nil
}
