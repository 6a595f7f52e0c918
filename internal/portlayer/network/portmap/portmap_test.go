package portmap

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// Tests send traffic to 127.0.0.1 only (DESIGN.md's network rule): the
// "container" side is a backend on loopback that fakeDialer reaches.

var loopback = netip.MustParseAddr("127.0.0.1")

// ioTimeout bounds every blocking read in the tests.
const ioTimeout = 5 * time.Second

// fakeDialer dials loopback backends and records what it was asked and
// what it returned; fail makes it fail instead.
type fakeDialer struct {
	mu    sync.Mutex
	calls []string // "network address"
	conns []net.Conn
	fail  error
}

func (d *fakeDialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.calls = append(d.calls, network+" "+address)
	fail := d.fail
	d.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, nil
}

func (d *fakeDialer) setFail(err error) {
	d.mu.Lock()
	d.fail = err
	d.mu.Unlock()
}

// callCount returns how many dials of network were asked for.
func (d *fakeDialer) callCount(network string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if len(c) > len(network) && c[:len(network)+1] == network+" " {
			n++
		}
	}
	return n
}

func (d *fakeDialer) conn(i int) net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[i]
}

func newMapper(t testing.TB) (*Mapper, *fakeDialer) {
	t.Helper()
	d := &fakeDialer{}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, ok := t.(*testing.B); ok {
		logger = nil // keep benchmark output to the figures
	}
	m := New(d.dial, logger)
	t.Cleanup(func() { m.Close() })
	return m, d
}

// tcpEcho is a loopback backend that echoes each connection and
// half-closes when its client does; ended receives once per connection
// whose client side has ended.
type tcpEcho struct {
	addr  netip.AddrPort
	ended chan struct{}
}

func startTCPEcho(t testing.TB) *tcpEcho {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &tcpEcho{addr: ln.Addr().(*net.TCPAddr).AddrPort(), ended: make(chan struct{}, 1024)}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				e.ended <- struct{}{}
			})
		}
	})
	return e
}

// startUDPEcho is a loopback backend that sends every datagram back.
func startUDPEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, MaxDatagramBytes)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func tcpBinding(hostPort, hostPortEnd, containerPort uint16) portlayer.PortBinding {
	return portlayer.PortBinding{Proto: "tcp", ContainerPort: containerPort, HostIP: loopback, HostPort: hostPort, HostPortEnd: hostPortEnd}
}

func udpBinding(hostPort, containerPort uint16) portlayer.PortBinding {
	return portlayer.PortBinding{Proto: "udp", ContainerPort: containerPort, HostIP: loopback, HostPort: hostPort}
}

func mustPublish(t testing.TB, m *Mapper, owner string, ports ...portlayer.PortBinding) []portlayer.PortBinding {
	t.Helper()
	got, err := m.Publish(owner, loopback, ports)
	if err != nil {
		t.Fatalf("Publish(%s): %v", owner, err)
	}
	if len(got) != len(ports) {
		t.Fatalf("Publish(%s) returned %d bindings, want %d", owner, len(got), len(ports))
	}
	return got
}

func hostAddr(pb portlayer.PortBinding) string {
	return netip.AddrPortFrom(pb.HostIP, pb.HostPort).String()
}

// tcpRoundTrip sends msg, half-closes and returns everything read until
// EOF.
func tcpRoundTrip(t testing.TB, addr string, msg []byte) []byte {
	t.Helper()
	got, err := roundTrip(addr, msg)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func roundTrip(addr string, msg []byte) ([]byte, error) {
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return nil, fmt.Errorf("read from %s: %w", addr, err)
	}
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("write to %s: %w", addr, err)
	}
	return got, nil
}

// freePort returns a port that was free on 127.0.0.1 for proto a moment ago.
func freePort(t testing.TB, proto string) uint16 {
	t.Helper()
	c := holdPort(t, proto, 0)
	port := localPort(c)
	c.Close()
	return port
}

