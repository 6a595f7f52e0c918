package network

import (
	"context"
	"fmt"
	"log/slog"
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
	if _, err := s.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "two", Subnet: netip.MustParsePrefix("172.18.5.0/24")}); !errdefs.IsPermissionDenied(err) {
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

	// Records survive a restart; the bridge is rebuilt.
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
	p.release(a)
	if b, err := p.allocate(netip.Addr{}, "y"); err != nil || b != a {
		t.Errorf("after release: %v %v", b, err)
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
