package tether

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/tether/dnsrelay"
	"github.com/vchproject/vch/internal/tether/wire"
)

// nics configures the VM's network interfaces. Each NIC is known by the
// hardware address the VMM gave it (its boot MAC). Spare NICs live in a
// private network namespace of tether's, so the container sees only its
// own interfaces; a connect moves one back and configures it.
type nics struct {
	mu       sync.Mutex
	current  map[string]string // boot MAC → MAC the interface has now
	spare    int               // counter for spare names
	hidden   *netlink.Handle   // netlink in the spares' namespace
	hiddenNS netns.NsHandle    // the spares' namespace
	root     netns.NsHandle    // the VM's (and container's) namespace
}

// spareNS creates the spares' namespace on first use.
func (n *nics) spareNS() (*netlink.Handle, error) {
	if n.hidden != nil {
		return n.hidden, nil
	}
	sp, err := newSpareNS()
	if err != nil {
		return nil, err
	}
	n.useSpareNS(sp)
	return n.hidden, nil
}

// spareNamespace is the private network namespace spare NICs wait in.
type spareNamespace struct {
	handle   *netlink.Handle // netlink in it
	ns, root netns.NsHandle  // it, and the VM's own namespace
}

// useSpareNS makes sp the spares' namespace (one made ahead of time, as a
// template guest does before it is saved: a namespace costs a clone
// nothing then).
func (n *nics) useSpareNS(sp spareNamespace) {
	n.hidden, n.hiddenNS, n.root = sp.handle, sp.ns, sp.root
}

// newSpareNS creates the spares' namespace.
func newSpareNS() (spareNamespace, error) {
	type result struct {
		root, ns netns.NsHandle
		err      error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		root, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			runtime.UnlockOSThread()
			return
		}
		ns, err := netns.New()
		if serr := netns.Set(root); serr != nil {
			// The thread stays locked and dies with the goroutine.
			ch <- result{err: serr}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{root, ns, err}
	}()
	r := <-ch
	if r.err != nil {
		return spareNamespace{}, fmt.Errorf("tether: namespace for spare NICs: %w", r.err)
	}
	h, err := netlink.NewHandleAt(r.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return spareNamespace{}, fmt.Errorf("tether: netlink for spare NICs: %w", err)
	}
	return spareNamespace{handle: h, ns: r.ns, root: r.root}, nil
}

// find returns the link of the NIC with boot MAC mac in the VM's
// namespace, bringing it back from the spares' namespace if it is there.
func (n *nics) find(mac string) (netlink.Link, error) {
	if n.current == nil {
		n.current = map[string]string{}
	}
	mac = strings.ToLower(mac)
	want := mac
	if cur, ok := n.current[mac]; ok {
		want = cur
	}
	if l := linkByMAC(netlink.LinkList, want); l != nil {
		return l, nil
	}
	if n.hidden != nil {
		if l := linkByMAC(n.hidden.LinkList, mac); l != nil {
			if err := n.hidden.LinkSetNsFd(l, int(n.root)); err != nil {
				return nil, fmt.Errorf("tether: bring back %s: %w", mac, err)
			}
			n.current[mac] = mac
			if l := linkByMAC(netlink.LinkList, mac); l != nil {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("tether: no network interface with address %s", mac)
}

func linkByMAC(list func() ([]netlink.Link, error), mac string) netlink.Link {
	links, err := list()
	if err != nil {
		return nil
	}
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac) {
			return l
		}
	}
	return nil
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
	for i, f := range ifs {
		l, err := n.find(f.BootMAC)
		if err != nil {
			return err
		}
		_ = netlink.LinkSetDown(l)
		if err := netlink.LinkSetName(l, fmt.Sprintf("vchtmp%d", i)); err != nil {
			return fmt.Errorf("tether: rename %s: %w", l.Attrs().Name, err)
		}
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
	boot := strings.ToLower(f.BootMAC)
	name := l.Attrs().Name
	_ = netlink.LinkSetDown(l)
	addrs, _ := netlink.AddrList(l, unix.AF_INET)
	for _, a := range addrs {
		_ = netlink.AddrDel(l, &a)
	}
	if f.Name == "" {
		// Spare (or taken back): down, its boot MAC, out of the
		// container's sight.
		n.spare++
		if err := netlink.LinkSetName(l, fmt.Sprintf("spare%d", n.spare)); err != nil {
			return fmt.Errorf("tether: rename %s: %w", name, err)
		}
		if hw, err := net.ParseMAC(f.BootMAC); err == nil {
			_ = netlink.LinkSetHardwareAddr(l, hw)
			n.current[boot] = boot
		}
		if _, err := n.spareNS(); err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(l, int(n.hiddenNS)); err != nil {
			return fmt.Errorf("tether: hide spare %s: %w", f.BootMAC, err)
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
	n.current[boot] = strings.ToLower(mac)
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
		ok, reply, err := sc.SendRequest(ctx, wire.RequestDNS, true, q)
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
