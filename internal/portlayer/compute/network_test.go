package compute_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/compute"
)

// fakeNet is a portlayer.NetworkPlumber and portlayer.Networks over
// in-memory networks: addresses are handed out in order, and Publish
// records where each container's ports lead. Safe for concurrent use.
type fakeNet struct {
	mu      sync.Mutex
	nets    map[string]*fakeNetwork // by name
	targets map[string]netip.Addr   // container → publish target
	ports   map[string][]portlayer.PortBinding
}

type fakeNetwork struct {
	portlayer.Network
	next netip.Addr
	eps  map[string]portlayer.Endpoint // by container
}

func newFakeNet(names ...string) *fakeNet {
	f := &fakeNet{nets: map[string]*fakeNetwork{}, targets: map[string]netip.Addr{}, ports: map[string][]portlayer.PortBinding{}}
	for i, name := range names {
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i + 1), 0, 0}), 24)
		f.nets[name] = &fakeNetwork{
			Network: portlayer.Network{ID: fmt.Sprintf("%064d", i+1), Name: name, Driver: "bridge", Subnet: subnet, Gateway: subnet.Addr().Next(),
				Internal: strings.HasPrefix(name, "internal")},
			next: subnet.Addr().Next().Next(),
			eps:  map[string]portlayer.Endpoint{},
		}
	}
	return f
}

func (f *fakeNet) find(idOrName string) (*fakeNetwork, error) {
	for _, n := range f.nets {
		if n.Name == idOrName || n.ID == idOrName {
			return n, nil
		}
	}
	return nil, fmt.Errorf("network %s not found: %w", idOrName, errdefs.ErrNotFound)
}

func (f *fakeNet) CreateNetwork(context.Context, portlayer.NetworkSpec) (portlayer.Network, error) {
	return portlayer.Network{}, errdefs.ErrNotImplemented
}
func (f *fakeNet) InspectNetwork(_ context.Context, idOrName string) (portlayer.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.find(idOrName)
	if err != nil {
		return portlayer.Network{}, err
	}
	return n.Network, nil
}
func (f *fakeNet) ListNetworks(context.Context) ([]portlayer.Network, error) { return nil, nil }
func (f *fakeNet) RemoveNetwork(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nets, name)
	return nil
}

func (f *fakeNet) NewNIC(context.Context, string) (portlayer.NIC, error) {
	file, err := os.Open(os.DevNull)
	return portlayer.NIC{Name: "tap", File: file}, err
}
func (f *fakeNet) Join(_ context.Context, containerID, containerName, nic string, spec portlayer.EndpointSpec) (portlayer.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.find(spec.Network)
	if err != nil {
		return portlayer.Endpoint{}, err
	}
	addr := n.next
	n.next = addr.Next()
	ep := portlayer.Endpoint{NetworkID: n.ID, NetworkName: n.Name, ContainerID: containerID, ContainerName: containerName,
		Address: netip.PrefixFrom(addr, n.Subnet.Bits()), Gateway: n.Gateway, Internal: n.Internal, MAC: "02:42:00:00:00:01", NIC: nic}
	n.eps[containerID] = ep
	return ep, nil
}
func (f *fakeNet) Leave(_ context.Context, containerID, network string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.find(network)
	if err != nil {
		return err
	}
	delete(n.eps, containerID)
	return nil
}
func (f *fakeNet) LeaveAll(containerID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.nets {
		delete(n.eps, containerID)
	}
}
func (f *fakeNet) Publish(_ context.Context, containerID string, target netip.Addr, ports []portlayer.PortBinding) ([]portlayer.PortBinding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]portlayer.PortBinding(nil), ports...)
	for i := range out {
		if out[i].HostPort == 0 {
			out[i].HostPort = uint16(40000 + i)
		}
	}
	f.targets[containerID] = target
	f.ports[containerID] = append(f.ports[containerID], out...)
	return out, nil
}
func (f *fakeNet) Unpublish(containerID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.targets, containerID)
	delete(f.ports, containerID)
}
func (f *fakeNet) Rename(containerID, oldName, newName string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.nets {
		if ep, ok := n.eps[containerID]; ok {
			ep.ContainerName = newName
			n.eps[containerID] = ep
		}
	}
}
func (f *fakeNet) Resolve(context.Context, string, []string, []byte) ([]byte, error) {
	return nil, errdefs.ErrNotImplemented
}
func (f *fakeNet) Restore(_ context.Context, containerID, _ string, _ []string, eps []portlayer.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ep := range eps {
		if n, err := f.find(ep.NetworkID); err == nil {
			n.eps[containerID] = ep
		}
	}
	return nil
}

