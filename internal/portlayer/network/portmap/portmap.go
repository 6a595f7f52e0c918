// Package portmap publishes container ports on host addresses: it is vch's
// in-process counterpart of Docker's userland proxy (docker-proxy) for
// docker run -p.
//
// Container VMs live in a private network namespace that the host cannot
// route to. A Mapper binds sockets on host addresses (in the namespace of
// the process that calls Publish) and forwards every TCP connection and
// every UDP flow to the container's address through a Dialer, which opens
// the container-side socket inside the VCH's namespace.
//
// The package owns the host sockets, the forwarding goroutines and the
// connections and flows they carry, all grouped by owner (a container ID).
// Its verbs are Publish (bind and start forwarding), Unpublish (close an
// owner's listeners, connections and flows) and Close. It does not choose
// container addresses, program firewalls or NAT, or know about namespaces:
// the Dialer does.
//
// Forwarding follows docker-proxy (moby v28.5.2 cmd/docker-proxy):
//   - TCP: each accepted connection dials the container; bytes are copied
//     both ways; an EOF on one side half-closes (CloseWrite) the other, so
//     request/response exchanges that end with a shutdown work; an error
//     on either side closes both. A failed dial closes the client.
//   - UDP: each client address gets its own flow, a connected socket from
//     the Dialer; the container's replies go back to that client address,
//     sent from the address the client wrote to. A flow closes after
//     UDPIdleTimeout without a datagram in either direction.
package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

const (
	// UDPIdleTimeout is how long a UDP flow stays open with no datagram in
	// either direction: docker-proxy's DefaultConnTrackTimeout (90 s, moby
	// v28.5.2 cmd/docker-proxy/udp_proxy_linux.go). A datagram either way
	// restarts it, so a one-way stream keeps its flow.
	UDPIdleTimeout = 90 * time.Second
	// MaxDatagramBytes is the size of the UDP buffers, 64 KiB: larger than
	// any UDP payload over IPv4 or IPv6 without jumbograms (65,507 and
	// 65,527 bytes), so no datagram is truncated.
	MaxDatagramBytes = 64 << 10
	// MaxUDPFlows caps the open flows of one published UDP port. Each flow
	// holds a socket and a MaxDatagramBytes buffer, so the cap bounds one
	// port at 4,096 descriptors and 256 MiB; datagrams from further
	// clients are dropped until a flow closes.
	MaxUDPFlows = 4096
	// DialTimeout bounds opening the container side of one TCP connection
	// or UDP flow. A container that is not listening refuses at once; the
	// bound only matters for a guest that does not answer at all, where
	// the kernel would retry SYNs for about two minutes.
	DialTimeout = 30 * time.Second
)

// Dialer opens a connection to the container side: network is "tcp" or
// "udp" and address a literal "ip:port" ("172.17.0.2:80", "[fd00::2]:53").
// It must honour ctx's cancellation and deadline. For TCP, a connection
// that has a CloseWrite method (as *net.TCPConn does) gets half-closes
// forwarded; one without is only ever closed whole.
type Dialer func(ctx context.Context, network, address string) (net.Conn, error)

// Mapper binds published ports and forwards their traffic. The zero value
// is not usable; create one with New. A Mapper is safe for concurrent use.
type Mapper struct {
	dial    Dialer
	log     *slog.Logger
	udpIdle time.Duration // UDPIdleTimeout; tests shorten it

	mu     sync.Mutex
	closed bool
	owners map[string][]*proxy
	held   map[hostKey]*proxy // every bound host socket
}

// hostKey is one bound host socket: protocol and exact address.
type hostKey struct {
	proto string
	addr  netip.AddrPort
}

// New returns a Mapper that opens container-side sockets with dial. It
// logs through logger (nil discards), adding component=portmap.
func New(dial Dialer, logger *slog.Logger) *Mapper {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Mapper{
		dial:    dial,
		log:     logger.With("component", "portmap"),
		udpIdle: UDPIdleTimeout,
		owners:  map[string][]*proxy{},
		held:    map[hostKey]*proxy{},
	}
}

