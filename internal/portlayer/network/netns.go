package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// namespace is the VCH's own network namespace: every bridge and tap lives
// in it, so container networks never touch the host's root namespace
// (DESIGN.md, network rule). It is a named namespace (/run/netns/NAME), so
// `ip netns exec NAME …` reaches it for debugging.
type namespace struct {
	name   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// openNamespace opens the named namespace, creating it (with loopback up
// and IPv4 forwarding off) if it does not exist.
func openNamespace(name string) (*namespace, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("network: open namespace %s: %w", name, err)
		}
		if h, err = createNamed(name); err != nil {
			return nil, err
		}
	}
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("network: netlink in namespace %s: %w", name, err)
	}
	ns := &namespace{name: name, handle: h, nl: nl}
	if lo, err := nl.LinkByName("lo"); err == nil {
		_ = nl.LinkSetUp(lo)
	}
	// No forwarding: containers reach peers on their own bridge only, and
	// networks are isolated from each other without any firewall rule.
	if err := ns.do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644)
	}); err != nil {
		ns.close()
		return nil, fmt.Errorf("network: namespace %s: disable forwarding: %w", name, err)
	}
	return ns, nil
}

// openExisting opens a named namespace that must exist (one the operator
// or a test made); tether-side settings are left alone.
func openExisting(name string) (*namespace, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("network: namespace %s: %w", name, err)
	}
	return &namespace{name: name, handle: h}, nil
}

// createNamed creates a named namespace without leaving any thread of this
// process inside it.
func createNamed(name string) (netns.NsHandle, error) {
	var h netns.NsHandle
	err := onLockedThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		h, err = netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			return fmt.Errorf("restore namespace: %w", serr)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("network: create namespace %s: %w", name, err)
	}
	return h, nil
}

// onLockedThread runs fn on a fresh goroutine locked to its OS thread. If
// fn returns errThreadTainted the thread is not unlocked, so Go discards it.
func onLockedThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		if !errors.Is(err, errThreadTainted) {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

var errThreadTainted = errors.New("thread left in another namespace")

// do runs fn on a thread inside the namespace.
func (ns *namespace) do(fn func() error) error {
	return onLockedThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(ns.handle); err != nil {
			return fmt.Errorf("enter namespace %s: %w", ns.name, err)
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			return fmt.Errorf("%w: %v", errThreadTainted, err)
		}
		return ferr
	})
}

// dial opens a connection from inside the namespace (the socket belongs to
// it for its whole life). address must be a literal IP and port.
func (ns *namespace) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := ns.do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// openTap creates a tap device inside the namespace and returns it open
// (IFF_TAP|IFF_NO_PI, Linux Documentation/networking/tuntap.rst). The
// device is not persistent: it disappears when the last descriptor closes.
// IFF_VNET_HDR puts a virtio-net header before each frame, which lets
// QEMU offer the guest checksum and segmentation offloads (it sets the
// tap's offloads, TUNSETOFFLOAD, to what the guest's driver accepts): the
// guest then sends 64 KiB TCP segments instead of MTU-sized frames, and
// under emulation the per-frame work is what costs (measured: a published
// port 30 → 138 MiB/s, container to container 42 → 119 MiB/s).
func (ns *namespace) openTap() (*os.File, string, error) {
	var f *os.File
	var name string
	err := ns.do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req struct {
			name  [unix.IFNAMSIZ]byte
			flags uint16
			_     [22]byte
		}
		copy(req.name[:], "vt%d")
		req.flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", errno)
		}
		name = unix.ByteSliceToString(req.name[:])
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("network: create tap: %w", err)
	}
	link, err := ns.nl.LinkByName(name)
	if err == nil {
		err = ns.nl.LinkSetUp(link)
	}
	if err != nil {
		f.Close()
		return nil, "", fmt.Errorf("network: tap %s up: %w", name, err)
	}
	return f, name, nil
}

// taps counts the tap devices in the namespace (each held open by a VM).
func (ns *namespace) taps() int {
	links, err := ns.nl.LinkList()
	if err != nil {
		return 1 // unknown: keep the namespace rather than cut a VM off
	}
	n := 0
	for _, l := range links {
		if l.Type() == "tuntap" {
			n++
		}
	}
	return n
}

// close releases the handles; the namespace itself stays.
func (ns *namespace) close() {
	if ns.nl != nil {
		ns.nl.Close()
	}
	ns.handle.Close()
}

// remove releases the handles and deletes the named namespace with every
// device still in it.
func (ns *namespace) remove() error {
	ns.close()
	if err := netns.DeleteNamed(ns.name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network: delete namespace %s: %w", ns.name, err)
	}
	return nil
}