// holdPort binds 127.0.0.1:port for proto, as another process would.
func holdPort(t testing.TB, proto string, port uint16) io.Closer {
	t.Helper()
	c, err := tryHold(proto, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tryHold(proto string, port uint16) (io.Closer, error) {
	addr := netip.AddrPortFrom(loopback, port)
	if proto == "tcp" {
		return net.Listen("tcp4", addr.String())
	}
	return net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
}

func localPort(c io.Closer) uint16 {
	switch c := c.(type) {
	case net.Listener:
		return c.Addr().(*net.TCPAddr).AddrPort().Port()
	case *net.UDPConn:
		return c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	}
	panic("unknown socket")
}

// heldRun binds n consecutive ports for proto and returns the first and
// the sockets.
func heldRun(t testing.TB, proto string, n int) (uint16, []io.Closer) {
	t.Helper()
	for range 100 {
		first := holdPort(t, proto, 0)
		start := localPort(first)
		held := []io.Closer{first}
		for i := 1; i < n && int(start)+i <= 65535; i++ {
			c, err := tryHold(proto, start+uint16(i))
			if err != nil {
				break
			}
			t.Cleanup(func() { c.Close() })
			held = append(held, c)
		}
		if len(held) == n {
			return start, held
		}
		for _, c := range held {
			c.Close()
		}
	}
	t.Fatalf("found no %d consecutive free %s ports", n, proto)
	return 0, nil
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		c.Close()
	}
}

// waitClosed waits, up to ioTimeout, until the read side of c reports
// EOF or an error other than a timeout.
func waitClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("connection still open after Unpublish")
		}
		return
	}
}

func TestTCPRoundTrip(t *testing.T) {
	m, d := newMapper(t)
	echo := startTCPEcho(t)
	got := mustPublish(t, m, "c1", tcpBinding(0, 0, echo.addr.Port()))
	if got[0].HostPort == 0 || got[0].HostIP != loopback || got[0].HostPortEnd != 0 ||
		got[0].Proto != "tcp" || got[0].ContainerPort != echo.addr.Port() {
		t.Fatalf("binding = %+v", got[0])
	}

	big := make([]byte, 4<<20)
	rand.Read(big)
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{name: "request", msg: []byte("GET / HTTP/1.0\r\n\r\n")},
		{name: "empty", msg: nil},
		{name: "4MiB", msg: big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if reply := tcpRoundTrip(t, hostAddr(got[0]), tc.msg); !bytes.Equal(reply, tc.msg) {
				t.Fatalf("echo returned %d bytes, want %d equal ones", len(reply), len(tc.msg))
			}
		})
	}
	want := "tcp " + echo.addr.String()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.calls) != 3 || d.calls[0] != want {
		t.Fatalf("dialer calls = %q, want 3 of %q", d.calls, want)
	}
}