// Publish binds a host socket for every binding in ports and forwards its
// traffic to target, on the binding's ContainerPort, for owner (a
// container ID). It adds to the ports owner already has.
//
// Host addresses and ports:
//   - A zero HostIP means 0.0.0.0 (IPv4 only, Docker's default); an
//     IPv4-mapped IPv6 address is taken as IPv4.
//   - HostPort 0 (and no HostPortEnd) lets the kernel pick a free port from
//     its ephemeral range.
//   - HostPort..HostPortEnd (HostPortEnd > HostPort) takes the lowest port
//     in the range that neither this Mapper nor another socket holds.
//     (Docker's allocator instead goes round the range from the port after
//     the one it gave last, and tries binding 10 times.)
//   - HostPortEnd equal to HostPort, or 0, means HostPort alone.
//
// The result has one binding per element of ports, in the same order, with
// HostIP set to the address bound (0.0.0.0 for a zero HostIP), HostPort to
// the port bound and HostPortEnd to 0. It is non-nil, and empty for empty
// ports.
//
// Publish is all-or-nothing: on error none of this call's ports stay bound
// (ports from earlier calls stay). Errors:
//   - InvalidArgument: empty owner, invalid target, a Proto other than
//     "tcp" or "udp", ContainerPort 0, HostPortEnd below HostPort or set
//     without HostPort, or a HostIP that is not a local address.
//   - Conflict: a host port is taken. The text after "portmap: " and
//     before the final ": conflict" is Docker 28's, from moby v28.5.2
//     libnetwork: "Bind for 0.0.0.0:8080 failed: port is already
//     allocated" (portallocator/portallocator.go) when this Mapper holds
//     the port; "failed to bind host port for
//     0.0.0.0:8080:172.17.0.2:80/tcp: address already in use"
//     (drivers/bridge/port_mapping_linux.go, bindTCPOrUDP, with
//     types.PortBinding's "HostIP:HostPort:IP:Port/proto") when another
//     socket does; for a range whose every port is taken, "failed to bind
//     host port 8010 for 0.0.0.0:8000-8010:172.17.0.2:80/tcp: address
//     already in use" (the last port tried) or, if this Mapper holds them
//     all, "all ports are allocated" (portallocator). Docker's daemon
//     prefixes these with "failed to set up container networking: driver
//     failed programming external connectivity on endpoint NAME (ID): "
//     (daemon/container_operations.go, libnetwork/endpoint.go), which is
//     the caller's to add. A reference dockerd (20.10) gave the same
//     "Bind for ... port is already allocated"; for a port held by
//     another process it still said "Error starting userland proxy:
//     listen tcp4 0.0.0.0:9090: bind: address already in use", which
//     Docker 28 replaced. The error also wraps the syscall.Errno
//     (EADDRINUSE) when there is one.
//   - Unavailable: the Mapper is closed.
//   - Internal: any other failure to bind (EACCES for a port below
//     net.ipv4.ip_unprivileged_port_start without privilege), in the same
//     "failed to bind host port for ..." wording.
func (m *Mapper) Publish(owner string, target netip.Addr, ports []portlayer.PortBinding) ([]portlayer.PortBinding, error) {
	if owner == "" {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "empty owner").WithOp("publish")
	}
	if !target.IsValid() {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid target address").WithOp("publish")
	}
	target = target.Unmap()
	reqs := make([]request, 0, len(ports))
	for _, pb := range ports {
		r, err := normalize(pb, target)
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, r)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, portlayer.Errorf(portlayer.ClassUnavailable, "mapper closed").WithOp("publish")
	}
	bound := make([]*proxy, 0, len(reqs))
	for _, r := range reqs {
		p, err := m.bind(owner, r)
		if err != nil {
			for _, b := range bound {
				delete(m.held, b.key)
				b.closeSocket()
			}
			return nil, err
		}
		m.held[p.key] = p
		bound = append(bound, p)
	}

	out := make([]portlayer.PortBinding, 0, len(bound))
	desc := make([]string, 0, len(bound))
	for _, p := range bound {
		p.start()
		out = append(out, p.binding)
		desc = append(desc, p.String())
	}
	m.owners[owner] = append(m.owners[owner], bound...)
	if len(bound) > 0 {
		m.log.Info("ports published", "container", owner, "ports", strings.Join(desc, ","))
	}
	return out, nil
}

// Unpublish closes owner's host sockets, so their ports are free again when
// it returns, and cuts owner's live TCP connections and UDP flows. It
// waits for their goroutines to end. Unpublish of an owner with no ports
// (or unknown) does nothing.
func (m *Mapper) Unpublish(owner string) {
	m.mu.Lock()
	ps := m.owners[owner]
	delete(m.owners, owner)
	m.release(ps)
	m.mu.Unlock()

	for _, p := range ps {
		p.stop()
	}
	if len(ps) > 0 {
		m.log.Info("ports unpublished", "container", owner)
	}
}

// Close unpublishes every owner and makes later Publish calls fail with
// Unavailable. It is idempotent and always returns nil.
func (m *Mapper) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var ps []*proxy
	for owner, ops := range m.owners {
		ps = append(ps, ops...)
		delete(m.owners, owner)
	}
	m.release(ps)
	m.mu.Unlock()

	for _, p := range ps {
		p.stop()
	}
	return nil
}

