package tether

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/tether/dnsrelay"
)

// nics configures the VM's network interfaces. Each NIC is known by the
// hardware address the VMM gave it (its boot MAC). Spare NICs live in a
// private network namespace of tether's, so the container sees only its
// own interfaces; a connect moves one back and configures it.
type nics struct {
	mu      sync.Mutex
	current map[string]string // boot MAC → MAC the interface has now
	// order holds a restored VM's NICs' boot MACs in device order (the
	// wake's). Their devices bind on first use (locate): until then a
	// NIC has no interface at all, and once bound it shows the
	// template's address, wire.TemplateMAC(its index).
	order    []string
	spare    int             // counter for spare names
	hidden   *netlink.Handle // netlink in the spares' namespace
	hiddenNS netns.NsHandle  // the spares' namespace
	root     netns.NsHandle  // the VM's (and container's) namespace
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
// namespace, bringing it back from the spares' namespace if it is there
// and binding its device if it has none yet (locate).
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
	return n.locate(mac)
}

// locate binds the device of a restored VM's NIC with boot MAC mac (one
// of order) and returns its link, which shows the template's address.
func (n *nics) locate(mac string) (netlink.Link, error) {
	i := slices.Index(n.order, mac)
	if i < 0 {
		return nil, fmt.Errorf("tether: no network interface with address %s", mac)
	}
	dev, err := nthDevice(virtioNet, i)
	if err != nil {
		return nil, err
	}
	bindVirtio(dev)
	for _, addr := range []string{wire.TemplateMAC(i), mac} {
		if l := linkByMAC(netlink.LinkList, addr); l != nil {
			n.current[mac] = strings.ToLower(addr)
			return l, nil
		}
	}
	return nil, fmt.Errorf("tether: network device %d bound, but no interface with address %s or %s", i, wire.TemplateMAC(i), mac)
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

// setupAll configures every NIC at boot: loopback up, each NIC in ifs
// configured or, without a name, hidden as a spare. A NIC at boot is
// down, has no IPv4 address and the kernel's name (ethN), so only what
// differs is changed, from one link dump, and a spare is renamed, given
// its boot MAC and moved in one message: under TCG a restored guest
// translates every netlink path afresh, and the full sequence per NIC
// (configureLocked) made this most of a container's start (three NICs:
// ~370 ms on 2026-12-03). Only when a wanted name is held by another of
// these NICs are they all renamed out of the way first.
func (n *nics) setupAll(ifs []wire.Interface) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.current == nil {
		n.current = map[string]string{}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("tether: list interfaces: %w", err)
	}
	byMAC, byName := map[string]netlink.Link{}, map[string]netlink.Link{}
	for _, l := range links {
		byMAC[strings.ToLower(l.Attrs().HardwareAddr.String())] = l
		byName[l.Attrs().Name] = l
	}
	if lo := byName["lo"]; lo != nil {
		_ = netlink.LinkSetUp(lo)
	}
	found := make([]netlink.Link, len(ifs))
	collide := false
	for i, f := range ifs {
		boot := strings.ToLower(f.BootMAC)
		cur := boot
		if c, ok := n.current[boot]; ok {
			cur = c
		}
		if found[i] = byMAC[cur]; found[i] == nil && slices.Contains(n.order, boot) {
			// A restored VM's NIC: unbound (a spare stays so, unseen),
			// or bound at the wake with the template's address (where
			// the template could not turn autoprobe off).
			if f.Name == "" && n.unbound(boot) {
				continue
			}
			if found[i], err = n.locate(boot); err != nil {
				return err
			}
		}
		if found[i] == nil {
			return fmt.Errorf("tether: no network interface with address %s", f.BootMAC)
		}
		if h := byName[f.Name]; f.Name != "" && h != nil && h.Attrs().Index != found[i].Attrs().Index {
			collide = true
		}
	}
	if collide {
		for i, l := range found {
			if l == nil {
				continue
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
	for i, f := range ifs {
		l := found[i]
		if l == nil {
			continue
		}
		switch {
		case l.Attrs().Flags&net.FlagUp != 0:
			err = n.configureLocked(f)
		case f.Name == "":
			err = n.hide(l, f.BootMAC)
		default:
			err = n.bringUp(l, f)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unbound reports whether boot is a restored VM's NIC whose device has
// no driver yet (so no interface either).
func (n *nics) unbound(boot string) bool {
	i := slices.Index(n.order, boot)
	if i < 0 {
		return false
	}
	dev, err := nthDevice(virtioNet, i)
	if err != nil {
		return false
	}
	_, err = os.Lstat(filepath.Join(virtioBus, "devices", dev, "driver"))
	return err != nil
}

// configure applies one interface request on a running VM.
func (n *nics) configure(f wire.Interface) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.configureLocked(f)
}

// configureLocked configures the NIC f names from whatever state it is
// in: down, addresses removed, then hidden (no name) or brought up.
func (n *nics) configureLocked(f wire.Interface) error {
	l, err := n.find(f.BootMAC)
	if err != nil {
		return err
	}
	_ = netlink.LinkSetDown(l)
	addrs, _ := netlink.AddrList(l, unix.AF_INET)
	for _, a := range addrs {
		_ = netlink.AddrDel(l, &a)
	}
	if f.Name == "" {
		return n.hide(l, f.BootMAC)
	}
	return n.bringUp(l, f)
}

// hide makes the down NIC l a spare (or takes it back from the
// container): renamed spareN, given its boot MAC and moved into the
// spares' namespace, in one RTM_SETLINK (rtnetlink applies
// IFLA_NET_NS_FD with IFLA_IFNAME as the name in the new namespace,
// then IFLA_ADDRESS).
func (n *nics) hide(l netlink.Link, bootMAC string) error {
	hw, err := net.ParseMAC(bootMAC)
	if err != nil {
		return fmt.Errorf("tether: spare %s: %w", bootMAC, err)
	}
	if _, err := n.spareNS(); err != nil {
		return err
	}
	n.spare++
	name := fmt.Sprintf("spare%d", n.spare)
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(l.Attrs().Index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(n.hiddenNS))))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, []byte(hw)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("tether: hide spare %s as %s: %w", bootMAC, name, err)
	}
	boot := strings.ToLower(bootMAC)
	n.current[boot] = boot
	return nil
}

// bringUp gives the down NIC l the name, MAC, MTU, address and default
// route f asks for, changing only what differs, and sets it up.
func (n *nics) bringUp(l netlink.Link, f wire.Interface) error {
	boot := strings.ToLower(f.BootMAC)
	if name := l.Attrs().Name; name != f.Name {
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
	if !strings.EqualFold(l.Attrs().HardwareAddr.String(), hw.String()) {
		if err := netlink.LinkSetHardwareAddr(l, hw); err != nil {
			return fmt.Errorf("tether: %s: set address %s: %w", f.Name, mac, err)
		}
	}
	n.current[boot] = strings.ToLower(hw.String())
	mtu := f.MTU
	if mtu == 0 {
		mtu = 1500
	}
	if l.Attrs().MTU != mtu {
		_ = netlink.LinkSetMTU(l, mtu)
	}
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

// Rehearsal values: a locally administered MAC no VCH hands out and a
// link-local address (RFC 3927), used only inside a warm guest.
const (
	rehearsalMAC     = "02:76:63:68:fe:00"
	rehearsalAddress = "169.254.77.2/30"
	rehearsalGateway = "169.254.77.1"
)

// rehearse runs, on a warm guest's first NIC (bound, down, showing the
// template's MAC), the netlink calls a container's setup makes — MAC,
// address, up, default route — and undoes them, leaving the NIC as it
// was. Under TCG a restored guest translates every kernel and tether
// path on first use; done here, before the VM is claimed, the
// container's setup runs paths already translated. The NIC's tap is on
// no network while the VM is warm, so nothing it sends leaves the VMM.
func (n *nics) rehearse() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := linkByMAC(netlink.LinkList, wire.TemplateMAC(0))
	if l == nil {
		return errors.New("tether: rehearsal: no bound NIC")
	}
	if n.current == nil {
		n.current = map[string]string{}
	}
	name := l.Attrs().Name
	err := n.bringUp(l, wire.Interface{BootMAC: rehearsalMAC, Name: name, Address: rehearsalAddress, Gateway: rehearsalGateway})
	delete(n.current, rehearsalMAC)
	_ = netlink.LinkSetDown(l)
	addrs, _ := netlink.AddrList(l, unix.AF_INET)
	for _, a := range addrs {
		_ = netlink.AddrDel(l, &a)
	}
	hw, _ := net.ParseMAC(wire.TemplateMAC(0))
	if serr := netlink.LinkSetHardwareAddr(l, hw); err == nil {
		err = serr
	}
	return err
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
