package tether

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/tether/dnsrelay"
	"github.com/vchproject/vch/internal/tether/wire"
)

// nics configures the VM's network interfaces. Each NIC is known by the
// hardware address the VMM gave it (its boot MAC) and found again by its
// interface index, since tether may change its name and address.
type nics struct {
	mu    sync.Mutex
	index map[string]int // boot MAC → ifindex
	spare int            // counter for spare names
}

// find returns the link of the NIC with boot MAC mac.
func (n *nics) find(mac string) (netlink.Link, error) {
	if n.index == nil {
		n.index = map[string]int{}
	}
	mac = strings.ToLower(mac)
	if idx, ok := n.index[mac]; ok {
		return netlink.LinkByIndex(idx)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("tether: list links: %w", err)
	}
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac) {
			n.index[mac] = l.Attrs().Index
			return l, nil
		}
	}
	return nil, fmt.Errorf("tether: no network interface with address %s", mac)
}

// setupAll configures every NIC at boot: loopback up, then each interface
// renamed out of the way first (kernel names may collide with the wanted
// ones), then configured.
func (n *nics) setupAll(ifs []wire.Interface) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	links := make([]netlink.Link, len(ifs))
	for i, f := range ifs {
		l, err := n.find(f.BootMAC)
		if err != nil {
			return err
		}
		_ = netlink.LinkSetDown(l)
		if err := netlink.LinkSetName(l, fmt.Sprintf("vchtmp%d", i)); err != nil {
			return fmt.Errorf("tether: rename %s: %w", l.Attrs().Name, err)
		}
		links[i] = l
	}
	for _, f := range ifs {
		if err := n.configureLocked(f); err != nil {
			return err
		}
	}
	return nil
}

// configure applies one interface request on a running VM.
func (n *nics) configure(f wire.Interface) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.configureLocked(f)
}

func (n *nics) configureLocked(f wire.Interface) error {
	l, err := n.find(f.BootMAC)
	if err != nil {
		return err
	}
	name := l.Attrs().Name
	_ = netlink.LinkSetDown(l)
	addrs, _ := netlink.AddrList(l, unix.AF_INET)
	for _, a := range addrs {
		_ = netlink.AddrDel(l, &a)
	}
	if f.Name == "" {
		// Spare (or taken back): down, its boot MAC, a name the container
		// does not mistake for a network.
		n.spare++
		if err := netlink.LinkSetName(l, fmt.Sprintf("spare%d", n.spare)); err != nil {
			return fmt.Errorf("tether: rename %s: %w", name, err)
		}
		if hw, err := net.ParseMAC(f.BootMAC); err == nil {
			_ = netlink.LinkSetHardwareAddr(l, hw)
		}
		return nil
	}
	if name != f.Name {
		if err := netlink.LinkSetName(l, f.Name); err != nil {
			return fmt.Errorf("tether: rename %s to %s: %w", name, f.Name, err)
		}
	}
	mac := f.MAC
	if mac == "" {
		mac = f.BootMAC
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("tether: interface %s: %w", f.Name, err)
	}
	if err := netlink.LinkSetHardwareAddr(l, hw); err != nil {
		return fmt.Errorf("tether: %s: set address %s: %w", f.Name, mac, err)
	}
	mtu := f.MTU
	if mtu == 0 {
		mtu = 1500
	}
	_ = netlink.LinkSetMTU(l, mtu)
	if f.Address != "" {
		a, err := netlink.ParseAddr(f.Address)
		if err != nil {
			return fmt.Errorf("tether: %s: %w", f.Name, err)
		}
		if err := netlink.AddrAdd(l, a); err != nil {
			return fmt.Errorf("tether: %s: add %s: %w", f.Name, f.Address, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("tether: %s up: %w", f.Name, err)
	}
	if f.Gateway != "" {
		gw := net.ParseIP(f.Gateway)
		if gw == nil {
			return fmt.Errorf("tether: %s: bad gateway %q", f.Name, f.Gateway)
		}
		route := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}
		if err := netlink.RouteReplace(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("tether: default route via %s: %w", f.Gateway, err)
		}
	}
	return nil
}

// startDNSRelay serves DNS on addr inside the VM, relaying each query to
// the host over the current session (wire.RequestDNS); between sessions
// queries fail and the guest's resolver retries. Started once.
func (s *server) startDNSRelay(addr string) {
	s.mu.Lock()
	started := s.relay
	s.relay = true
	s.mu.Unlock()
	if started {
		return
	}
	forward := func(ctx context.Context, q []byte) ([]byte, error) {
		sc := s.currentConn()
		if sc == nil {
			return nil, errors.New("tether: no host connected")
		}
		ok, reply, err := sc.SendRequest(wire.RequestDNS, true, q)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errors.New("tether: host refused the DNS query")
		}
		return reply, nil
	}
	go func() {
		if err := dnsrelay.Serve(context.Background(), addr, forward); err != nil {
			s.logger.Warn("dns relay stopped", "addr", addr, "err", err)
		}
	}()
}
