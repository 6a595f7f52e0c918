package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Egress: TCP connections from containers on non-internal networks to
// addresses outside the VCH. The VCH's namespace has no uplink and no
// forwarding; instead an nftables rule (through netlink) in its prerouting
// NAT chain redirects such connections to a listener of the daemon's
// inside the namespace, and the daemon opens the real connection from its
// own namespace (or an operator-chosen one) and copies bytes both ways —
// a transparent user-space proxy, as published ports are. Nothing is
// added to the host's root namespace: no address, route, forwarding or
// firewall rule.
//
// Refused destinations: loopback, unspecified, multicast, link-local and
// broadcast addresses, the VCH's own subnets and every address of the
// namespace the daemon dials from (the host's own addresses, where its
// API and management services listen).

// egressDialTimeout bounds the outbound connect.
const egressDialTimeout = 30 * time.Second

// Egress connections cost the daemon descriptors (about six each: both
// sockets and the splice pipes of the two copies), so they are bounded: a
// container cannot starve the daemon's API, published ports and VM starts.
const (
	// egressPerSource caps one container address's open egress
	// connections (further ones are reset).
	egressPerSource = 1024
	// egressFDsPerConn is what one connection is counted as against the
	// daemon's descriptor limit; all egress together may use a quarter of
	// it.
	egressFDsPerConn = 6
)

// Bounds of the pause after a failed Accept (EMFILE, ENFILE, ENOBUFS), so
// a descriptor shortage neither spins the loop nor ends egress.
const (
	egressRetryMin = 5 * time.Millisecond
	egressRetryMax = time.Second
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h): the address
// a redirected connection was sent to.
const soOriginalDst = 80

// nftTable names vch's nftables table inside the VCH's namespace.
const nftTable = "vch"

type egress struct {
	logger *slog.Logger
	ns     *namespace // the VCH's namespace (listener, rules)
	out    *namespace // dial from here; nil: the daemon's own namespace
	ln     net.Listener
	port   uint16

	// limit and perSource bound the open egress connections, in all and
	// per container address.
	limit, perSource int

	mu       sync.Mutex
	subnets  []netip.Prefix
	conns    map[net.Conn]netip.Addr // both sides of each connection → the container's address
	sessions map[netip.Addr]int      // open connections per container address
	total    int
	warned   time.Time // last "limit reached" warning
	closed   bool
	wg       sync.WaitGroup
}

// egressLimit is how many egress connections may be open at once: a
// quarter of the daemon's descriptor limit, at egressFDsPerConn each.
func egressLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 16384
	}
	return max(64, int(rl.Cur/4/egressFDsPerConn))
}

// startEgress listens inside ns and serves redirected connections.
func startEgress(ns, out *namespace, logger *slog.Logger) (*egress, error) {
	var ln net.Listener
	if err := ns.do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	}); err != nil {
		return nil, fmt.Errorf("network: egress listener: %w", err)
	}
	e := &egress{logger: logger, ns: ns, out: out, ln: ln, port: uint16(ln.Addr().(*net.TCPAddr).Port),
		conns: map[net.Conn]netip.Addr{}, sessions: map[netip.Addr]int{}}
	e.limit = egressLimit()
	e.perSource = min(egressPerSource, max(1, e.limit/2))
	e.wg.Add(1)
	go e.serve()
	return e, nil
}

// close stops the listener and cuts live connections.
func (e *egress) close() {
	e.mu.Lock()
	e.closed = true
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.ln.Close()
	e.wg.Wait()
}

// rules replaces vch's nftables table: for each egress bridge, TCP to an
// address outside every VCH subnet is redirected to the listener.
func (e *egress) rules(bridges []string, subnets []netip.Prefix) error {
	e.mu.Lock()
	e.subnets = append([]netip.Prefix(nil), subnets...)
	e.mu.Unlock()
	c, err := nftables.New(nftables.WithNetNSFd(int(e.ns.handle)))
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	defer c.CloseLasting()
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: nftTable}
	// Add then delete then add: an atomic replace whether or not the
	// table existed.
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "egress", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, e.port)
	for _, br := range bridges {
		name := make([]byte, unix.IFNAMSIZ)
		copy(name, br)
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}
		for _, p := range subnets {
			mask := net.CIDRMask(p.Bits(), 32)
			a := p.Masked().Addr().As4()
			exprs = append(exprs,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: a[:]})
		}
		exprs = append(exprs,
			&expr.Immediate{Register: 1, Data: port},
			&expr.Redir{RegisterProtoMin: 1})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: nftables rules: %w", err)
	}
	return nil
}

