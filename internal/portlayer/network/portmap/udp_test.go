package portmap

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// udpClient is a connected UDP socket on 127.0.0.1 sending to addr.
func udpClient(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpRoundTrip sends msg and returns the first datagram back.
func udpRoundTrip(t testing.TB, c *net.UDPConn, msg []byte) []byte {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, MaxDatagramBytes)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return buf[:n]
}

func TestUDPTwoClients(t *testing.T) {
	m, d := newMapper(t)
	backend := startUDPEcho(t)
	got := mustPublish(t, m, "c1", udpBinding(0, backend.Port()))
	if got[0].HostPort == 0 || got[0].Proto != "udp" {
		t.Fatalf("binding = %+v", got[0])
	}
	a := udpClient(t, hostAddr(got[0]))
	b := udpClient(t, hostAddr(got[0]))

	big := make([]byte, 60000) // under loopback's 64 KiB MTU
	rand.Read(big)
	for i, tc := range []struct {
		c   *net.UDPConn
		msg []byte
	}{
		{a, []byte("from a")},
		{b, []byte("from b")},
		{a, []byte("a again")},
		{b, big},
	} {
		if reply := udpRoundTrip(t, tc.c, tc.msg); !bytes.Equal(reply, tc.msg) {
			t.Fatalf("datagram %d: reply of %d bytes, want its own %d bytes back", i, len(reply), len(tc.msg))
		}
	}
	if n := d.callCount("udp"); n != 2 {
		t.Fatalf("dialer calls = %q, want one flow per client", d.calls)
	}
	if want := "udp " + backend.String(); d.calls[0] != want {
		t.Fatalf("dialer call %q, want %q", d.calls[0], want)
	}
}

func TestUDPIdleTimeout(t *testing.T) {
	m, d := newMapper(t)
	m.udpIdle = 300 * time.Millisecond
	backend := startUDPEcho(t)
	got := mustPublish(t, m, "c1", udpBinding(0, backend.Port()))
	c := udpClient(t, hostAddr(got[0]))

	// Traffic more often than the timeout keeps the flow.
	for range 8 {
		if reply := udpRoundTrip(t, c, []byte("tick")); string(reply) != "tick" {
			t.Fatalf("reply = %q", reply)
		}
		time.Sleep(m.udpIdle / 3)
	}
	if n := d.callCount("udp"); n != 1 {
		t.Fatalf("%d flows for one client with steady traffic, want 1", n)
	}

	// Silence closes it...
	deadline := time.Now().Add(ioTimeout)
	for flows(m, "c1") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("flow still open long after the idle timeout")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := d.conn(0).Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("idle flow's socket: write %v, want net.ErrClosed", err)
	}
	// ...and the next datagram opens a new one.
	if reply := udpRoundTrip(t, c, []byte("back")); string(reply) != "back" {
		t.Fatalf("reply = %q", reply)
	}
	if n := d.callCount("udp"); n != 2 {
		t.Fatalf("dialer calls = %q, want a second flow", d.calls)
	}
}

// flows counts owner's open UDP flows.
func flows(m *Mapper, owner string) int {
	m.mu.Lock()
	ps := m.owners[owner]
	m.mu.Unlock()
	n := 0
	for _, p := range ps {
		p.mu.Lock()
		n += len(p.flows)
		p.mu.Unlock()
	}
	return n
}
