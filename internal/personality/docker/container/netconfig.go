package container

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// networkMode resolves HostConfig.NetworkMode as dockerd does: "" and
// "default" mean the "bridge" network; "none" means loopback only. "host"
// and "container:<id>" share a network stack with something else, which a
// container that is its own VM cannot do: 400.
func networkMode(mode container.NetworkMode) (string, error) {
	m := string(mode)
	switch {
	case m == "" || m == "default":
		return "bridge", nil
	case m == "host":
		return "", httputils.InvalidArgument("network mode \"host\" is not supported: every container is its own VM with its own network stack")
	case strings.HasPrefix(m, "container:"):
		return "", httputils.InvalidArgument("network mode %q is not supported: every container is its own VM with its own network stack", m)
	}
	return m, nil
}

// applyNetworkConfig fills the spec's networks, published ports, DNS and
// extra hosts from the create request (docker run --network, --ip,
// --network-alias, --link, -p, -P, --dns*, --add-host). exposed is the
// merged config's ExposedPorts (user's and image's).
func (rt *Router) applyNetworkConfig(ctx context.Context, spec *portlayer.ContainerSpec, exposed network.PortSet, hc *container.HostConfig, nc *network.NetworkingConfig) error {
	mode, err := networkMode(hc.NetworkMode)
	if err != nil {
		return err
	}
	eps := map[string]*network.EndpointSettings{}
	if nc != nil && len(nc.EndpointsConfig) > 1 && !httputils.VersionAtLeast(ctx, "1.44") {
		// dockerd takes several endpoints at create from API 1.44 on.
		return httputils.InvalidArgument("Container cannot be created with multiple network endpoints")
	}
	if nc != nil {
		if err := rt.validateEndpoints(ctx, nc.EndpointsConfig); err != nil {
			return err
		}
		for name, es := range nc.EndpointsConfig {
			// The CLI names the default network "default".
			if name == "default" {
				name = "bridge"
			}
			eps[name] = es
		}
	}
	if mode == "none" {
		// Port bindings are kept in the host config and publish nothing,
		// as with dockerd (it refuses them only with container:NAME).
		spec.NoNetwork = true
		for name := range eps {
			if name != "none" {
				return httputils.InvalidArgument("container cannot be connected to multiple networks with one of the networks in private (none) mode")
			}
		}
	} else {
		names := []string{mode}
		for name := range eps {
			if name != mode {
				names = append(names, name)
			}
		}
		sort.Strings(names[1:])
		for i, name := range names {
			ep := portlayer.EndpointSpec{Network: name}
			if s := eps[name]; s != nil {
				ep.Aliases = s.Aliases
				ep.Links = s.Links
				if len(s.MacAddress) > 0 {
					ep.MAC = net.HardwareAddr(s.MacAddress).String()
				}
				if s.IPAMConfig != nil && s.IPAMConfig.IPv4Address.IsValid() {
					ep.IPv4 = s.IPAMConfig.IPv4Address
				}
			}
			if i == 0 {
				ep.Links = append(ep.Links, hc.Links...)
			}
			if rt.networks != nil {
				// A network that does not exist yet is dockerd's business
				// at start ("network x not found"), not create's: a 404
				// here would make the CLI try to pull the image.
				nw, err := rt.networks.InspectNetwork(ctx, name)
				switch {
				case errdefs.IsNotFound(err):
				case err != nil:
					return err
				case nw.Driver == "null":
					return httputils.InvalidArgument("container cannot be connected to multiple networks with one of the networks in private (none) mode")
				}
			}
			spec.Networks = append(spec.Networks, ep)
		}
		if mode == "bridge" {
			if err := rt.checkLegacyLinks(ctx, hc.Links); err != nil {
				return err
			}
		}
		ports, err := portBindings(exposed, hc.PortBindings, hc.PublishAllPorts)
		if err != nil {
			return err
		}
		spec.Ports = ports
	}
	for _, d := range hc.DNS {
		spec.DNS = append(spec.DNS, d.String())
	}
	spec.DNSSearch = hc.DNSSearch
	spec.DNSOptions = hc.DNSOptions
	for _, h := range hc.ExtraHosts {
		name, addr, ok := strings.Cut(h, ":")
		if !ok {
			// docker run --add-host also accepts "name=addr".
			name, addr, ok = strings.Cut(h, "=")
		}
		if !ok || name == "" {
			return httputils.InvalidArgument("bad format for add-host: %q", h)
		}
		if addr != "host-gateway" {
			if _, err := netip.ParseAddr(strings.Trim(addr, "[]")); err != nil {
				return httputils.InvalidArgument("invalid IP address in add-host: %q", addr)
			}
		}
		spec.ExtraHosts = append(spec.ExtraHosts, name+":"+strings.Trim(addr, "[]"))
	}
	return nil
}

