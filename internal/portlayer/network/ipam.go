package network

import (
	"fmt"
	"net/netip"

	"github.com/vchproject/vch/internal/portlayer"
)

// defaultBridgeSubnet is the predefined bridge network's subnet: the
// 172.17.0.0/16 that container networks conventionally start at (Docker's
// docker0 has it), so firewall rules and habits written for it hold.
var defaultBridgeSubnet = netip.MustParsePrefix("172.17.0.0/16")

// autoPools lists the subnets given to networks created without --subnet,
// in order: the private ranges container networks conventionally take
// (172.18–31.0.0/16, the bridge having 172.17, then 192.168.0.0/16 in
// /20s; moby libnetwork/ipamutils has the same pools), so a VCH's
// networks avoid the 10/8 a site network most often uses.
func autoPools() []netip.Prefix {
	var out []netip.Prefix
	for i := 18; i <= 31; i++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(i), 0, 0}), 16))
	}
	for i := 0; i < 256; i += 16 {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 20))
	}
	return out
}

// overlaps reports whether two prefixes share any address.
func overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

// firstHost is the first usable address of p (p's address + 1).
func firstHost(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// lastAddr is p's last (broadcast) address.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1<<host - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// validateSubnet checks a user-given IPv4 subnet, gateway and range.
// InvalidArgument, saying which value does not fit.
func validateSubnet(subnet netip.Prefix, gw netip.Addr, ipRange netip.Prefix) error {
	if !subnet.Addr().Is4() {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid subnet %s: only IPv4 subnets are supported", subnet)
	}
	if subnet.Bits() > 30 {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid subnet %s: a /30 or larger is needed", subnet)
	}
	if gw.IsValid() && (!subnet.Contains(gw) || gw == subnet.Masked().Addr() || gw == lastAddr(subnet)) {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "no matching subnet for gateway %s", gw)
	}
	if ipRange.IsValid() && (!ipRange.Addr().Is4() || ipRange.Bits() < subnet.Bits() || !subnet.Contains(ipRange.Addr())) {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "no matching subnet for range %s", ipRange)
	}
	return nil
}

// pool hands out the addresses of one network. Not safe for concurrent
// use: the Service's lock guards it.
type pool struct {
	subnet  netip.Prefix
	gateway netip.Addr
	rng     netip.Prefix // dynamic allocation range (the subnet if unset)
	used    map[netip.Addr]string
}

func newPool(subnet netip.Prefix, gw netip.Addr, rng netip.Prefix) *pool {
	if !rng.IsValid() {
		rng = subnet
	}
	return &pool{subnet: subnet.Masked(), gateway: gw, rng: rng.Masked(), used: map[netip.Addr]string{}}
}

// usable reports whether a is a host address other than the gateway.
func (p *pool) usable(a netip.Addr) bool {
	return p.subnet.Contains(a) && a != p.subnet.Addr() && a != lastAddr(p.subnet) && a != p.gateway
}

// allocate takes addr (if valid) or the first free address of the range
// for owner. Conflict if addr is taken or the range is full;
// InvalidArgument if addr is outside the subnet.
func (p *pool) allocate(addr netip.Addr, owner string) (netip.Addr, error) {
	if addr.IsValid() {
		if !p.subnet.Contains(addr) {
			e := portlayer.Invalid(portlayer.KindAddress, "IPv4", addr.String(), portlayer.ReasonInvalid, "network: address "+addr.String()+" is outside subnet "+p.subnet.String())
			e.Name = p.subnet.String()
			return netip.Addr{}, e
		}
		// The gateway, network and broadcast addresses are never
		// handed out (usable): a container there would break the
		// network.
		if _, taken := p.used[addr]; taken || !p.usable(addr) {
			e := portlayer.Refused(portlayer.ClassConflict, portlayer.KindAddress, "", portlayer.ReasonInUse, "network: address "+addr.String()+" is taken")
			e.Field, e.Value = "IPv4", addr.String()
			return netip.Addr{}, e
		}
		p.used[addr] = owner
		return addr, nil
	}
	end := lastAddr(p.rng)
	for a := p.rng.Addr(); a.IsValid() && a.Compare(end) <= 0; a = a.Next() {
		if _, taken := p.used[a]; taken || !p.usable(a) {
			continue
		}
		p.used[a] = owner
		return a, nil
	}
	e := portlayer.Refused(portlayer.ClassConflict, portlayer.KindAddress, "", portlayer.ReasonExhausted, "network: every address of "+p.rng.String()+" is taken")
	e.Value = p.rng.String()
	return netip.Addr{}, e
}

// release frees addr.
func (p *pool) release(addr netip.Addr) { delete(p.used, addr) }

// macFor derives an interface's MAC from its IPv4 address (02:42
// followed by the four address bytes): locally administered, and the
// same for an address each time, so neighbours' ARP caches stay right
// when an address passes to another container.
func macFor(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}