// published returns where containerID's ports lead and their host ports.
func (f *fakeNet) published(containerID string) (netip.Addr, []uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var hp []uint16
	for _, p := range f.ports[containerID] {
		hp = append(hp, p.HostPort)
	}
	return f.targets[containerID], hp
}

func (f *fakeNet) addr(network, containerID string) netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nets[network].eps[containerID].Address.Addr()
}

func withNet(f *fakeNet) func(*compute.Config) {
	return func(cfg *compute.Config) { cfg.Network, cfg.Networks = f, f }
}

// A network removed while its container was stopped fails the next start
// with dockerd's "network x not found", which must not read as the
// container being missing (a NotFound would: "No such container").
func TestStartNetworkGone(t *testing.T) {
	f := newFakeNet("bridge", "gone")
	h := newHarness(t, withNet(f))
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "gone"}}})
	f.RemoveNetwork(t.Context(), "gone")
	err := h.svc.Start(t.Context(), c.ID)
	if err == nil || errdefs.IsNotFound(err) || !errdefs.IsFailedPrecondition(err) || err.Error() != "network gone not found" {
		t.Fatalf("Start = %v; want FailedPrecondition %q", err, "network gone not found")
	}
}

// Published ports follow the container's endpoints, as dockerd moves them
// with the gateway endpoint: after a disconnect they never lead to the
// address given up (the next container on that network gets it), they
// keep their host ports, and they come back with a connect.
func TestPublishedPortsFollowEndpoints(t *testing.T) {
	f := newFakeNet("bridge", "n1")
	h := newHarness(t, withNet(f))
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "bridge"}},
		Ports: []portlayer.PortBinding{{Proto: "tcp", ContainerPort: 80}}})
	h.start(c.ID)
	ctx := t.Context()
	onBridge := f.addr("bridge", c.ID)
	target, ports := f.published(c.ID)
	if target != onBridge || len(ports) != 1 {
		t.Fatalf("after start: ports to %s %v, want %s", target, ports, onBridge)
	}
	hostPort := ports[0]

	if err := h.svc.Connect(ctx, c.ID, portlayer.EndpointSpec{Network: "n1"}); err != nil {
		t.Fatal(err)
	}
	if target, _ := f.published(c.ID); target != onBridge {
		t.Errorf("after connect: ports to %s, want %s", target, onBridge)
	}
	onN1 := f.addr("n1", c.ID)
	if err := h.svc.Disconnect(ctx, c.ID, "bridge", false); err != nil {
		t.Fatal(err)
	}
	if target, ports := f.published(c.ID); target != onN1 || len(ports) != 1 || ports[0] != hostPort {
		t.Errorf("after disconnect from bridge: ports to %s %v, want %s [%d]", target, ports, onN1, hostPort)
	}
	if got := h.inspect(c.ID).Ports; len(got) != 1 || got[0].HostPort != hostPort {
		t.Errorf("recorded ports = %+v", got)
	}
	if err := h.svc.Disconnect(ctx, c.ID, "n1", false); err != nil {
		t.Fatal(err)
	}
	if target, ports := f.published(c.ID); target.IsValid() || len(ports) != 0 {
		t.Errorf("without networks: ports to %s %v, want none", target, ports)
	}
	if got := h.inspect(c.ID).Ports; len(got) != 0 {
		t.Errorf("recorded ports without networks = %+v", got)
	}
	if err := h.svc.Connect(ctx, c.ID, portlayer.EndpointSpec{Network: "bridge"}); err != nil {
		t.Fatal(err)
	}
	if target, ports := f.published(c.ID); target != f.addr("bridge", c.ID) || len(ports) != 1 {
		t.Errorf("connected again: ports to %s %v", target, ports)
	}
}