// The container closes its sending side first and keeps reading: the
// client sees EOF and can still send.
func TestTCPServerHalfClose(t *testing.T) {
	m, _ := newMapper(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- err.Error()
			return
		}
		defer c.Close()
		c.Write([]byte("banner"))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		b, err := io.ReadAll(c)
		if err != nil {
			received <- err.Error()
			return
		}
		received <- string(b)
	}()
	got := mustPublish(t, m, "c1", tcpBinding(0, 0, ln.Addr().(*net.TCPAddr).AddrPort().Port()))

	c, err := net.Dial("tcp4", hostAddr(got[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	banner, err := io.ReadAll(c)
	if err != nil || string(banner) != "banner" {
		t.Fatalf("read %q, %v; want banner then EOF", banner, err)
	}
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if got := <-received; got != "bye" {
		t.Fatalf("container received %q, want bye", got)
	}
}

func TestTCPDialFailureClosesClient(t *testing.T) {
	m, d := newMapper(t)
	d.setFail(fmt.Errorf("connect: %w", syscall.ECONNREFUSED))
	got := mustPublish(t, m, "c1", tcpBinding(0, 0, 80))
	c, err := net.Dial("tcp4", hostAddr(got[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitClosed(t, c)
	if d.callCount("tcp") != 1 {
		t.Fatalf("dialer calls = %q", d.calls)
	}
}

func TestRange(t *testing.T) {
	echo := startTCPEcho(t)
	cport := echo.addr.Port()

	t.Run("skips a port held by another socket", func(t *testing.T) {
		m, _ := newMapper(t)
		start, held := heldRun(t, "tcp", 1)
		_ = held
		got := mustPublish(t, m, "c1", tcpBinding(start, start+20, cport))
		if p := got[0].HostPort; p <= start || p > start+20 {
			t.Fatalf("host port %d, want in %d-%d", p, start+1, start+20)
		}
		if reply := tcpRoundTrip(t, hostAddr(got[0]), []byte("x")); string(reply) != "x" {
			t.Fatalf("echo = %q", reply)
		}
	})
	t.Run("skips a port the mapper holds", func(t *testing.T) {
		m, _ := newMapper(t)
		start, held := heldRun(t, "tcp", 2)
		closeAll(held)
		mustPublish(t, m, "a", tcpBinding(start, 0, cport))
		got := mustPublish(t, m, "b", tcpBinding(start, start+1, cport))
		if got[0].HostPort != start+1 {
			t.Fatalf("host port %d, want %d (the first free one)", got[0].HostPort, start+1)
		}
	})
	t.Run("every port held by other sockets", func(t *testing.T) {
		m, _ := newMapper(t)
		start, _ := heldRun(t, "tcp", 2)
		_, err := m.Publish("c1", loopback, []portlayer.PortBinding{tcpBinding(start, start+1, cport)})
		want := fmt.Sprintf("port in_use %d 127.0.0.1:%d-%d:127.0.0.1:%d/tcp address already in use",
			start+1, start, start+1, cport)
		if typed(err) != want || !errdefs.IsConflict(err) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("err = %v, want %q (Conflict, EADDRINUSE)", err, want)
		}
	})
	t.Run("every port held by the mapper", func(t *testing.T) {
		m, _ := newMapper(t)
		start, held := heldRun(t, "tcp", 2)
		closeAll(held)
		mustPublish(t, m, "a", tcpBinding(start, 0, cport), tcpBinding(start+1, 0, cport))
		_, err := m.Publish("b", loopback, []portlayer.PortBinding{tcpBinding(start, start+1, cport)})
		if want := fmt.Sprintf("port exhausted  127.0.0.1:%d-%d:127.0.0.1:%d/tcp ", start, start+1, cport); typed(err) != want || !errdefs.IsConflict(err) {
			t.Fatalf("err = %v, want all ports are allocated (Conflict)", err)
		}
	})
}

// typed is "Kind Reason Name Value Cause" of err's *portlayer.Error.
func typed(err error) string {
	pe := portlayer.AsError(err)
	if pe == nil {
		return fmt.Sprintf("untyped %v", err)
	}
	return fmt.Sprint(pe.Kind, " ", pe.Reason, " ", pe.Name, " ", pe.Value, " ", pe.CauseText())
}

// The conflicts' typed fields, from which a front end writes its texts.
func TestConflict(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto+" held by the mapper", func(t *testing.T) {
			m, _ := newMapper(t)
			port := freePort(t, proto)
			pb := portlayer.PortBinding{Proto: proto, ContainerPort: 80, HostIP: loopback, HostPort: port}
			mustPublish(t, m, "a", pb)
			for _, owner := range []string{"a", "b"} {
				_, err := m.Publish(owner, netip.MustParseAddr("172.17.0.2"), []portlayer.PortBinding{pb})
				want := fmt.Sprintf("port allocated  127.0.0.1:%d ", port)
				if typed(err) != want || !errdefs.IsConflict(err) {
					t.Fatalf("owner %s: err = %v, want %q (Conflict)", owner, err, want)
				}
			}
		})
		t.Run(proto+" held by another socket", func(t *testing.T) {
			m, _ := newMapper(t)
			port := localPort(holdPort(t, proto, 0))
			pb := portlayer.PortBinding{Proto: proto, ContainerPort: 80, HostIP: loopback, HostPort: port}
			_, err := m.Publish("a", netip.MustParseAddr("172.17.0.2"), []portlayer.PortBinding{pb})
			want := fmt.Sprintf("port in_use  127.0.0.1:%d:172.17.0.2:80/%s address already in use", port, proto)
			if typed(err) != want || !errdefs.IsConflict(err) || !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("err = %v, want %q (Conflict, EADDRINUSE)", err, want)
			}
		})
	}
	t.Run("same port twice in one call", func(t *testing.T) {
		m, _ := newMapper(t)
		port := freePort(t, "tcp")
		_, err := m.Publish("a", loopback, []portlayer.PortBinding{tcpBinding(port, 0, 80), tcpBinding(port, 0, 81)})
		if !errdefs.IsConflict(err) {
			t.Fatalf("err = %v, want Conflict", err)
		}
		holdPort(t, "tcp", port) // released again
	})
	t.Run("tcp and udp on one port", func(t *testing.T) {
		m, _ := newMapper(t)
		port := freePort(t, "tcp")
		for {
			c, err := tryHold("udp", port)
			if err == nil {
				c.Close()
				break
			}
			port = freePort(t, "tcp")
		}
		mustPublish(t, m, "a", tcpBinding(port, 0, 80), udpBinding(port, 80))
	})
}

func TestAllOrNothing(t *testing.T) {
	m, _ := newMapper(t)
	echo := startTCPEcho(t)
	earlier := mustPublish(t, m, "c1", tcpBinding(0, 0, echo.addr.Port()))

	free := freePort(t, "tcp")
	freeUDP := freePort(t, "udp")
	taken := localPort(holdPort(t, "tcp", 0))
	_, err := m.Publish("c1", loopback, []portlayer.PortBinding{
		tcpBinding(free, 0, echo.addr.Port()),
		udpBinding(freeUDP, 53),
		tcpBinding(taken, 0, echo.addr.Port()),
	})
	if !errdefs.IsConflict(err) {
		t.Fatalf("err = %v, want Conflict", err)
	}
	// This call's ports are free again...
	holdPort(t, "tcp", free)
	holdPort(t, "udp", freeUDP)
	// ...and the earlier one is untouched.
	if b := m.Bindings("c1"); len(b) != 1 || b[0] != earlier[0] {
		t.Fatalf("Bindings = %+v, want %+v", b, earlier)
	}
	if reply := tcpRoundTrip(t, hostAddr(earlier[0]), []byte("still")); string(reply) != "still" {
		t.Fatalf("echo = %q", reply)
	}
}

func TestPublishAddsToOwner(t *testing.T) {
	m, _ := newMapper(t)
	echo := startTCPEcho(t)
	a := mustPublish(t, m, "c1", tcpBinding(0, 0, echo.addr.Port()))
	b := mustPublish(t, m, "c1", tcpBinding(0, 0, echo.addr.Port()))
	if got := m.Bindings("c1"); len(got) != 2 || got[0] != a[0] || got[1] != b[0] {
		t.Fatalf("Bindings = %+v", got)
	}
	for _, pb := range append(a, b...) {
		if reply := tcpRoundTrip(t, hostAddr(pb), []byte("hi")); string(reply) != "hi" {
			t.Fatalf("echo = %q", reply)
		}
	}
	m.Unpublish("c1")
	holdPort(t, "tcp", a[0].HostPort)
	holdPort(t, "tcp", b[0].HostPort)
	if got := m.Bindings("c1"); got != nil {
		t.Fatalf("Bindings after Unpublish = %+v", got)
	}
}

func TestUnpublish(t *testing.T) {
	t.Run("tcp frees the port and cuts connections", func(t *testing.T) {
		m, _ := newMapper(t)
		echo := startTCPEcho(t)
		other := mustPublish(t, m, "other", tcpBinding(0, 0, echo.addr.Port()))
		got := mustPublish(t, m, "c1", tcpBinding(0, 0, echo.addr.Port()))

		c, err := net.Dial("tcp4", hostAddr(got[0]))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("read %q, %v", buf, err)
		}

		m.Unpublish("c1")
		waitClosed(t, c)
		select {
		case <-echo.ended: // the container side was closed too
		case <-time.After(ioTimeout):
			t.Fatal("container side still open after Unpublish")
		}
		// The port is free for anyone, and for the mapper again.
		l := holdPort(t, "tcp", got[0].HostPort)
		l.Close()
		again := mustPublish(t, m, "c2", tcpBinding(got[0].HostPort, 0, echo.addr.Port()))
		if reply := tcpRoundTrip(t, hostAddr(again[0]), []byte("again")); string(reply) != "again" {
			t.Fatalf("echo = %q", reply)
		}
		// Another owner's ports are untouched.
		if reply := tcpRoundTrip(t, hostAddr(other[0]), []byte("other")); string(reply) != "other" {
			t.Fatalf("echo = %q", reply)
		}
	})
	t.Run("udp frees the port and closes flows", func(t *testing.T) {
		m, d := newMapper(t)
		backend := startUDPEcho(t)
		got := mustPublish(t, m, "c1", udpBinding(0, backend.Port()))
		c := udpClient(t, hostAddr(got[0]))
		if reply := udpRoundTrip(t, c, []byte("ping")); string(reply) != "ping" {
			t.Fatalf("reply = %q", reply)
		}
		m.Unpublish("c1")
		if _, err := d.conn(0).Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("flow socket write after Unpublish: %v, want net.ErrClosed", err)
		}
		holdPort(t, "udp", got[0].HostPort)
	})
	t.Run("unknown owner", func(t *testing.T) {
		m, _ := newMapper(t)
		m.Unpublish("nobody")
		m.Unpublish("")
	})
}

