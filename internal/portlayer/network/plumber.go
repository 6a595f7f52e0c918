package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/vchproject/vch/internal/portlayer"
)

// Dialer opens a connection from inside the VCH's namespace to a literal
// "ip:port" address; network is "tcp" or "udp".
type Dialer func(ctx context.Context, network, address string) (net.Conn, error)

// NewNIC creates an unattached tap for a container VM. See
// portlayer.NetworkPlumber.
func (s *Service) NewNIC(ctx context.Context, containerID string) (portlayer.NIC, error) {
	f, name, err := s.ns.openTap()
	if err != nil {
		return portlayer.NIC{}, err
	}
	s.mu.Lock()
	c := s.ctrs[containerID]
	if c == nil {
		c = &ctrState{nics: map[string]bool{}}
		s.ctrs[containerID] = c
	}
	c.nics[name] = true
	s.mu.Unlock()
	return portlayer.NIC{Name: name, File: f}, nil
}

// Join attaches a container's tap to a network. See portlayer.NetworkPlumber.
func (s *Service) Join(ctx context.Context, containerID, containerName, nic string, spec portlayer.EndpointSpec) (portlayer.Endpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.lookupLocked(spec.Network)
	if err != nil {
		return portlayer.Endpoint{}, err
	}
	if n.rec.Driver != "bridge" {
		e := portlayer.Refused(portlayer.ClassInvalidArgument, portlayer.KindEndpoint, n.rec.Name, portlayer.ReasonUnsupported, "network: "+n.rec.Name+" takes no containers")
		e.Name = containerName
		return portlayer.Endpoint{}, e
	}
	if _, ok := n.eps[containerID]; ok {
		return portlayer.Endpoint{}, portlayer.EndpointError(portlayer.ReasonAttached, containerName, n.rec.Name)
	}
	if spec.IPv4.IsValid() && n.rec.Name == BridgeName {
		e := portlayer.Invalid(portlayer.KindEndpoint, "IPv4", spec.IPv4.String(), portlayer.ReasonDefaultBridge, "network: the default bridge assigns addresses itself")
		e.ID, e.Name = n.rec.Name, containerName
		return portlayer.Endpoint{}, e
	}
	if len(spec.Aliases) > 0 && n.rec.Name == BridgeName {
		e := portlayer.Invalid(portlayer.KindEndpoint, "Aliases", strings.Join(spec.Aliases, ","), portlayer.ReasonDefaultBridge, "network: the default bridge has no aliases")
		e.ID, e.Name = n.rec.Name, containerName
		return portlayer.Endpoint{}, e
	}
	mac := ""
	if spec.MAC != "" {
		hw, err := net.ParseMAC(spec.MAC)
		if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
			return portlayer.Endpoint{}, portlayer.Invalid(portlayer.KindEndpoint, "MAC", spec.MAC, portlayer.ReasonInvalid, "network: MAC address "+strconv.Quote(spec.MAC)+" is not a unicast MAC-48")
		}
		mac = hw.String()
	}
	addr, err := n.pool.allocate(spec.IPv4, containerID)
	if err != nil {
		return portlayer.Endpoint{}, err
	}
	if mac == "" {
		mac = macFor(addr)
	}
	tap, err := s.ns.nl.LinkByName(nic)
	if err == nil {
		var br netlink.Link
		if br, err = s.ns.nl.LinkByName(n.rec.Bridge); err == nil {
			err = s.ns.nl.LinkSetMaster(tap, br)
		}
	}
	if err != nil {
		n.pool.release(addr)
		return portlayer.Endpoint{}, fmt.Errorf("network: attach %s to %s: %w", nic, n.rec.Name, err)
	}
	ep := &portlayer.Endpoint{ID: newID(), NetworkID: n.rec.ID, NetworkName: n.rec.Name, ContainerID: containerID, ContainerName: containerName,
		Address: netip.PrefixFrom(addr, n.rec.Subnet.Bits()), Gateway: n.rec.Gateway, Internal: n.rec.Internal,
		MAC: mac, Aliases: spec.Aliases, NIC: nic, Links: spec.Links}
	if n.rec.Name != BridgeName {
		ep.DNSNames = append([]string{containerName}, spec.Aliases...)
		for _, n := range []string{containerID[:12], spec.Hostname} {
			if n != "" && !slices.Contains(ep.DNSNames, n) {
				ep.DNSNames = append(ep.DNSNames, n)
			}
		}
	}
	n.eps[containerID] = ep
	c := s.ctrs[containerID]
	if c == nil {
		c = &ctrState{nics: map[string]bool{}}
		s.ctrs[containerID] = c
	}
	c.name = containerName
	return *ep, nil
}