// release forgets ps's host sockets and closes them. m.mu is held.
func (m *Mapper) release(ps []*proxy) {
	for _, p := range ps {
		delete(m.held, p.key)
		p.closeSocket()
	}
}

// request is a validated, normalized PortBinding.
type request struct {
	proto         string
	hostIP        netip.Addr // never zero
	first, last   uint16     // host ports; both 0 for a kernel pick
	target        netip.Addr
	containerPort uint16
}

// normalize validates pb and fills in Docker's defaults.
func normalize(pb portlayer.PortBinding, target netip.Addr) (request, error) {
	r := request{
		proto:         pb.Proto,
		hostIP:        pb.HostIP.Unmap(),
		first:         pb.HostPort,
		last:          pb.HostPortEnd,
		target:        target,
		containerPort: pb.ContainerPort,
	}
	if r.proto != "tcp" && r.proto != "udp" {
		return request{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "protocol %q: want tcp or udp", pb.Proto).WithOp("publish")
	}
	if r.containerPort == 0 {
		return request{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "container port 0: want 1-65535").WithOp("publish")
	}
	if r.last != 0 && r.first == 0 {
		return request{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "host port range 0-%d: want a start of 1-65535", r.last).WithOp("publish")
	}
	if r.last != 0 && r.last < r.first {
		return request{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "host port range %d-%d: end below start", r.first, r.last).WithOp("publish")
	}
	if r.last == 0 {
		r.last = r.first
	}
	if !r.hostIP.IsValid() {
		r.hostIP = netip.IPv4Unspecified()
	}
	return r, nil
}

// String renders r as moby's libnetwork types.PortBinding.String does
// ("HostIP:HostPort[-End]:IP:Port/proto", IPv6 in brackets, an unset host
// port left empty), for Docker's error texts.
func (r request) String() string {
	var b strings.Builder
	b.WriteString(bracket(r.hostIP))
	b.WriteByte(':')
	if r.first != 0 {
		b.WriteString(strconv.Itoa(int(r.first)))
		if r.last != r.first {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r.last)))
		}
	}
	b.WriteByte(':')
	b.WriteString(bracket(r.target))
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(int(r.containerPort)))
	b.WriteByte('/')
	b.WriteString(r.proto)
	return b.String()
}

func bracket(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// bind binds the host socket for r, trying each port of a range in turn.
// m.mu is held.
func (m *Mapper) bind(owner string, r request) (*proxy, error) {
	if r.first == r.last {
		// One port, or a kernel pick (port 0).
		if r.first != 0 {
			if _, ok := m.held[hostKey{r.proto, netip.AddrPortFrom(r.hostIP, r.first)}]; ok {
				return nil, allocatedError(r.hostIP, r.first)
			}
		}
		p, err := m.listen(owner, r, r.first)
		if err != nil {
			return nil, bindError(r, 0, err)
		}
		return p, nil
	}
	var lastErr error
	for port := int(r.first); port <= int(r.last); port++ {
		if _, ok := m.held[hostKey{r.proto, netip.AddrPortFrom(r.hostIP, uint16(port))}]; ok {
			continue
		}
		p, err := m.listen(owner, r, uint16(port))
		if err == nil {
			return p, nil
		}
		lastErr = bindError(r, port, err)
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, lastErr
		}
	}
	if lastErr == nil {
		e := portlayer.Refused(portlayer.ClassConflict, portlayer.KindPort, "", portlayer.ReasonExhausted, "portmap: every port of "+r.String()+" is published already")
		e.Value = r.String()
		return nil, e
	}
	return nil, lastErr
}

// allocatedError is the Conflict error for a host port this Mapper
// already holds for another owner: KindPort, ReasonAllocated, Value
// "IP:PORT".
func allocatedError(ip netip.Addr, port uint16) error {
	hp := fmt.Sprintf("%s:%d", ip, port)
	e := portlayer.Refused(portlayer.ClassConflict, portlayer.KindPort, "", portlayer.ReasonAllocated, "portmap: host port "+hp+" is published already")
	e.Value = hp
	return e
}