func TestInvalidArgument(t *testing.T) {
	m, _ := newMapper(t)
	for _, tc := range []struct {
		name   string
		owner  string
		target netip.Addr
		pb     portlayer.PortBinding
	}{
		{name: "sctp", pb: portlayer.PortBinding{Proto: "sctp", ContainerPort: 80}},
		{name: "empty proto", pb: portlayer.PortBinding{ContainerPort: 80}},
		{name: "upper-case proto", pb: portlayer.PortBinding{Proto: "TCP", ContainerPort: 80}},
		{name: "container port 0", pb: portlayer.PortBinding{Proto: "tcp"}},
		{name: "range end below start", pb: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80, HostPort: 8010, HostPortEnd: 8000}},
		{name: "range without start", pb: portlayer.PortBinding{Proto: "udp", ContainerPort: 80, HostPortEnd: 8000}},
		{name: "zero target", target: netip.Addr{}, pb: tcpBinding(0, 0, 80)},
		{name: "empty owner", owner: "-", pb: tcpBinding(0, 0, 80)},
		{name: "host address not local", pb: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80, HostIP: netip.MustParseAddr("192.0.2.1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			owner, target := tc.owner, tc.target
			switch owner {
			case "":
				owner = "c1"
			case "-":
				owner = ""
			}
			if !target.IsValid() && tc.name != "zero target" {
				target = loopback
			}
			_, err := m.Publish(owner, target, []portlayer.PortBinding{tc.pb})
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if b := m.Bindings(owner); b != nil {
				t.Fatalf("Bindings = %+v", b)
			}
		})
	}
}

