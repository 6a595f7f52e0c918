package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"

	"github.com/vchproject/vch/internal/portlayer"
)

type nopPorts struct{}

func (nopPorts) Publish(owner string, target netip.Addr, ports []portlayer.PortBinding) ([]portlayer.PortBinding, error) {
	return ports, nil
}
func (nopPorts) Unpublish(string) {}
func (nopPorts) Close() error     { return nil }

// newTestService opens a Service in a namespace of the test's own.
func newTestService(t *testing.T, root string) *Service {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ns := fmt.Sprintf("vchtest-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	s, err := New(Config{Root: root, Namespace: ns}, func(Dialer) PortPublisher { return nopPorts{} }, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

const cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestNetworksLifecycle(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newTestService(t, root)
	nets, _ := s.ListNetworks(ctx)
	if len(nets) != 2 || nets[0].Name != "bridge" || nets[1].Name != "none" {
		t.Fatalf("predefined networks = %+v", nets)
	}
	n1, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if n1.Subnet.String() != "172.18.0.0/16" || n1.Gateway.String() != "172.18.0.1" {
		t.Errorf("auto subnet = %s gw %s", n1.Subnet, n1.Gateway)
	}
	if _, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "one"}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("duplicate name: %v", err)
	}
	if _, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "two", Subnet: netip.MustParsePrefix("172.18.5.0/24")}); !errdefs.IsConflict(err) {
		t.Errorf("overlap: %v", err)
	}
	n2, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "two", Subnet: netip.MustParsePrefix("10.9.0.0/24"), IPRange: netip.MustParsePrefix("10.9.0.128/25"), Internal: true})
	if err != nil {
		t.Fatal(err)
	}

	nic, err := s.NewNIC(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	defer nic.File.Close()
	ep, err := s.Join(ctx, cid, "web", nic.Name, portlayer.EndpointSpec{Network: "two", Aliases: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Address.String() != "10.9.0.128/24" || ep.MAC != "02:42:0a:09:00:80" || !ep.Internal {
		t.Errorf("endpoint = %+v", ep)
	}
	tap, err := s.ns.nl.LinkByName(nic.Name)
	if err != nil {
		t.Fatal(err)
	}
	br, _ := s.ns.nl.LinkByName(n2.Bridge)
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("tap %s not enslaved to %s", nic.Name, n2.Bridge)
	}
	if _, err := s.Join(ctx, cid, "web", nic.Name, portlayer.EndpointSpec{Network: "two"}); !errdefs.IsConflict(err) {
		t.Errorf("second join: %v", err)
	}
	if err := s.RemoveNetwork(ctx, "two"); !errdefs.IsPermissionDenied(err) {
		t.Errorf("remove in use: %v", err)
	}

	s.mu.Lock()
	lookup, reverse, external := s.viewLocked(cid)
	s.mu.Unlock()
	for _, name := range []string{"web", "DB", "web.two", cid[:12]} {
		if a, ok := lookup(name); !ok || a[0] != ep.Address.Addr() {
			t.Errorf("lookup %s = %v %v", name, a, ok)
		}
	}
	if name, ok := reverse(ep.Address.Addr()); !ok || name != "web.two" {
		t.Errorf("reverse = %q %v", name, ok)
	}
	if external {
		t.Error("internal-only container may forward")
	}

	s.LeaveAll(cid)
	tap, _ = s.ns.nl.LinkByName(nic.Name)
	if tap.Attrs().MasterIndex != 0 {
		t.Error("tap still enslaved after LeaveAll")
	}
	if err := s.RemoveNetwork(ctx, "two"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ns.nl.LinkByName(n2.Bridge); err == nil {
		t.Error("bridge survived removal")
	}
	if err := s.RemoveNetwork(ctx, "bridge"); !errdefs.IsPermissionDenied(err) {
		t.Errorf("remove predefined: %v", err)
	}

	// Records survive a restart; the bridge is rebuilt. (The VM's tap goes
	// first: a namespace with a tap in it outlives Close.)
	nic.File.Close()
	s.Close()
	s2 := newTestService(t, root)
	got, err := s2.InspectNetwork(ctx, "one")
	if err != nil || got.ID != n1.ID {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	if l, err := s2.ns.nl.LinkByName(got.Bridge); err != nil {
		t.Errorf("bridge not rebuilt: %v", err)
	} else if addrs, _ := s2.ns.nl.AddrList(l, netlink.FAMILY_V4); len(addrs) != 1 || addrs[0].IP.String() != "172.18.0.1" {
		t.Errorf("bridge addresses = %v", addrs)
	}
}

func TestPoolAllocation(t *testing.T) {
	p := newPool(netip.MustParsePrefix("10.0.0.0/30"), netip.MustParseAddr("10.0.0.1"), netip.Prefix{})
	a, err := p.allocate(netip.Addr{}, "x")
	if err != nil || a.String() != "10.0.0.2" {
		t.Fatalf("first = %v %v", a, err)
	}
	if _, err := p.allocate(netip.Addr{}, "y"); !errdefs.IsConflict(err) {
		t.Errorf("full pool: %v", err)
	}
	if _, err := p.allocate(netip.MustParseAddr("10.0.0.2"), "y"); !errdefs.IsConflict(err) {
		t.Errorf("taken static: %v", err)
	}
	if _, err := p.allocate(netip.MustParseAddr("10.0.1.2"), "y"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("outside: %v", err)
	}
	// The gateway, network and broadcast addresses are taken.
	for _, a := range []string{"10.0.0.1", "10.0.0.0", "10.0.0.3"} {
		_, err := p.allocate(netip.MustParseAddr(a), "y")
		if pe := portlayer.AsError(err); !errdefs.IsConflict(err) || pe == nil || pe.Kind != portlayer.KindAddress || pe.Reason != portlayer.ReasonInUse || pe.Value != a {
			t.Errorf("static %s: %v", a, err)
		}
	}
	p.release(a)
	if b, err := p.allocate(netip.Addr{}, "y"); err != nil || b != a {
		t.Errorf("after release: %v %v", b, err)
	}
}

// testNS makes a namespace of the test's own, removed at cleanup.
func testNS(t *testing.T, prefix string) *namespace {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%100000)
	ns, err := openNamespace(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.remove() })
	return ns
}

// TestEgress: a TCP connection from a container-like peer on a bridge
// network to an outside address (in a namespace the test made, standing
// for the world) goes through the redirect and the daemon's proxy; from an
// internal network it does not; loopback destinations are refused.
func TestEgress(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ctx := context.Background()
	// world stands for the host (egress dials from it); remote, behind a
	// veth pair on TEST-NET-2 (RFC 5737), for a server out there.
	world := testNS(t, "vchworld")
	remote := testNS(t, "vchremote")
	if err := world.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}); err != nil {
		t.Fatal(err)
	}
	up0, _ := world.nl.LinkByName("up0")
	up1, _ := world.nl.LinkByName("up1")
	if err := world.nl.LinkSetNsFd(up1, int(remote.handle)); err != nil {
		t.Fatal(err)
	}
	up1, _ = remote.nl.LinkByName("up1")
	world.nl.AddrAdd(up0, &netlink.Addr{IPNet: prefixToIPNet(netip.MustParsePrefix("198.51.100.1/24"))})
	remote.nl.AddrAdd(up1, &netlink.Addr{IPNet: prefixToIPNet(netip.MustParsePrefix("198.51.100.2/24"))})
	world.nl.LinkSetUp(up0)
	remote.nl.LinkSetUp(up1)
	var ln net.Listener
	if err := remote.do(func() (err error) { ln, err = net.Listen("tcp4", "198.51.100.2:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	ns := fmt.Sprintf("vchtest-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	s, err := New(Config{Root: t.TempDir(), Namespace: ns, EgressNamespace: world.name}, func(Dialer) PortPublisher { return nopPorts{} }, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	internal, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "int", Internal: true})
	if err != nil {
		t.Fatal(err)
	}

	// peer plugs a namespace into a bridge with addr, as a container VM's
	// NIC would be, and returns a dial function from inside it.
	peer := func(bridge string, addr netip.Prefix, gw netip.Addr, timeout time.Duration) func(string) (net.Conn, error) {
		p := testNS(t, "vchpeer")
		hostSide := fmt.Sprintf("vp%d", time.Now().UnixNano()%100000)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostSide}, PeerName: "eth0"}
		if err := s.ns.nl.LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		hl, _ := s.ns.nl.LinkByName(hostSide)
		br, _ := s.ns.nl.LinkByName(bridge)
		s.ns.nl.LinkSetMaster(hl, br)
		s.ns.nl.LinkSetUp(hl)
		pl, _ := s.ns.nl.LinkByName("eth0")
		if err := s.ns.nl.LinkSetNsFd(pl, int(p.handle)); err != nil {
			t.Fatal(err)
		}
		pl, _ = p.nl.LinkByName("eth0")
		p.nl.AddrAdd(pl, &netlink.Addr{IPNet: prefixToIPNet(addr)})
		p.nl.LinkSetUp(pl)
		p.nl.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: net.IP(gw.AsSlice())})
		return func(to string) (c net.Conn, err error) {
			err = p.do(func() error {
				c, err = net.DialTimeout("tcp4", to, timeout)
				return err
			})
			return
		}
	}
	echo := func(c net.Conn) string {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping"))
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		return string(b)
	}

	dial := peer(defaultBridgeDevice, netip.MustParsePrefix("172.17.0.77/16"), netip.MustParseAddr("172.17.0.1"), 10*time.Second)
	c, err := dial(ln.Addr().String())
	if err != nil {
		t.Fatalf("egress from the bridge: %v", err)
	}
	if got := echo(c); got != "ping" {
		t.Errorf("echo through egress = %q", got)
	}
	// The host's own addresses (where its API and management services
	// listen) are refused.
	if c, err := dial("198.51.100.1:22"); err == nil {
		if got := echo(c); got != "" {
			t.Errorf("reached the host's own address: %q", got)
		}
	}
	if err := s.egress.allowed(netip.MustParseAddr("198.51.100.1")); err == nil {
		t.Error("the egress namespace's own address allowed")
	}
	if err := s.egress.allowed(netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Error("loopback allowed")
	}
	if err := s.egress.allowed(netip.MustParseAddr("172.17.0.5")); err == nil {
		t.Error("a VCH address allowed")
	}

	idial := peer(internal.Bridge, netip.PrefixFrom(internal.Subnet.Addr().Next().Next(), internal.Subnet.Bits()), internal.Gateway, time.Second)
	if c, err := idial(ln.Addr().String()); err == nil {
		if got := echo(c); got == "ping" {
			t.Error("egress from an internal network")
		}
	}

	// A silent server out there: it reads to EOF and keeps its side open.
	var hold net.Listener
	if err := remote.do(func() (err error) { hold, err = net.Listen("tcp4", "198.51.100.2:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); <-stop; c.Close() }()
		}
	}()
	open := func() int {
		s.egress.mu.Lock()
		defer s.egress.mu.Unlock()
		return s.egress.total
	}
	waitOpen := func(what string, want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); open() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d egress connections open, want %d", what, open(), want)
			}
		}
	}
	mustDial := func() net.Conn {
		t.Helper()
		c, err := dial(hold.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitOpen("before", 0)
	// A container that resets its connection ends it on both sides, even
	// when the server out there stays silent.
	c1 := mustDial()
	waitOpen("connected", 1)
	c1.(*net.TCPConn).SetLinger(0)
	c1.Close()
	waitOpen("after a reset", 0)
	// A container's connections end with its endpoint (cut), as a VM that
	// is gone never closes them.
	c2 := mustDial()
	defer c2.Close()
	waitOpen("connected", 1)
	s.egress.cut(netip.MustParseAddr("172.17.0.77"))
	waitOpen("after cut", 0)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after cut = %v, want the connection closed", err)
	}
	// One container cannot take every descriptor of the daemon.
	s.egress.mu.Lock()
	s.egress.perSource = 2
	s.egress.mu.Unlock()
	for range 2 {
		defer mustDial().Close()
	}
	waitOpen("two open", 2)
	c3 := mustDial()
	defer c3.Close()
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read on a connection over the cap = %v, want it closed", err)
	}
	if n := open(); n != 2 {
		t.Errorf("%d egress connections open over a cap of 2", n)
	}
}