// validateEndpoints checks NetworkingConfig.EndpointsConfig as dockerd's
// validateNetworkingConfig does at create, with its texts (400 "invalid
// config for network <key>: invalid endpoint settings:\n<problem>"): no
// static address or alias on the predefined networks, and a static
// address inside the subnet of a network that exists (one that does not
// exist yet is left to start).
func (rt *Router) validateEndpoints(ctx context.Context, cfgs map[string]*network.EndpointSettings) error {
	keys := make([]string, 0, len(cfgs))
	for k := range cfgs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []string
	for _, key := range keys {
		es := cfgs[key]
		if es == nil {
			errs = append(errs, fmt.Sprintf("invalid config for network %s: EndpointsConfig is nil", key))
			continue
		}
		var ip netip.Addr
		if es.IPAMConfig != nil {
			ip = es.IPAMConfig.IPv4Address.Unmap()
		}
		var problems []string
		predefined := key == "default" || key == "bridge" || key == "none" || key == "host"
		if predefined {
			if ip.IsValid() || (es.IPAMConfig != nil && es.IPAMConfig.IPv6Address.IsValid()) {
				problems = append(problems, "user specified IP address is supported on user defined networks only")
			}
			if len(es.Aliases) > 0 {
				problems = append(problems, "network-scoped alias is supported only for containers in user defined networks")
			}
		} else {
			if ip.IsValid() && rt.networks != nil {
				if nw, err := rt.networks.InspectNetwork(ctx, key); err == nil && nw.Subnet.IsValid() && !nw.Subnet.Contains(ip) {
					problems = append(problems, fmt.Sprintf("no configured subnet or ip-range contain the IP address %s", ip))
				}
			}
			if es.IPAMConfig != nil && es.IPAMConfig.IPv6Address.IsValid() {
				// vch networks have no IPv6 subnet.
				problems = append(problems, "user specified IP address is supported only when connecting to networks with user configured subnets")
			}
		}
		if len(problems) > 0 {
			errs = append(errs, fmt.Sprintf("invalid config for network %s: invalid endpoint settings:\n%s", key, joinProblems(problems)))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return httputils.InvalidArgument("%s", joinProblems(errs))
}

// joinProblems formats problems as dockerd's multierror does: one as is,
// several as a "* " list with continuation lines indented.
func joinProblems(problems []string) string {
	if len(problems) == 1 {
		return problems[0]
	}
	lines := make([]string, 0, len(problems))
	for _, p := range problems {
		lines = append(lines, strings.ReplaceAll(p, "\n", "\n\t"))
	}
	return "* " + strings.Join(lines, "\n* ")
}

// checkLegacyLinks checks --link targets on the default bridge as
// dockerd's registerLinks does at create: each must name an existing
// container, else 400 "could not get container for x: No such container:
// x" (dockerd makes it a 400 so that the CLI does not take it for a
// missing image). On user networks links are aliases and may name
// containers that do not exist yet.
func (rt *Router) checkLegacyLinks(ctx context.Context, links []string) error {
	for _, l := range links {
		target, _, _ := strings.Cut(l, ":")
		target = strings.TrimPrefix(target, "/")
		if target == "" {
			return httputils.InvalidArgument("invalid link format: %q", l)
		}
		if _, err := rt.compute.Inspect(ctx, target); err != nil {
			if errdefs.IsNotFound(err) {
				return httputils.InvalidArgument("could not get container for %s: No such container: %s", target, target)
			}
			return fmt.Errorf("link %s: %w", l, err)
		}
	}
	return nil
}

// portBindings turns HostConfig.PortBindings (and -P: every exposed port
// not bound explicitly gets a free host port) into the port layer's form.
func portBindings(exposed network.PortSet, pm network.PortMap, publishAll bool) ([]portlayer.PortBinding, error) {
	var out []portlayer.PortBinding
	keys := make([]network.Port, 0, len(pm))
	for p := range pm {
		keys = append(keys, p)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, p := range keys {
		proto := string(p.Proto())
		if proto != "tcp" && proto != "udp" {
			return nil, httputils.InvalidArgument("invalid proto: %s", proto)
		}
		if p.Num() == 0 {
			return nil, httputils.InvalidArgument("invalid port specification: %q", p.String())
		}
		binds := pm[p]
		if len(binds) == 0 {
			binds = []network.PortBinding{{}}
		}
		for _, b := range binds {
			pb := portlayer.PortBinding{Proto: proto, ContainerPort: p.Num(), HostIP: b.HostIP}
			pb.HostIP = pb.HostIP.Unmap()
			if pb.HostIP.IsValid() && pb.HostIP.IsUnspecified() && pb.HostIP.Is4() {
				pb.HostIP = netip.Addr{}
			}
			if pb.HostIP.Zone() != "" {
				return nil, httputils.InvalidArgument("invalid host IP %s: zones are not supported", pb.HostIP)
			}
			// An IPv6 host address (-p [::1]:8080:80) is bound as such and
			// forwarded to the container's IPv4 address, as docker-proxy
			// does for a network without IPv6.
			if b.HostPort != "" {
				lo, hi, isRange := strings.Cut(b.HostPort, "-")
				start, err := strconv.ParseUint(lo, 10, 16)
				// Host port 0 alone asks for a free port, as an empty
				// one does (docker run -p 0:80).
				if err != nil || (start == 0 && isRange) {
					return nil, httputils.InvalidArgument("invalid port specification: %q", b.HostPort)
				}
				pb.HostPort = uint16(start)
				if isRange {
					end, err := strconv.ParseUint(hi, 10, 16)
					if err != nil || end < start {
						return nil, httputils.InvalidArgument("invalid port specification: %q", b.HostPort)
					}
					pb.HostPortEnd = uint16(end)
				}
			}
			out = append(out, pb)
		}
	}
	if publishAll {
		eps := make([]network.Port, 0, len(exposed))
		for p := range exposed {
			if _, bound := pm[p]; !bound {
				eps = append(eps, p)
			}
		}
		sort.Slice(eps, func(i, j int) bool { return eps[i].String() < eps[j].String() })
		for _, p := range eps {
			if proto := string(p.Proto()); proto == "tcp" || proto == "udp" {
				out = append(out, portlayer.PortBinding{Proto: proto, ContainerPort: p.Num()})
			}
		}
	}
	return out, nil
}

// portMap renders a running container's ports as Docker's inspect does:
// every exposed or published container port, with its host bindings (nil
// for a port that is only exposed).
func portMap(c portlayer.Container, exposed network.PortSet) network.PortMap {
	pm := network.PortMap{}
	if c.State.Status != portlayer.StatusRunning && c.State.Status != portlayer.StatusPaused {
		return pm
	}
	for p := range exposed {
		pm[p] = nil
	}
	for _, b := range c.Ports {
		p, err := network.ParsePort(fmt.Sprintf("%d/%s", b.ContainerPort, b.Proto))
		if err != nil {
			continue
		}
		ip := b.HostIP
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
		}
		pm[p] = append(pm[p], network.PortBinding{HostIP: ip, HostPort: strconv.Itoa(int(b.HostPort))})
	}
	return pm
}

// portSummaries renders ports for `docker ps`: published ones with their
// host side, exposed ones alone.
func portSummaries(c portlayer.Container, exposed network.PortSet) []container.PortSummary {
	out := []container.PortSummary{}
	// dockerd clears a container's ports when its network is released:
	// a created or exited container lists none.
	if c.State.Status != portlayer.StatusRunning && c.State.Status != portlayer.StatusPaused {
		return out
	}
	published := map[string]bool{}
	for _, b := range c.Ports {
		ip := b.HostIP
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
		}
		out = append(out, container.PortSummary{IP: ip, PrivatePort: b.ContainerPort, PublicPort: b.HostPort, Type: b.Proto})
		published[fmt.Sprintf("%d/%s", b.ContainerPort, b.Proto)] = true
	}
	for p := range exposed {
		if !published[p.String()] {
			out = append(out, container.PortSummary{PrivatePort: p.Num(), Type: string(p.Proto())})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PrivatePort != out[j].PrivatePort {
			return out[i].PrivatePort < out[j].PrivatePort
		}
		return out[i].Type < out[j].Type
	})
	return out
}

// endpointSettings renders the container's networks as Docker's
// NetworkSettings.Networks: configuration from the spec, operational data
// (addresses, IDs) from the live endpoints while it runs.
func endpointSettings(c portlayer.Container) map[string]*network.EndpointSettings {
	out := map[string]*network.EndpointSettings{}
	for _, spec := range c.Spec.Networks {
		es := &network.EndpointSettings{Aliases: spec.Aliases, Links: spec.Links}
		if spec.IPv4.IsValid() {
			es.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: spec.IPv4}
		}
		name := spec.Network
		for _, ep := range c.Endpoints {
			if ep.NetworkName == spec.Network || ep.NetworkID == spec.Network {
				name = ep.NetworkName
				es.NetworkID, es.EndpointID = ep.NetworkID, ep.ID
				es.Gateway, es.IPAddress, es.IPPrefixLen = ep.Gateway, ep.Address.Addr(), ep.Address.Bits()
				if mac, err := net.ParseMAC(ep.MAC); err == nil {
					es.MacAddress = network.HardwareAddr(mac)
				}
				es.DNSNames = ep.DNSNames
			}
		}
		out[name] = es
	}
	if c.Spec.NoNetwork && len(out) == 0 {
		// dockerd lists the none network as the container's one.
		out["none"] = &network.EndpointSettings{}
	}
	return out
}

