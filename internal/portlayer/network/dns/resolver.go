// Package dns is the host side of vch's embedded DNS server: the resolver
// at 127.0.0.11 that containers on user-defined networks find each other by.
//
// Inside a container VM, tether listens on 127.0.0.11:53 (package
// internal/tether/dnsrelay) and relays each raw query over its channel to
// the host, where the network area calls [Resolver.Answer] with the
// querying container's [View]. Answer owns the DNS semantics: it answers
// A, AAAA, MX and PTR questions about containers from the View, and
// forwards every other question to the host's upstream resolvers
// ([HostUpstreams] reads them from a resolv.conf file).
//
// The rules are written down in [Resolver.Answer] (RFC 1035 messages, the
// header checks of the miekg/dns server: DefaultMsgAcceptFunc). Programs
// in containers expect the replies they got from Docker's embedded DNS
// server (moby daemon/libnetwork/resolver.go), so for the well-formed
// queries listed there the replies are the same, flags included; front
// ends such as the Docker personality rely on that.
//
// The package does not decide which names a container may see (the
// network area builds the View from its endpoints), does not listen on any
// socket, keeps no cache, and does not cut replies to a UDP client's size:
// only the guest relay knows whether a query came over UDP or TCP, so it
// truncates (see dnsrelay). Replies may therefore be up to 65,535 bytes.
package dns

import (
	"context"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vchproject/vch/internal/portlayer"
)

const (
	// containerTTL is the TTL, in seconds, of the A and PTR records
	// answered for containers (10 min; see the package doc on replies).
	containerTTL = 600
	// maxUpstreams caps how many upstream servers are tried per query:
	// glibc's MAXNS, the nameserver lines resolv.conf(5) honours.
	maxUpstreams = 3
	// upstreamTimeout bounds one upstream server's exchange, UDP and its
	// TCP retry together: 2 s, so two servers fit before a glibc client's
	// 5 s retry (resolv.conf(5) timeout), where 4 s would leave room for one.
	upstreamTimeout = 2 * time.Second
	// maxConcurrentForwards bounds the queries being forwarded at once,
	// across all containers, so a stalled upstream cannot pile up sockets.
	maxConcurrentForwards = 1024
	// busyLogInterval rate-limits the warnings logged per fault kind, so
	// a flood of queries does not flood the daemon's log.
	busyLogInterval = 2 * time.Second
	// headerLen is the size of a DNS message header (RFC 1035 §4.1.1).
	headerLen = 12
)

// View is what one querying container may resolve. The network area
// builds it from the endpoints of the networks that the container is on.
// Answer calls Lookup and Reverse at most once each, from the goroutine
// that called Answer, and never after Answer returns.
type View struct {
	// Lookup returns the IPv4 addresses of a container name, alias or
	// short ID visible to the querier (name lowercased, no trailing dot);
	// ok=false if it is not one. ok=true with no addresses is a name that
	// exists but has no IPv4 address: NOERROR with no answers. Nil means
	// no container names are visible.
	Lookup func(name string) (addrs []netip.Addr, ok bool)
	// Reverse returns the name for a container address (PTR), ok=false if
	// none. The name is returned without a trailing dot ("web.mynet");
	// Answer makes it fully qualified. Nil means no PTR names.
	Reverse func(addr netip.Addr) (name string, ok bool)
	// External allows forwarding other names to the upstream resolvers
	// (false for containers only on internal networks).
	External bool
	// Upstreams are the querier's own resolvers ("IP:PORT"), asked
	// instead of the Resolver's for names it forwards; empty: the
	// Resolver's.
	Upstreams []string
}

// Resolver answers containers' DNS queries. It holds no per-container
// state: the querier's View comes with each query. Safe for concurrent
// use; the zero value is not usable, call NewResolver.
type Resolver struct {
	upstreams []string
	logger    *slog.Logger
	udp       *mdns.Client
	tcp       *mdns.Client
	// slots holds one token per query being forwarded.
	slots chan struct{}
	// slotWait is how long a query waits for a slot before REFUSED.
	slotWait time.Duration
	// lastWarn holds, per warning kind, the last time one was logged
	// (Unix nanoseconds).
	lastWarn [2]atomic.Int64
}

// Warning kinds, for rate-limiting.
const (
	warnBusy = iota
	warnNoUpstream
)