// A daemon that stops while a container VM runs keeps the namespace; the
// next one reuses it and re-registers the container's endpoint: its
// address stays taken, its names stay on the network, and the namespace
// goes once no container is left.
func TestNamespaceSurvivesRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ctx := context.Background()
	root := t.TempDir()
	ns := fmt.Sprintf("vchtest-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	open := func() *Service {
		s, err := New(Config{Root: root, Namespace: ns}, func(Dialer) PortPublisher { return nopPorts{} }, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := open()
	if _, err := s1.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "user"}); err != nil {
		t.Fatal(err)
	}
	nic, err := s1.NewNIC(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	defer nic.File.Close() // the VM's hold on the tap
	ep, err := s1.Join(ctx, cid, "web", nic.Name, portlayer.EndpointSpec{Network: "user", Aliases: []string{"www"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		t.Fatalf("namespace deleted while a container VM uses it: %v", err)
	}

	s2 := open()
	t.Cleanup(func() { s2.Close() })
	if err := s2.Restore(ctx, cid, "web", []string{"vt-gone"}, []portlayer.Endpoint{ep}); !errdefs.IsNotFound(err) {
		t.Errorf("Restore with a missing tap: %v, want NotFound", err)
	}
	if err := s2.Restore(ctx, cid, "web", []string{nic.Name}, []portlayer.Endpoint{ep}); err != nil {
		t.Fatal(err)
	}
	n, err := s2.InspectNetwork(ctx, "user")
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Endpoints) != 1 || n.Endpoints[0].Address != ep.Address || len(n.Endpoints[0].DNSNames) == 0 {
		t.Errorf("endpoints after Restore = %+v, want %+v", n.Endpoints, ep)
	}
	other := "f" + cid[1:]
	nic2, err := s2.NewNIC(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	defer nic2.File.Close()
	if _, err := s2.Join(ctx, other, "other", nic2.Name, portlayer.EndpointSpec{Network: "user", IPv4: ep.Address.Addr()}); !errdefs.IsConflict(err) {
		t.Errorf("joining with the restored container's address: %v, want Conflict", err)
	}
	ep2, err := s2.Join(ctx, other, "other", nic2.Name, portlayer.EndpointSpec{Network: "user"})
	if err != nil {
		t.Fatal(err)
	}
	if ep2.Address == ep.Address {
		t.Errorf("restored address %s handed out again", ep.Address)
	}
	s2.LeaveAll(cid)
	s2.LeaveAll(other)
	nic.File.Close() // the VMs end: their taps go
	nic2.File.Close()
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + ns); !os.IsNotExist(err) {
		t.Errorf("namespace kept with no container left: %v", err)
	}
}

func TestRenameUpdatesDNS(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, t.TempDir())
	if _, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "r"}); err != nil {
		t.Fatal(err)
	}
	nic, err := s.NewNIC(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	defer nic.File.Close()
	if _, err := s.Join(ctx, cid, "old", nic.Name, portlayer.EndpointSpec{Network: "r", Aliases: []string{"al"}}); err != nil {
		t.Fatal(err)
	}
	s.Rename(cid, "old", "new")
	s.mu.Lock()
	lookup, _, _ := s.viewLocked(cid)
	_, oldOK := lookup("old")
	_, newOK := lookup("new")
	_, aliasOK := lookup("al")
	s.mu.Unlock()
	if oldOK || !newOK || !aliasOK {
		t.Errorf("after rename: old %v new %v alias %v, want false true true", oldOK, newOK, aliasOK)
	}
	n, _ := s.InspectNetwork(ctx, "r")
	if len(n.Endpoints) != 1 || n.Endpoints[0].ContainerName != "new" {
		t.Errorf("endpoint name = %+v", n.Endpoints)
	}
}