func TestClose(t *testing.T) {
	m, _ := newMapper(t)
	echo := startTCPEcho(t)
	got := mustPublish(t, m, "c1", tcpBinding(0, 0, echo.addr.Port()))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	holdPort(t, "tcp", got[0].HostPort)
	if _, err := m.Publish("c2", loopback, []portlayer.PortBinding{tcpBinding(0, 0, 80)}); !errdefs.IsUnavailable(err) {
		t.Fatalf("Publish after Close: %v, want Unavailable", err)
	}
	m.Unpublish("c1")
}

func TestConcurrentPublishUnpublish(t *testing.T) {
	m, _ := newMapper(t)
	echo := startTCPEcho(t)
	backend := startUDPEcho(t)
	shared := freePort(t, "tcp")

	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 15 {
				owner := fmt.Sprintf("c%d-%d", g, i)
				got, err := m.Publish(owner, loopback, []portlayer.PortBinding{
					tcpBinding(0, 0, echo.addr.Port()),
					udpBinding(0, backend.Port()),
				})
				if err != nil {
					errc <- err
					return
				}
				if reply, err := roundTrip(hostAddr(got[0]), []byte(owner)); err != nil || string(reply) != owner {
					errc <- fmt.Errorf("%s: echo %q, %v", owner, reply, err)
				}
				// Everyone races for one fixed port: exactly one wins at a time.
				if _, err := m.Publish(owner, loopback, []portlayer.PortBinding{tcpBinding(shared, 0, echo.addr.Port())}); err != nil && !errdefs.IsConflict(err) {
					errc <- fmt.Errorf("%s: shared port: %w", owner, err)
				}
				m.Bindings(owner)
				m.Unpublish(owner)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	holdPort(t, "tcp", shared)
}

// An IPv6 host address (docker run -p [::1]:8080:80) is bound as IPv6 and
// forwarded to the container's IPv4 address, TCP and UDP alike.
func TestIPv6HostToIPv4Target(t *testing.T) {
	if c, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	m, _ := newMapper(t)
	echo := startTCPEcho(t)
	udp := startUDPEcho(t)
	v6 := netip.IPv6Loopback()
	got, err := m.Publish("c1", loopback, []portlayer.PortBinding{
		{Proto: "tcp", ContainerPort: echo.addr.Port(), HostIP: v6},
		{Proto: "udp", ContainerPort: udp.Port(), HostIP: v6},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].HostIP != v6 || got[0].HostPort == 0 || got[1].HostIP != v6 {
		t.Fatalf("bindings = %+v", got)
	}
	c, err := net.Dial("tcp6", hostAddr(got[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	c.Write([]byte("over v6"))
	c.(*net.TCPConn).CloseWrite()
	if b, _ := io.ReadAll(c); string(b) != "over v6" {
		t.Errorf("tcp echo = %q", b)
	}
	u, err := net.Dial("udp6", hostAddr(got[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(ioTimeout))
	u.Write([]byte("datagram"))
	buf := make([]byte, 64)
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "datagram" {
		t.Errorf("udp echo = %q, %v", buf[:n], err)
	}
}