// A connect while the container is starting applies to the run that
// starts: it waits for the start instead of only recording the network,
// which left a running container listed on a network it was not on.
func TestConnectDuringStart(t *testing.T) {
	f := newFakeNet("bridge", "n1")
	h := newHarness(t, withNet(f))
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "bridge"}}})
	release := h.drv.HoldNextBoot()
	defer release()
	startErr := make(chan error, 1)
	go func() { startErr <- h.svc.Start(t.Context(), c.ID) }()
	if _, err := h.drv.WaitVM(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	connErr := make(chan error, 1)
	go func() { connErr <- h.svc.Connect(t.Context(), c.ID, portlayer.EndpointSpec{Network: "n1"}) }()
	notYet(t, connErr, 100*time.Millisecond, "Connect during start")
	release()
	if err := recv(t, startErr, "Start"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, connErr, "Connect"); err != nil {
		t.Fatal(err)
	}
	got := h.inspect(c.ID)
	if len(got.Endpoints) != 2 || got.Endpoints[1].NetworkName != "n1" || !f.addr("n1", c.ID).IsValid() {
		t.Errorf("endpoints after connect during start = %+v", got.Endpoints)
	}
}

// A legacy link (--link on the default bridge) must reach a running
// container on the default bridge, else the start fails with dockerd's
// texts (the alias would silently not resolve).
func TestStartLegacyLinks(t *testing.T) {
	f := newFakeNet("bridge", "n1")
	h := newHarness(t, withNet(f))
	bridge := []portlayer.EndpointSpec{{Network: "bridge"}}
	h.create(portlayer.ContainerSpec{Name: "/stopped", Args: args("sleep"), Networks: bridge})
	elsewhere := h.create(portlayer.ContainerSpec{Name: "/elsewhere", Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "n1"}}})
	h.start(elsewhere.ID)
	db := h.create(portlayer.ContainerSpec{Name: "/db", Args: args("sleep"), Networks: bridge})
	h.start(db.ID)
	for _, tc := range []struct {
		link, want string
	}{
		{"stopped:x", "web x stopped link_not_running"},
		{"elsewhere", "web elsewhere elsewhere link_off_bridge"},
		{"db:database", ""},
	} {
		t.Run(tc.link, func(t *testing.T) {
			c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Name: "/web",
				Networks: []portlayer.EndpointSpec{{Network: "bridge", Links: []string{tc.link}}}})
			defer h.svc.Remove(context.Background(), c.ID, true)
			err := h.svc.Start(t.Context(), c.ID)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				return
			}
			pe := portlayer.AsError(err)
			if pe == nil || fmt.Sprint(pe.ID, " ", pe.Name, " ", pe.Value, " ", pe.Reason) != tc.want || !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("Start = %v; want FailedPrecondition with id, alias, target and reason %q", err, tc.want)
			}
		})
	}
}

// dockerd publishes no port of a container on internal networks only: the
// host must not reach what --internal isolates. Ports go with the first
// endpoint that is not internal, and come when one is connected.
func TestPublishedPortsNotOnInternal(t *testing.T) {
	f := newFakeNet("bridge", "internal1")
	h := newHarness(t, withNet(f))
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "internal1"}},
		Ports: []portlayer.PortBinding{{Proto: "tcp", ContainerPort: 80, HostPort: 8080}}})
	h.start(c.ID)
	if target, ports := f.published(c.ID); target.IsValid() || len(ports) != 0 || len(h.inspect(c.ID).Ports) != 0 {
		t.Fatalf("internal only: ports to %s %v", target, ports)
	}
	if err := h.svc.Connect(t.Context(), c.ID, portlayer.EndpointSpec{Network: "bridge"}); err != nil {
		t.Fatal(err)
	}
	if target, ports := f.published(c.ID); target != f.addr("bridge", c.ID) || len(ports) != 1 || ports[0] != 8080 {
		t.Errorf("after connecting bridge: ports to %s %v", target, ports)
	}
}