// bindError is the error for a failed bind of r's host socket (on port
// of a range, 0 for a single port): KindPort with Value r's
// "HostIP:HostPort:IP:Port/proto" form and Name the port tried in a
// range; Conflict with ReasonInUse for EADDRINUSE, InvalidArgument for
// EADDRNOTAVAIL, Internal otherwise. It wraps the bare syscall.Errno
// where there is one, else err.
func bindError(r request, port int, err error) error {
	var cause error = err
	var errno syscall.Errno
	if errors.As(err, &errno) {
		cause = errno
	}
	e := &portlayer.Error{Class: portlayer.ClassInternal, Kind: portlayer.KindPort, Value: r.String(), Err: cause,
		Message: "portmap: bind the host port for " + r.String()}
	if port != 0 {
		e.Name = strconv.Itoa(port)
		e.Message = fmt.Sprintf("portmap: bind host port %d for %s", port, r)
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		e.Class, e.Reason = portlayer.ClassConflict, portlayer.ReasonInUse
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		e.Class = portlayer.ClassInvalidArgument
	}
	return e
}

// listen binds r's protocol on hostIP:port (port 0: the kernel picks) and
// returns the proxy for it, not yet started.
func (m *Mapper) listen(owner string, r request, port uint16) (*proxy, error) {
	addr := netip.AddrPortFrom(r.hostIP, port)
	family := "4"
	if r.hostIP.Is6() {
		family = "6"
	}
	p := &proxy{
		m:      m,
		target: netip.AddrPortFrom(r.target, r.containerPort).String(),
	}
	switch r.proto {
	case "tcp":
		ln, err := net.Listen("tcp"+family, addr.String())
		if err != nil {
			return nil, err
		}
		p.ln = ln
		addr = ln.Addr().(*net.TCPAddr).AddrPort()
	case "udp":
		pc, err := net.ListenUDP("udp"+family, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, err
		}
		if r.hostIP.IsUnspecified() {
			if err := enablePacketInfo(pc, r.hostIP.Is6()); err != nil {
				pc.Close()
				return nil, err
			}
			p.pktinfo = true
		}
		p.pc = pc
		addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	p.key = hostKey{proto: r.proto, addr: addr}
	p.binding = portlayer.PortBinding{
		Proto:         r.proto,
		ContainerPort: r.containerPort,
		HostIP:        r.hostIP,
		HostPort:      addr.Port(),
	}
	p.log = m.log.With("container", owner, "proto", r.proto, "host", addr.String(), "target", p.target)
	p.conns = map[net.Conn]struct{}{}
	p.flows = map[netip.AddrPort]*flow{}
	return p, nil
}

// proxy serves one bound host socket.
type proxy struct {
	m       *Mapper
	key     hostKey
	binding portlayer.PortBinding // as returned by Publish
	target  string                // container "ip:port"
	log     *slog.Logger

	ln      net.Listener // tcp
	pc      *net.UDPConn // udp
	pktinfo bool         // pc receives destination addresses

	ctx    context.Context
	cancel context.CancelFunc
	epoch  time.Time // start of p.clock
	wg     sync.WaitGroup

	mu      sync.Mutex
	stopped bool
	conns   map[net.Conn]struct{}    // tcp: both sides of live connections
	flows   map[netip.AddrPort]*flow // udp: by client address
}

// start launches the serving goroutine.
func (p *proxy) start() {
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.epoch = time.Now()
	p.wg.Add(1)
	if p.ln != nil {
		go p.serveTCP()
	} else {
		go p.serveUDP()
	}
}

// closeSocket closes the host socket, which frees its port at once.
func (p *proxy) closeSocket() {
	if p.ln != nil {
		p.ln.Close()
	}
	if p.pc != nil {
		p.pc.Close()
	}
}

// stop cuts every connection and flow and waits for the goroutines. The
// host socket is already closed.
func (p *proxy) stop() {
	p.mu.Lock()
	p.stopped = true
	for c := range p.conns {
		c.Close()
	}
	for _, f := range p.flows {
		f.conn.Close()
	}
	p.mu.Unlock()
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
}

// track registers c to be closed by stop; false if stop has begun.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// untrack forgets c and closes it.
func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// dialContainer opens the container side, bounded by DialTimeout and cut
// short by stop.
func (p *proxy) dialContainer(network string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(p.ctx, DialTimeout)
	defer cancel()
	return p.m.dial(ctx, network, p.target)
}

// String is the binding as "ip:port->target/proto", for logs and tests.
func (p *proxy) String() string {
	return p.key.addr.String() + "->" + p.target + "/" + p.key.proto
}

// Bindings returns owner's published ports, in the order they were
// published, as Publish returned them; nil if owner has none.
func (m *Mapper) Bindings(owner string) []portlayer.PortBinding {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []portlayer.PortBinding
	for _, p := range m.owners[owner] {
		out = append(out, p.binding)
	}
	return slices.Clip(out)
}