// Restore re-registers a running container's NICs and endpoints after a
// daemon restart. See portlayer.NetworkPlumber.
func (s *Service) Restore(ctx context.Context, containerID, containerName string, nics []string, eps []portlayer.Endpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, nic := range nics {
		if _, err := s.ns.nl.LinkByName(nic); err != nil {
			return portlayer.Errorf(portlayer.ClassNotFound, "restore %s: tap %s: %w", containerID[:12], nic, err)
		}
	}
	type joined struct {
		n    *netState
		addr netip.Addr
	}
	var done []joined
	undo := func() {
		for _, j := range done {
			j.n.pool.release(j.addr)
			delete(j.n.eps, containerID)
		}
	}
	for _, ep := range eps {
		n, ok := s.nets[ep.NetworkID]
		if !ok {
			undo()
			return portlayer.Errorf(portlayer.ClassNotFound, "restore %s: network %s (%s) no longer exists", containerID[:12], ep.NetworkName, ep.NetworkID)
		}
		if _, ok := n.eps[containerID]; ok {
			undo()
			return portlayer.Errorf(portlayer.ClassConflict, "restore %s: already on network %s", containerID[:12], n.rec.Name)
		}
		addr, err := n.pool.allocate(ep.Address.Addr(), containerID)
		if err != nil {
			undo()
			return fmt.Errorf("network: restore %s on %s: %w", containerID[:12], n.rec.Name, err)
		}
		done = append(done, joined{n, addr})
		// The bridge survived with the namespace, and so did the tap's
		// place on it; enslaving again is harmless and mends a bridge
		// that was recreated.
		if tap, err := s.ns.nl.LinkByName(ep.NIC); err == nil {
			if br, err := s.ns.nl.LinkByName(n.rec.Bridge); err == nil {
				_ = s.ns.nl.LinkSetMaster(tap, br)
			}
		}
		e := ep
		n.eps[containerID] = &e
	}
	c := s.ctrs[containerID]
	if c == nil {
		c = &ctrState{nics: map[string]bool{}}
		s.ctrs[containerID] = c
	}
	c.name = containerName
	for _, nic := range nics {
		c.nics[nic] = true
	}
	return nil
}

// Leave detaches a container from one network. See portlayer.NetworkPlumber.
func (s *Service) Leave(ctx context.Context, containerID, network string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.lookupLocked(network)
	if err != nil {
		return err
	}
	ep, ok := n.eps[containerID]
	if !ok {
		return portlayer.EndpointError(portlayer.ReasonNotAttached, containerID[:12], n.rec.Name)
	}
	s.leaveLocked(n, ep)
	return nil
}

func (s *Service) leaveLocked(n *netState, ep *portlayer.Endpoint) {
	if tap, err := s.ns.nl.LinkByName(ep.NIC); err == nil {
		_ = s.ns.nl.LinkSetNoMaster(tap)
	}
	if s.egress != nil {
		// The container's egress connections end with its endpoint: a
		// guest that is gone never closes them itself.
		s.egress.cut(ep.Address.Addr())
	}
	n.pool.release(ep.Address.Addr())
	delete(n.eps, ep.ContainerID)
}

// LeaveAll detaches a container from every network. See
// portlayer.NetworkPlumber.
func (s *Service) LeaveAll(containerID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.nets {
		if ep, ok := n.eps[containerID]; ok {
			s.leaveLocked(n, ep)
		}
	}
	delete(s.ctrs, containerID)
}

// Publish binds a container's published ports. See portlayer.NetworkPlumber.
func (s *Service) Publish(ctx context.Context, containerID string, target netip.Addr, ports []portlayer.PortBinding) ([]portlayer.PortBinding, error) {
	return s.ports.Publish(containerID, target, ports)
}

// Unpublish closes a container's published ports.
func (s *Service) Unpublish(containerID string) { s.ports.Unpublish(containerID) }