// NewResolver returns a resolver that forwards to upstreams, given as
// "ip:port" strings ("192.0.2.1:53", "[2001:db8::1]:53"), tried in order.
// Only the first three valid ones are used, as glibc's resolver uses at
// most MAXNS (3); invalid entries are skipped with a warning. No upstreams
// means forwarded names get SERVFAIL. A nil logger discards.
func NewResolver(upstreams []string, logger *slog.Logger) *Resolver {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "dns")
	r := &Resolver{
		logger: logger,
		// UDPSize: receive oversized replies to queries without EDNS(0)
		// whole rather than dropping their tail; the guest relay truncates.
		udp:      &mdns.Client{Net: "udp", UDPSize: mdns.MaxMsgSize, Timeout: upstreamTimeout},
		tcp:      &mdns.Client{Net: "tcp", Timeout: upstreamTimeout},
		slots:    make(chan struct{}, maxConcurrentForwards),
		slotWait: upstreamTimeout,
	}
	for _, u := range upstreams {
		if len(r.upstreams) == maxUpstreams {
			logger.Warn("dns: ignoring upstream resolver beyond the first three", "upstream", u)
			continue
		}
		ap, err := netip.ParseAddrPort(u)
		if err != nil || ap.Port() == 0 {
			logger.Warn("dns: ignoring invalid upstream resolver", "upstream", u)
			continue
		}
		r.upstreams = append(r.upstreams, ap.String())
	}
	return r
}

// Answer answers one query in RFC 1035 wire format for a container whose
// view is v, and returns the reply in wire format (at most 65,535 bytes,
// not truncated to any UDP size). Its rules (see the package doc for whose
// replies they match):
//
//   - A for a name v.Lookup knows: its addresses, shuffled, with TTL 600 s
//     and the question's spelling (case preserved).
//   - AAAA or MX for a name v.Lookup knows: NOERROR with no answers
//     (RFC 2308 §2.2 NODATA: the name exists but has no IPv6 address;
//     an empty MX answer is RFC 5321 §5.1's implicit MX).
//   - PTR for an in-addr.arpa or ip6.arpa name of an address v.Reverse
//     knows: that name, fully qualified, TTL 600 s.
//   - Local answers have RA set and AA clear (a recursive server that is
//     no zone's authority, RFC 1035 §4.1.1), RD and CD copied from the
//     query, and no EDNS(0) OPT record.
//   - Everything else (other names, single-label names included, since vch
//     sets no ndots; other types, container names included) is forwarded
//     with v.External: to each upstream in turn over UDP, retried over TCP
//     if the reply is truncated, within 2 s per server. The first reply
//     whose RCODE is neither SERVFAIL nor REFUSED is returned, records
//     and flags as the upstream sent them, re-encoded with the query's ID
//     (the upstream sees a fresh random ID).
//   - SERVFAIL when no upstream gave such a reply, when v.External is
//     false or when there are no upstreams: whenever forwarding yields
//     nothing, the client gets an answer, not a timeout. Its flags are
//     those of miekg's SetRcode (no RA).
//   - REFUSED when 1,024 queries are already being forwarded and none
//     finishes within 2 s: the server declines rather than queue.
//
// Messages that miekg's DefaultMsgAcceptFunc rejects get the reply a
// miekg/dns server sends: NOTIMP for opcodes other than QUERY and NOTIFY;
// FORMERR, without a question, for a QDCOUNT other than 1 or too many
// records in the other sections.
//
// Errors: InvalidArgument for bytes that are no query (shorter than a
// header, QR set, a body that does not parse, no question); the caller
// drops those and sends nothing, as a miekg/dns server does for the first
// two (it sends FORMERR for the third). ctx's error, wrapped, if ctx ends
// while forwarding. Answer never panics on any input. Safe for concurrent
// use.
func (r *Resolver) Answer(ctx context.Context, query []byte, v View) ([]byte, error) {
	if len(query) < headerLen {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "query of %d bytes is shorter than a header", len(query))
	}
	h := mdns.Header{
		Id:      binary.BigEndian.Uint16(query[0:]),
		Bits:    binary.BigEndian.Uint16(query[2:]),
		Qdcount: binary.BigEndian.Uint16(query[4:]),
		Ancount: binary.BigEndian.Uint16(query[6:]),
		Nscount: binary.BigEndian.Uint16(query[8:]),
		Arcount: binary.BigEndian.Uint16(query[10:]),
	}
	switch mdns.DefaultMsgAcceptFunc(h) {
	case mdns.MsgIgnore:
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "message %d is a response, not a query", h.Id)
	case mdns.MsgReject:
		return r.pack(rejectReply(h, mdns.RcodeFormatError))
	case mdns.MsgRejectNotImplemented:
		return r.pack(rejectReply(h, mdns.RcodeNotImplemented))
	}
	q := new(mdns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "unpack query %d: %w", h.Id, err)
	}
	if len(q.Question) == 0 {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "query %d has no question", h.Id)
	}
	if resp := local(q, v); resp != nil {
		return r.pack(resp)
	}
	return r.forward(ctx, q, v)
}