// legacyNetworkSettings adds the top-level fields API versions before 1.52
// still carry (the default bridge's address, gateway and MAC), which
// `docker inspect -f '{{.NetworkSettings.IPAddress}}'` reads.
type legacyNetworkSettings struct {
	container.NetworkSettings
	Bridge                 string
	HairpinMode            bool
	LinkLocalIPv6Address   string
	LinkLocalIPv6PrefixLen int
	SecondaryIPAddresses   any
	SecondaryIPv6Addresses any
	EndpointID             string
	Gateway                string
	GlobalIPv6Address      string
	GlobalIPv6PrefixLen    int
	IPAddress              string
	IPPrefixLen            int
	IPv6Gateway            string
	MacAddress             string
}

func legacySettings(ns *container.NetworkSettings) *legacyNetworkSettings {
	l := &legacyNetworkSettings{NetworkSettings: *ns}
	if es, ok := ns.Networks["bridge"]; ok && es.IPAddress.IsValid() {
		l.EndpointID, l.Gateway, l.IPAddress, l.IPPrefixLen = es.EndpointID, es.Gateway.String(), es.IPAddress.String(), es.IPPrefixLen
		l.MacAddress = net.HardwareAddr(es.MacAddress).String()
	}
	return l
}

// inspectJSON is the inspect document with the legacy NetworkSettings
// (the outer field hides the embedded one in encoding/json) and, for a
// container whose VM runs on one of several hosts, Node.
type inspectJSON struct {
	container.InspectResponse
	NetworkSettings *legacyNetworkSettings `json:"NetworkSettings"`
	Node            *inspectNode           `json:"Node,omitempty"`
}

// inspectNode is the host a container runs on, in the "Node" member that
// the standalone Docker Swarm API added to GET /containers/{id}/json for
// a daemon spread over several hosts (Id, Ip, Addr, Name; this fills
// Name). `docker inspect -f '{{.Node.Name}}'` reads it; the member is
// absent for a VCH whose VMs all run on its own host.
type inspectNode struct {
	// Name is the host's name (an ESX host's inventory name on vSphere).
	Name string `json:"Name"`
}

// nodeOf is c's inspectNode, nil if the port layer names no host.
func nodeOf(c portlayer.Container) *inspectNode {
	if c.State.Host == "" {
		return nil
	}
	return &inspectNode{Name: c.State.Host}
}