// TestUplinkJoinsNetworks: with an uplink (a vSphere VCH's interface on
// the bridge portgroup) the default bridge holds it, and every other
// bridge network is joined to the default bridge by a veth pair, up, so
// the container VMs on the uplink's segment reach each network's gateway;
// joining again (a restarted daemon) is no error and deleting a network
// removes its pair.
func TestUplinkJoinsNetworks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ctx := context.Background()
	root := t.TempDir()
	ns := fmt.Sprintf("vchtest-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	uplink := fmt.Sprintf("vchup%d", os.Getpid()%100000)
	// A veth pair without addresses (it only carries frames): one end is
	// the uplink, moved into the VCH's namespace; the other stays here.
	peer := fmt.Sprintf("vchuq%d", os.Getpid()%100000)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: uplink}, PeerName: peer}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(peer); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	open := func() *Service {
		t.Helper()
		s, err := New(Config{Root: root, Namespace: ns, Uplink: uplink}, func(Dialer) PortPublisher { return nopPorts{} }, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	master := func(s *Service, name string) string {
		t.Helper()
		l, err := s.ns.nl.LinkByName(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s is down", name)
		}
		m, err := s.ns.nl.LinkByIndex(l.Attrs().MasterIndex)
		if err != nil {
			return ""
		}
		return m.Attrs().Name
	}
	s := open()
	t.Cleanup(func() { s.Close() })
	if got := master(s, uplink); got != defaultBridgeDevice {
		t.Errorf("uplink on %q, want %s", got, defaultBridgeDevice)
	}
	n, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "user"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := s.InspectNetwork(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	bridge := s.nets[in.ID].rec.Bridge
	a, b := uplinkPair(bridge)
	if got := master(s, a); got != bridge {
		t.Errorf("%s on %q, want %s", a, got, bridge)
	}
	if got := master(s, b); got != defaultBridgeDevice {
		t.Errorf("%s on %q, want %s", b, got, defaultBridgeDevice)
	}
	// A restarted daemon finds the pair in place (the namespace outlives
	// a daemon while containers run): joining again is no error.
	if err := s.joinUplink(s.nets[in.ID].rec); err != nil {
		t.Fatalf("joining again: %v", err)
	}
	if got := master(s, a); got != bridge {
		t.Errorf("after joining again %s on %q, want %s", a, got, bridge)
	}
	if err := s.RemoveNetwork(ctx, "user"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{a, b} {
		if _, err := s.ns.nl.LinkByName(name); err == nil {
			t.Errorf("%s left after the network's deletion", name)
		}
	}
}