// viewLocked returns what containerID may resolve: names on the user
// networks it is on (the default bridge has no name resolution: there
// containers find each other by legacy links and /etc/hosts), its links'
// aliases, and whether names outside may be forwarded (not when all its
// networks are internal).
func (s *Service) viewLocked(containerID string) (lookup func(string) ([]netip.Addr, bool), reverse func(netip.Addr) (string, bool), external bool) {
	var mine []*netState
	for _, n := range s.nets {
		if ep, ok := n.eps[containerID]; ok {
			if !ep.Internal {
				external = true
			}
			if n.rec.Name != BridgeName {
				mine = append(mine, n)
			}
		}
	}
	find := func(name string) []netip.Addr {
		var out []netip.Addr
		for _, n := range mine {
			short := strings.TrimSuffix(name, "."+strings.ToLower(n.rec.Name))
			for _, ep := range n.eps {
				for _, dn := range ep.DNSNames {
					if strings.EqualFold(dn, short) && !containsAddr(out, ep.Address.Addr()) {
						out = append(out, ep.Address.Addr())
					}
				}
			}
		}
		return out
	}
	lookup = func(name string) ([]netip.Addr, bool) {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if addrs := find(name); len(addrs) > 0 {
			return addrs, true
		}
		// Legacy links on user networks: the alias is the linking
		// container's private name for its target.
		for _, n := range mine {
			for _, l := range n.eps[containerID].Links {
				target, alias, ok := strings.Cut(l, ":")
				if !ok {
					alias = target
				}
				if strings.EqualFold(alias, name) {
					if addrs := find(strings.ToLower(strings.TrimPrefix(target, "/"))); len(addrs) > 0 {
						return addrs, true
					}
				}
			}
		}
		return nil, false
	}
	reverse = func(a netip.Addr) (string, bool) {
		for _, n := range mine {
			for _, ep := range n.eps {
				if ep.Address.Addr() == a && len(ep.DNSNames) > 0 {
					return ep.DNSNames[0] + "." + n.rec.Name, true
				}
			}
		}
		return "", false
	}
	return lookup, reverse, external
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// prefixToIPNet converts for netlink.
func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Resolver answers one DNS query (RFC 1035 wire format) for a container
// whose view is given by lookup (container names it may resolve), reverse
// (PTR names of container addresses), external (whether other names may
// be forwarded) and upstreams (the container's own resolvers, "IP:53";
// empty: the host's). Package dns provides one.
type Resolver func(ctx context.Context, query []byte, lookup func(string) ([]netip.Addr, bool), reverse func(netip.Addr) (string, bool), external bool, upstreams []string) ([]byte, error)

// Resolve answers a container's DNS query. See portlayer.NetworkPlumber.
// A server that is not an IP address is skipped.
func (s *Service) Resolve(ctx context.Context, containerID string, servers []string, query []byte) ([]byte, error) {
	if s.dns == nil {
		return nil, portlayer.Errorf(portlayer.ClassNotImplemented, "no DNS resolver")
	}
	// The view reads live endpoints under the lock at each call: it must
	// not be used after Resolve returns.
	s.mu.Lock()
	lookup, reverse, external := s.viewLocked(containerID)
	locked := func(f func()) { s.mu.Lock(); defer s.mu.Unlock(); f() }
	s.mu.Unlock()
	l := func(name string) (a []netip.Addr, ok bool) { locked(func() { a, ok = lookup(name) }); return }
	r := func(addr netip.Addr) (n string, ok bool) { locked(func() { n, ok = reverse(addr) }); return }
	var upstreams []string
	for _, srv := range servers {
		if a, err := netip.ParseAddr(srv); err == nil {
			upstreams = append(upstreams, netip.AddrPortFrom(a, 53).String())
		}
	}
	return s.dns(ctx, query, l, r, external, upstreams)
}

// Rename re-points a container's DNS name on its live endpoints. See
// portlayer.NetworkPlumber.
func (s *Service) Rename(containerID, oldName, newName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.nets {
		ep, ok := n.eps[containerID]
		if !ok {
			continue
		}
		ep.ContainerName = newName
		for i, name := range ep.DNSNames {
			if name == oldName {
				ep.DNSNames[i] = newName
			}
		}
	}
	if c := s.ctrs[containerID]; c != nil {
		c.name = newName
	}
}
