package container

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/vchproject/vch/internal/portlayer"
)

// fakeNetworks knows networks by name.
type fakeNetworks map[string]portlayer.Network

func (f fakeNetworks) CreateNetwork(context.Context, portlayer.NetworkSpec) (portlayer.Network, error) {
	return portlayer.Network{}, errdefs.ErrNotImplemented
}
func (f fakeNetworks) InspectNetwork(_ context.Context, name string) (portlayer.Network, error) {
	if n, ok := f[name]; ok {
		return n, nil
	}
	return portlayer.Network{}, fmt.Errorf("network %s not found: %w", name, errdefs.ErrNotFound)
}
func (f fakeNetworks) ListNetworks(context.Context) ([]portlayer.Network, error) { return nil, nil }
func (f fakeNetworks) RemoveNetwork(context.Context, string) error               { return nil }

// fakeLookup is a Compute that knows containers by name (Inspect only).
type fakeLookup struct {
	portlayer.Compute
	names map[string]bool
}

func (f fakeLookup) Inspect(_ context.Context, name string) (portlayer.Container, error) {
	if f.names[name] {
		return portlayer.Container{ID: name}, nil
	}
	return portlayer.Container{}, fmt.Errorf("compute: No such container: %s: %w", name, errdefs.ErrNotFound)
}

func netRouter() *Router {
	return &Router{
		compute: fakeLookup{names: map[string]bool{"web": true}},
		networks: fakeNetworks{
			"bridge": {Name: "bridge", Driver: "bridge", Subnet: netip.MustParsePrefix("172.17.0.0/16")},
			"none":   {Name: "none", Driver: "null"},
			"n1":     {Name: "n1", Driver: "bridge", Subnet: netip.MustParsePrefix("10.77.0.0/24")},
		},
	}
}

func ipam(ip string) *network.EndpointSettings {
	return &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: netip.MustParseAddr(ip)}}
}

// Create-time checks of networks, addresses and links, with dockerd 28's
// codes and texts.
func TestApplyNetworkConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   string
		eps    map[string]*network.EndpointSettings
		links  []string
		status int
		text   string
	}{
		{name: "ip in subnet", mode: "n1", eps: map[string]*network.EndpointSettings{"n1": ipam("10.77.0.9")}},
		{name: "ip outside subnet", mode: "n1", eps: map[string]*network.EndpointSettings{"n1": ipam("10.78.0.5")},
			status: http.StatusBadRequest, text: "invalid config for network n1: invalid endpoint settings:\nno configured subnet or ip-range contain the IP address 10.78.0.5"},
		{name: "ip on default bridge", mode: "default", eps: map[string]*network.EndpointSettings{"default": ipam("172.17.0.50")},
			status: http.StatusBadRequest, text: "invalid config for network default: invalid endpoint settings:\nuser specified IP address is supported on user defined networks only"},
		{name: "alias on bridge", mode: "bridge", eps: map[string]*network.EndpointSettings{"bridge": {Aliases: []string{"a"}}},
			status: http.StatusBadRequest, text: "invalid config for network bridge: invalid endpoint settings:\nnetwork-scoped alias is supported only for containers in user defined networks"},
		{name: "ipv6 on user network", mode: "n1", eps: map[string]*network.EndpointSettings{"n1": {IPAMConfig: &network.EndpointIPAMConfig{IPv6Address: netip.MustParseAddr("fd00::5")}}},
			status: http.StatusBadRequest, text: "invalid config for network n1: invalid endpoint settings:\nuser specified IP address is supported only when connecting to networks with user configured subnets"},
		// dockerd creates the container and fails its start; a 404 here
		// would send the CLI off to pull the image.
		{name: "missing network", mode: "nosuch"},
		{name: "missing network with ip", mode: "nosuch", eps: map[string]*network.EndpointSettings{"nosuch": ipam("10.1.2.3")}},
		{name: "link", mode: "default", links: []string{"web:db"}},
		{name: "link to missing container", mode: "default", links: []string{"nosuch:db"},
			status: http.StatusBadRequest, text: "could not get container for nosuch: No such container: nosuch"},
		{name: "link on user network is an alias", mode: "n1", links: []string{"nosuch:db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var spec portlayer.ContainerSpec
			hc := &container.HostConfig{NetworkMode: container.NetworkMode(tc.mode), Links: tc.links}
			err := netRouter().applyNetworkConfig(t.Context(), &spec, nil, hc, &network.NetworkingConfig{EndpointsConfig: tc.eps})
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("applyNetworkConfig: %v", err)
				}
				return
			}
			if err == nil || statusOf(err) != tc.status || err.Error() != tc.text {
				t.Fatalf("applyNetworkConfig = %v (%d), want %d %q", err, statusOf(err), tc.status, tc.text)
			}
		})
	}
}

func TestPortBindingsHostPorts(t *testing.T) {
	p80 := network.MustParsePort("80/tcp")
	for _, tc := range []struct {
		hostIP   string
		hostPort string
		want     portlayer.PortBinding
		bad      bool
	}{
		{hostPort: "", want: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80}},
		// docker run -p 0:80: any free port, as Docker.
		{hostPort: "0", want: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80}},
		{hostPort: "8080", want: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80, HostPort: 8080}},
		{hostPort: "8000-8010", want: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80, HostPort: 8000, HostPortEnd: 8010}},
		{hostPort: "0-10", bad: true},
		{hostPort: "10-5", bad: true},
		{hostPort: "65536", bad: true},
		{hostIP: "0.0.0.0", hostPort: "1", want: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80, HostPort: 1}},
		{hostIP: "::1", hostPort: "8080", want: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80, HostIP: netip.MustParseAddr("::1"), HostPort: 8080}},
		{hostIP: "::ffff:127.0.0.1", hostPort: "8080", want: portlayer.PortBinding{Proto: "tcp", ContainerPort: 80, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080}},
	} {
		t.Run(tc.hostIP+"_"+tc.hostPort, func(t *testing.T) {
			b := network.PortBinding{HostPort: tc.hostPort}
			if tc.hostIP != "" {
				b.HostIP = netip.MustParseAddr(tc.hostIP)
			}
			got, err := portBindings(nil, network.PortMap{p80: {b}}, false)
			if tc.bad {
				if err == nil || statusOf(err) != http.StatusBadRequest {
					t.Fatalf("portBindings = %+v, %v; want 400", got, err)
				}
				return
			}
			if err != nil || len(got) != 1 || got[0] != tc.want {
				t.Fatalf("portBindings = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// docker ps lists no ports for a container that is not running: dockerd
// clears them when it releases the network.
func TestPortSummariesNotRunning(t *testing.T) {
	exposed := network.PortSet{network.MustParsePort("80/tcp"): {}}
	c := portlayer.Container{State: portlayer.State{Status: portlayer.StatusExited}}
	if got := portSummaries(c, exposed); len(got) != 0 {
		t.Errorf("exited: %+v", got)
	}
	c.State.Status = portlayer.StatusRunning
	c.Ports = []portlayer.PortBinding{{Proto: "tcp", ContainerPort: 80, HostPort: 8080}}
	if got := portSummaries(c, exposed); len(got) != 1 || got[0].PublicPort != 8080 {
		t.Errorf("running: %+v", got)
	}
}