// rejectReply is the reply miekg's server sends to a message that its
// DefaultMsgAcceptFunc rejects: the header's ID and opcode, RD and CD for
// a QUERY, the rcode, and no sections.
func rejectReply(h mdns.Header, rcode int) *mdns.Msg {
	req := new(mdns.Msg)
	req.Id = h.Id
	req.Opcode = int(h.Bits>>11) & 0xF
	req.RecursionDesired = h.Bits&(1<<8) != 0
	req.CheckingDisabled = h.Bits&(1<<4) != 0
	return new(mdns.Msg).SetRcode(req, rcode)
}

// pack encodes a reply that this package built. Those always encode,
// unless a View returned a name that is not a valid domain name; that
// reply becomes SERVFAIL (the server failed, not the query: RFC 1035
// §4.1.1), so the client gets an answer rather than a timeout.
func (r *Resolver) pack(m *mdns.Msg) ([]byte, error) {
	m.Compress = true
	b, err := m.Pack()
	if err == nil {
		return b, nil
	}
	r.logger.Warn("dns: cannot encode reply, answering SERVFAIL", "id", m.Id, "error", err)
	fail := new(mdns.Msg)
	fail.Id, fail.Response, fail.Opcode, fail.Rcode = m.Id, true, m.Opcode, mdns.RcodeServerFailure
	fail.RecursionDesired, fail.CheckingDisabled = m.RecursionDesired, m.CheckingDisabled
	b, err = fail.Pack()
	if err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInternal, "pack SERVFAIL for %d: %w", m.Id, err)
	}
	return b, nil
}

// localReply starts a reply to a question answered from the View, with
// the flags of every local answer (RA set, AA clear; see Answer).
func localReply(q *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg).SetReply(q)
	resp.RecursionAvailable = true
	return resp
}

// local answers q from v, or returns nil if q is not about a container
// and must be forwarded.
func local(q *mdns.Msg, v View) *mdns.Msg {
	question := q.Question[0]
	name := strings.ToLower(strings.TrimSuffix(question.Name, "."))
	lookup := func() ([]netip.Addr, bool) {
		if v.Lookup == nil || name == "" {
			return nil, false
		}
		return v.Lookup(name)
	}
	switch question.Qtype {
	case mdns.TypeA:
		addrs, ok := lookup()
		if !ok {
			return nil
		}
		resp := localReply(q)
		addrs = append([]netip.Addr(nil), addrs...)
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		for _, a := range addrs {
			a = a.Unmap()
			if !a.Is4() {
				continue
			}
			resp.Answer = append(resp.Answer, &mdns.A{
				Hdr: mdns.RR_Header{Name: question.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: containerTTL},
				A:   a.AsSlice(),
			})
		}
		return resp
	case mdns.TypeAAAA, mdns.TypeMX:
		if _, ok := lookup(); !ok {
			return nil
		}
		return localReply(q)
	case mdns.TypePTR:
		addr, ok := parsePTR(name)
		if !ok || v.Reverse == nil {
			return nil
		}
		host, ok := v.Reverse(addr)
		host = strings.TrimSuffix(host, ".")
		if !ok || host == "" {
			return nil
		}
		resp := localReply(q)
		resp.Answer = append(resp.Answer, &mdns.PTR{
			Hdr: mdns.RR_Header{Name: question.Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: containerTTL},
			Ptr: mdns.Fqdn(host),
		})
		return resp
	}
	return nil
}

// parsePTR returns the address that a reverse name (lowercase, no
// trailing dot) stands for: "4.3.2.1.in-addr.arpa" (RFC 1035 §3.5) or 32
// nibble labels under ip6.arpa (RFC 3596 §2.5). ok=false for any other
// name, partial ones included.
func parsePTR(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			if len(l) == 0 || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			n := 0
			for _, c := range l {
				if c < '0' || c > '9' {
					return netip.Addr{}, false
				}
				n = n*10 + int(c-'0')
			}
			if n > 255 {
				return netip.Addr{}, false
			}
			b[3-i] = byte(n)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			var n byte
			switch c := l[0]; {
			case c >= '0' && c <= '9':
				n = c - '0'
			case c >= 'a' && c <= 'f':
				n = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// Label i is nibble 31-i of the address, lowest first.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= n << 4
			} else {
				b[pos/2] |= n
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// warnSometimes logs a warning of the given kind at most once per
// busyLogInterval.
func (r *Resolver) warnSometimes(kind int, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.lastWarn[kind].Load()
	if now-last < int64(busyLogInterval) || !r.lastWarn[kind].CompareAndSwap(last, now) {
		return
	}
	r.logger.Warn(msg, args...)
}