// A network removed while its container was stopped can be disconnected
// (force or not), as dockerd allows; otherwise the container could never
// start again. A running container needs force.
func TestDisconnectRemovedNetwork(t *testing.T) {
	f := newFakeNet("bridge", "gone")
	h := newHarness(t, withNet(f))
	ctx := t.Context()
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "bridge"}, {Network: "gone"}}})
	f.RemoveNetwork(ctx, "gone")
	if err := h.svc.Disconnect(ctx, c.ID, "gone", false); err != nil {
		t.Fatalf("Disconnect stopped from removed network: %v", err)
	}
	if err := h.svc.Disconnect(ctx, c.ID, "gone", false); !errdefs.IsNotFound(err) {
		t.Errorf("second Disconnect = %v, want NotFound", err)
	}
	h.start(c.ID)
	if nets := h.inspect(c.ID).Spec.Networks; len(nets) != 1 || nets[0].Network != "bridge" {
		t.Errorf("networks = %+v", nets)
	}
	if err := h.svc.Disconnect(ctx, c.ID, "nosuch", false); !errdefs.IsNotFound(err) {
		t.Errorf("running, unknown network = %v, want NotFound", err)
	}
}

// Disconnecting the network a running container's default route goes
// through moves the route to its next network that is not internal, as
// dockerd does (the container lost its way out).
func TestDisconnectMovesGateway(t *testing.T) {
	f := newFakeNet("bridge", "n1")
	h := newHarness(t, withNet(f))
	ctx := t.Context()
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "bridge"}}})
	h.start(c.ID)
	if err := h.svc.Connect(ctx, c.ID, portlayer.EndpointSpec{Network: "n1"}); err != nil {
		t.Fatal(err)
	}
	vm := h.vm(c.ID)
	if ifs := vm.Interfaces(); len(ifs) != 1 || ifs[0].Gateway != "" {
		t.Fatalf("connect: %+v, want one request without a gateway (bridge has the route)", ifs)
	}
	if err := h.svc.Disconnect(ctx, c.ID, "bridge", false); err != nil {
		t.Fatal(err)
	}
	ifs := vm.Interfaces()
	want := f.addr("n1", c.ID).String() + "/24"
	if len(ifs) != 3 || ifs[1].Name != "" || ifs[2].Name != "eth1" || ifs[2].Address != want || ifs[2].Gateway != "10.2.0.1" {
		t.Errorf("interface requests = %+v; want eth0 taken down, then eth1 %s via 10.2.0.1", ifs, want)
	}
}

// resolv.conf as Docker writes it: on a user network the embedded DNS
// stays the nameserver even with --dns (dockerd forwards to those servers;
// writing them in instead lost container names), with ndots:0 unless
// given; on the default bridge --dns servers are written as given.
func TestResolvConf(t *testing.T) {
	f := newFakeNet("bridge", "n1")
	h := newHarness(t, withNet(f))
	for _, tc := range []struct {
		name string
		spec portlayer.ContainerSpec
		want string
	}{
		{"bridge", portlayer.ContainerSpec{Networks: []portlayer.EndpointSpec{{Network: "bridge"}}},
			"nameserver 127.0.0.11\noptions ndots:0\n"},
		{"bridge with --dns", portlayer.ContainerSpec{Networks: []portlayer.EndpointSpec{{Network: "bridge"}}, DNS: []string{"192.0.2.53"}, DNSSearch: []string{"corp.example"}},
			"nameserver 192.0.2.53\nsearch corp.example\n"},
		{"user network with --dns", portlayer.ContainerSpec{Networks: []portlayer.EndpointSpec{{Network: "n1"}}, DNS: []string{"192.0.2.53"}, DNSSearch: []string{"corp.example"}},
			"nameserver 127.0.0.11\nsearch corp.example\noptions ndots:0\n"},
		{"user network with ndots", portlayer.ContainerSpec{Networks: []portlayer.EndpointSpec{{Network: "n1"}}, DNS: []string{"192.0.2.53"}, DNSOptions: []string{"ndots:2"}},
			"nameserver 127.0.0.11\noptions ndots:2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Args = args("sleep")
			c := h.create(tc.spec)
			h.start(c.ID)
			setup, ok := h.vm(c.ID).Setup()
			if relay := strings.HasPrefix(tc.want, "nameserver 127.0.0.11"); !ok || setup.ResolvConf != tc.want || (setup.DNSRelay != "") != relay {
				t.Errorf("resolv.conf = %q (relay %q), want %q", setup.ResolvConf, setup.DNSRelay, tc.want)
			}
		})
	}
}
