package portmap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vchproject/vch/internal/portlayer"
)

// errNoNetns reports that a private network namespace cannot be made here.
var errNoNetns = errors.New("cannot create a network namespace")

// inPrivateNetns runs fn on a thread moved into a new network namespace
// whose loopback is up; sockets fn creates live there. The thread is
// discarded afterwards.
func inPrivateNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("%w: unshare: %w", errNoNetns, err)
			return
		}
		if err := loopbackUp(); err != nil {
			errc <- fmt.Errorf("%w: lo up: %w", errNoNetns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// loopbackUp sets IFF_UP on lo (SIOCGIFFLAGS/SIOCSIFFLAGS, netdevice(7)).
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	for _, req := range []uintptr{syscall.SIOCGIFFLAGS, syscall.SIOCSIFFLAGS} {
		if req == syscall.SIOCSIFFLAGS {
			ifr.flags |= syscall.IFF_UP
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
			return errno
		}
	}
	return nil
}

// A port published on 0.0.0.0 answers from the address the client wrote
// to. The test binds 0.0.0.0 only inside a network namespace of its own,
// where the client at 127.0.0.1 writes to 127.0.0.2: without packet info
// the reply would leave from 127.0.0.1 and the client's connected socket
// would drop it.
func TestUDPReplyFromAddressClientSentTo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	m, _ := newMapper(t)
	backend := startUDPEcho(t) // in the test's own namespace, reached by the dialer
	err := inPrivateNetns(func() error {
		got, err := m.Publish("c1", loopback, []portlayer.PortBinding{{Proto: "udp", ContainerPort: backend.Port()}})
		if err != nil {
			return err
		}
		if got[0].HostIP != netip.IPv4Unspecified() {
			return fmt.Errorf("host address %s, want 0.0.0.0", got[0].HostIP)
		}
		to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), got[0].HostPort)
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)), net.UDPAddrFromAddrPort(to))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("no reply from %s: %w", to, err)
		}
		if string(buf[:n]) != "ping" {
			return fmt.Errorf("reply %q", buf[:n])
		}
		return nil
	})
	if errors.Is(err, errNoNetns) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestPacketInfoRoundTrip(t *testing.T) {
	for _, a := range []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("fd00::5")} {
		if got := parsePacketInfo(packetInfo(a)); got != a {
			t.Errorf("parse(build(%s)) = %s", a, got)
		}
	}
	if packetInfo(netip.Addr{}) != nil {
		t.Error("packetInfo(zero) is not nil")
	}
	if got := parsePacketInfo(nil); got.IsValid() {
		t.Errorf("parsePacketInfo(nil) = %s", got)
	}
}