// cut closes the egress connections of a container address (it left its
// network, or its VM ended: a guest that is gone never closes them).
func (e *egress) cut(src netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c, a := range e.conns {
		if a == src {
			c.Close()
			e.conns[c] = netip.Addr{} // cut: handle must not dial out for it
		}
	}
}

func (e *egress) serve() {
	defer e.wg.Done()
	var backoff time.Duration
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors, most likely: wait and go on; egress
			// must not end for good.
			backoff = min(max(2*backoff, egressRetryMin), egressRetryMax)
			e.logger.Warn("egress accept failed, retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		var src netip.Addr
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			src = a.AddrPort().Addr().Unmap()
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			c.Close()
			return
		}
		if e.total >= e.limit || e.sessions[src] >= e.perSource {
			if time.Since(e.warned) > time.Minute {
				e.warned = time.Now()
				e.logger.Warn("egress connection refused: too many open", "from", src, "open", e.sessions[src], "per_container", e.perSource, "total", e.total, "limit", e.limit)
			}
			e.mu.Unlock()
			c.Close()
			continue
		}
		e.conns[c] = src
		e.sessions[src]++
		e.total++
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			e.handle(c, src)
			e.mu.Lock()
			delete(e.conns, c)
			if e.sessions[src]--; e.sessions[src] <= 0 {
				delete(e.sessions, src)
			}
			e.total--
			e.mu.Unlock()
		}()
	}
}

// originalDst reads where a redirected connection was going.
func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, errors.New("not TCP")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var mreq *unix.IPv6Mreq
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, soOriginalDst)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if gerr != nil {
		return netip.AddrPort{}, gerr
	}
	// struct sockaddr_in: family, port (big endian), address.
	b := mreq.Multiaddr
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), binary.BigEndian.Uint16(b[2:4])), nil
}

// allowed reports whether egress may connect to dst.
func (e *egress) allowed(dst netip.Addr) error {
	if dst.IsLoopback() || dst.IsUnspecified() || dst.IsMulticast() || dst.IsLinkLocalUnicast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("%s is not an outside address", dst)
	}
	e.mu.Lock()
	for _, p := range e.subnets {
		if p.Contains(dst) {
			e.mu.Unlock()
			return fmt.Errorf("%s is inside the VCH", dst)
		}
	}
	e.mu.Unlock()
	var addrs []net.Addr
	list := func() error {
		var err error
		addrs, err = net.InterfaceAddrs()
		return err
	}
	var err error
	if e.out != nil {
		err = e.out.do(list)
	} else {
		err = list()
	}
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == dst {
				return fmt.Errorf("%s is an address of the host", dst)
			}
		}
	}
	return nil
}

func (e *egress) handle(c net.Conn, src netip.Addr) {
	defer c.Close()
	dst, err := originalDst(c)
	if err == nil {
		err = e.allowed(dst.Addr())
	}
	if err != nil {
		e.logger.Debug("egress refused", "from", c.RemoteAddr(), "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), egressDialTimeout)
	var up net.Conn
	dial := func() error {
		var err error
		up, err = (&net.Dialer{}).DialContext(ctx, "tcp4", dst.String())
		return err
	}
	if e.out != nil {
		err = e.out.do(dial)
	} else {
		err = dial()
	}
	cancel()
	if err != nil {
		e.logger.Debug("egress dial", "to", dst, "err", err)
		return
	}
	defer up.Close()
	e.mu.Lock()
	if a := e.conns[c]; e.closed || a != src {
		// Closed meanwhile (shutdown, or the container left).
		e.mu.Unlock()
		return
	}
	e.conns[up] = src
	e.mu.Unlock()
	defer func() { e.mu.Lock(); delete(e.conns, up); e.mu.Unlock() }()
	done := make(chan struct{}, 2)
	// At one side's EOF the other is half-closed; an error on either
	// closes both, which also ends the opposite copy (a peer that reset
	// or timed out must not leave the other side open for ever).
	pipe := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		if _, err := io.Copy(dst, src); err != nil {
			src.Close()
			dst.Close()
			return
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			if err := tc.CloseWrite(); err != nil {
				src.Close()
				dst.Close()
			}
		}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}
