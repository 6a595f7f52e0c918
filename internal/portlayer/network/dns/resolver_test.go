package dns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	mdns "github.com/miekg/dns"
)

// fakeUpstream is a DNS server on 127.0.0.1 (UDP and TCP on one port)
// that records what it was asked and answers by name:
//   - example.com: A 192.0.2.1 (NOERROR).
//   - big.example: over UDP an empty reply with TC set; over TCP 40 A
//     records (more than 512 bytes).
//   - fail.example: SERVFAIL.
//   - anything else: NXDOMAIN.
type fakeUpstream struct {
	addr string

	mu    sync.Mutex
	asked []asked
}

// asked is one query the fake received.
type asked struct {
	proto string
	name  string
	qtype uint16
	id    uint16
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	// TCP must share the UDP socket's port; retry if it is taken for TCP.
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(f.serve)
	udp := &mdns.Server{PacketConn: pc, Handler: h}
	tcp := &mdns.Server{Listener: ln, Handler: h}
	var wg sync.WaitGroup
	for _, s := range []*mdns.Server{udp, tcp} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { _ = s.ActivateAndServe() })
		<-started
	}
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		wg.Wait()
	})
	return f
}

func (f *fakeUpstream) serve(w mdns.ResponseWriter, q *mdns.Msg) {
	question := q.Question[0]
	proto := w.LocalAddr().Network()
	f.mu.Lock()
	f.asked = append(f.asked, asked{proto: proto, name: question.Name, qtype: question.Qtype, id: q.Id})
	f.mu.Unlock()

	resp := new(mdns.Msg).SetReply(q)
	resp.RecursionAvailable = true
	a := func(ip string) mdns.RR {
		return &mdns.A{Hdr: mdns.RR_Header{Name: question.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30}, A: net.ParseIP(ip)}
	}
	switch strings.ToLower(question.Name) {
	case "example.com.":
		resp.Answer = append(resp.Answer, a("192.0.2.1"))
	case "big.example.":
		if proto == "udp" {
			resp.Truncated = true
			break
		}
		for i := range 40 {
			resp.Answer = append(resp.Answer, a(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String()))
		}
	case "fail.example.":
		resp.Rcode = mdns.RcodeServerFailure
	default:
		resp.Rcode = mdns.RcodeNameError
	}
	_ = w.WriteMsg(resp)
}

// queries returns what the fake was asked so far.
func (f *fakeUpstream) queries() []asked {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// deadUpstream returns a 127.0.0.1 UDP address nobody listens on: queries
// to it fail at once with "connection refused".
func deadUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// testView knows containers web (two addresses, alias "www") and db, and
// the reverse names of their addresses.
func testView(external bool) View {
	names := map[string][]netip.Addr{
		"web": {netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("172.18.0.3")},
		"www": {netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("172.18.0.3")},
		"db":  {netip.MustParseAddr("172.18.0.4")},
		// A name with no IPv4 address.
		"v6only": nil,
	}
	rev := map[netip.Addr]string{
		netip.MustParseAddr("172.18.0.2"): "web.mynet",
		netip.MustParseAddr("172.18.0.4"): "db.mynet.",
	}
	return View{
		Lookup: func(name string) ([]netip.Addr, bool) {
			a, ok := names[name]
			return a, ok
		},
		Reverse: func(addr netip.Addr) (string, bool) {
			n, ok := rev[addr]
			return n, ok
		},
		External: external,
	}
}

// query packs a query for name and type with RD set.
func query(t *testing.T, name string, qtype uint16) []byte {
	t.Helper()
	m := new(mdns.Msg).SetQuestion(name, qtype)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unpack parses a reply and checks it answers q.
func unpack(t *testing.T, q, reply []byte) *mdns.Msg {
	t.Helper()
	var qm, m mdns.Msg
	if err := qm.Unpack(q); err != nil {
		t.Fatal(err)
	}
	if err := m.Unpack(reply); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	if m.Id != qm.Id || !m.Response {
		t.Fatalf("reply id %d response %v, want id %d response", m.Id, m.Response, qm.Id)
	}
	return &m
}

// answerAddrs returns the A records' addresses, sorted.
func answerAddrs(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestAnswerLocal(t *testing.T) {
	r := NewResolver(nil, nil)
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		addrs   []string
		ptr     string
		nAnswer int
	}{
		{name: "A for container", qname: "db.", qtype: mdns.TypeA, addrs: []string{"172.18.0.4"}, nAnswer: 1},
		{name: "A for alias with two addresses", qname: "www.", qtype: mdns.TypeA, addrs: []string{"172.18.0.2", "172.18.0.3"}, nAnswer: 2},
		{name: "A is case-insensitive", qname: "WeB.", qtype: mdns.TypeA, addrs: []string{"172.18.0.2", "172.18.0.3"}, nAnswer: 2},
		{name: "A for name without IPv4", qname: "v6only.", qtype: mdns.TypeA},
		{name: "AAAA for container is empty", qname: "web.", qtype: mdns.TypeAAAA},
		{name: "AAAA is case-insensitive", qname: "DB.", qtype: mdns.TypeAAAA},
		{name: "MX for container is empty", qname: "db.", qtype: mdns.TypeMX},
		{name: "PTR for container address", qname: "2.0.18.172.in-addr.arpa.", qtype: mdns.TypePTR, ptr: "web.mynet.", nAnswer: 1},
		{name: "PTR name already qualified", qname: "4.0.18.172.in-addr.arpa.", qtype: mdns.TypePTR, ptr: "db.mynet.", nAnswer: 1},
		{name: "PTR is case-insensitive", qname: "2.0.18.172.IN-ADDR.ARPA.", qtype: mdns.TypePTR, ptr: "web.mynet.", nAnswer: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := query(t, tt.qname, tt.qtype)
			reply, err := r.Answer(t.Context(), q, testView(false))
			if err != nil {
				t.Fatal(err)
			}
			m := unpack(t, q, reply)
			if m.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", mdns.RcodeToString[m.Rcode], mdns.RcodeToString[tt.rcode])
			}
			// Docker's createRespMsg: RA set, AA clear; RD copied.
			if !m.RecursionAvailable || m.Authoritative || !m.RecursionDesired {
				t.Errorf("flags RA=%v AA=%v RD=%v, want RA, not AA, RD", m.RecursionAvailable, m.Authoritative, m.RecursionDesired)
			}
			if len(m.Answer) != tt.nAnswer {
				t.Fatalf("answers %v, want %d", m.Answer, tt.nAnswer)
			}
			if got := answerAddrs(m); !slices.Equal(got, tt.addrs) {
				t.Errorf("addresses %v, want %v", got, tt.addrs)
			}
			for _, rr := range m.Answer {
				h := rr.Header()
				if h.Name != tt.qname || h.Ttl != 600 || h.Class != mdns.ClassINET {
					t.Errorf("record header %v, want name %q (as asked), TTL 600, class IN", h, tt.qname)
				}
				if p, ok := rr.(*mdns.PTR); ok && p.Ptr != tt.ptr {
					t.Errorf("PTR %q, want %q", p.Ptr, tt.ptr)
				}
			}
		})
	}
}

func TestAnswerForward(t *testing.T) {
	up := newFakeUpstream(t)
	tests := []struct {
		name      string
		upstreams func(t *testing.T) []string
		qname     string
		qtype     uint16
		external  bool
		rcode     int
		addrs     []string
		nAnswer   int
		asked     []string // "proto name" in order
	}{
		{
			name: "external name", qname: "example.com.", qtype: mdns.TypeA, external: true,
			addrs: []string{"192.0.2.1"}, nAnswer: 1, asked: []string{"udp example.com."},
		},
		{
			name: "single-label name that is no container", qname: "nosuch.", qtype: mdns.TypeA, external: true,
			rcode: mdns.RcodeNameError, asked: []string{"udp nosuch."},
		},
		{
			name: "PTR for unknown address", qname: "9.0.18.172.in-addr.arpa.", qtype: mdns.TypePTR, external: true,
			rcode: mdns.RcodeNameError, asked: []string{"udp 9.0.18.172.in-addr.arpa."},
		},
		{
			name: "other type for a container name", qname: "web.", qtype: mdns.TypeTXT, external: true,
			rcode: mdns.RcodeNameError, asked: []string{"udp web."},
		},
		{
			name: "truncated over UDP is retried over TCP", qname: "big.example.", qtype: mdns.TypeA, external: true,
			nAnswer: 40, asked: []string{"udp big.example.", "tcp big.example."},
		},
		{
			name: "internal only: SERVFAIL, nothing forwarded", qname: "example.com.", qtype: mdns.TypeA,
			rcode: mdns.RcodeServerFailure,
		},
		{
			name: "no upstreams: SERVFAIL", upstreams: func(*testing.T) []string { return nil },
			qname: "example.com.", qtype: mdns.TypeA, external: true, rcode: mdns.RcodeServerFailure,
		},
		{
			name:      "first upstream down, second answers",
			upstreams: func(t *testing.T) []string { return []string{deadUpstream(t), up.addr} },
			qname:     "example.com.", qtype: mdns.TypeA, external: true,
			addrs: []string{"192.0.2.1"}, nAnswer: 1, asked: []string{"udp example.com."},
		},
		{
			name:      "all upstreams down: SERVFAIL",
			upstreams: func(t *testing.T) []string { return []string{deadUpstream(t), deadUpstream(t)} },
			qname:     "example.com.", qtype: mdns.TypeA, external: true, rcode: mdns.RcodeServerFailure,
		},
		{
			name:      "SERVFAIL from every upstream: next tried, then SERVFAIL",
			upstreams: func(t *testing.T) []string { return []string{up.addr, up.addr} },
			qname:     "fail.example.", qtype: mdns.TypeA, external: true, rcode: mdns.RcodeServerFailure,
			asked: []string{"udp fail.example.", "udp fail.example."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upstreams := []string{up.addr}
			if tt.upstreams != nil {
				upstreams = tt.upstreams(t)
			}
			before := len(up.queries())
			r := NewResolver(upstreams, nil)
			q := query(t, tt.qname, tt.qtype)
			reply, err := r.Answer(t.Context(), q, testView(tt.external))
			if err != nil {
				t.Fatal(err)
			}
			m := unpack(t, q, reply)
			if m.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", mdns.RcodeToString[m.Rcode], mdns.RcodeToString[tt.rcode])
			}
			if len(m.Answer) != tt.nAnswer {
				t.Errorf("%d answers, want %d", len(m.Answer), tt.nAnswer)
			}
			if tt.addrs != nil {
				if got := answerAddrs(m); !slices.Equal(got, tt.addrs) {
					t.Errorf("addresses %v, want %v", got, tt.addrs)
				}
			}
			var got []string
			var qm mdns.Msg
			_ = qm.Unpack(q)
			for _, a := range up.queries()[before:] {
				got = append(got, a.proto+" "+a.name)
				if a.id == qm.Id {
					t.Errorf("upstream saw the client's ID %d; want a fresh one", a.id)
				}
			}
			if !slices.Equal(got, tt.asked) {
				t.Errorf("upstream asked %q, want %q", got, tt.asked)
			}
		})
	}
}

// TestAnswerOwnUpstreams: a View's Upstreams replace the Resolver's for
// that querier (a container's own DNS servers); without them the
// Resolver's are asked.
func TestAnswerOwnUpstreams(t *testing.T) {
	shared, own := newFakeUpstream(t), newFakeUpstream(t)
	r := NewResolver([]string{shared.addr}, nil)
	ask := func(v View) {
		t.Helper()
		q := query(t, "example.com.", mdns.TypeA)
		reply, err := r.Answer(t.Context(), q, v)
		if err != nil {
			t.Fatal(err)
		}
		if m := unpack(t, q, reply); m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("reply %v", m)
		}
	}
	v := testView(true)
	v.Upstreams = []string{deadUpstream(t), own.addr}
	ask(v)
	if n, m := len(shared.queries()), len(own.queries()); n != 0 || m != 1 {
		t.Errorf("with its own upstreams: the Resolver's asked %d times, the querier's %d; want 0 and 1", n, m)
	}
	ask(testView(true))
	if n, m := len(shared.queries()), len(own.queries()); n != 1 || m != 1 {
		t.Errorf("without: the Resolver's asked %d times, the querier's %d; want 1 and 1", n, m)
	}
	// Internal only: nothing forwarded, own upstreams or not.
	v.External = false
	q := query(t, "example.com.", mdns.TypeA)
	reply, err := r.Answer(t.Context(), q, v)
	if err != nil {
		t.Fatal(err)
	}
	if m := unpack(t, q, reply); m.Rcode != mdns.RcodeServerFailure || len(own.queries()) != 1 {
		t.Errorf("internal-only with own upstreams: rcode %s, own asked %d times", mdns.RcodeToString[m.Rcode], len(own.queries()))
	}
}

func TestAnswerServfailFlags(t *testing.T) {
	// Docker replies new(dns.Msg).SetRcode(query, RcodeServerFailure):
	// the question echoed, RD copied, RA and AA clear.
	r := NewResolver(nil, nil)
	q := query(t, "example.com.", mdns.TypeA)
	reply, err := r.Answer(t.Context(), q, testView(false))
	if err != nil {
		t.Fatal(err)
	}
	m := unpack(t, q, reply)
	if m.Rcode != mdns.RcodeServerFailure || m.RecursionAvailable || m.Authoritative || !m.RecursionDesired {
		t.Errorf("reply %v, want SERVFAIL with RD only", m)
	}
	if len(m.Question) != 1 || m.Question[0].Name != "example.com." {
		t.Errorf("question %v, want example.com.", m.Question)
	}
}

func TestAnswerRefusedWhenBusy(t *testing.T) {
	up := newFakeUpstream(t)
	r := NewResolver([]string{up.addr}, nil)
	// Every forwarding slot is taken and none frees up in time.
	r.slots = make(chan struct{}, 1)
	r.slots <- struct{}{}
	r.slotWait = 10 * time.Millisecond
	q := query(t, "example.com.", mdns.TypeA)
	reply, err := r.Answer(t.Context(), q, testView(true))
	if err != nil {
		t.Fatal(err)
	}
	if m := unpack(t, q, reply); m.Rcode != mdns.RcodeRefused {
		t.Errorf("rcode %s, want REFUSED", mdns.RcodeToString[m.Rcode])
	}
	if n := len(up.queries()); n != 0 {
		t.Errorf("upstream asked %d times, want 0", n)
	}
}

func TestAnswerContextEnded(t *testing.T) {
	up := newFakeUpstream(t)
	r := NewResolver([]string{up.addr}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := r.Answer(ctx, query(t, "example.com.", mdns.TypeA), testView(true))
	if !errdefs.IsCanceled(err) {
		t.Errorf("error %v, want canceled", err)
	}
	// Local names need no upstream, so they are answered regardless.
	if _, err := r.Answer(ctx, query(t, "web.", mdns.TypeA), testView(true)); err != nil {
		t.Errorf("local answer with ended ctx: %v", err)
	}
}

func TestAnswerMalformed(t *testing.T) {
	r := NewResolver(nil, nil)
	valid := query(t, "web.", mdns.TypeA)
	with := func(f func(b []byte)) []byte {
		b := slices.Clone(valid)
		f(b)
		return b
	}
	tests := []struct {
		name  string
		query []byte
		rcode int // -1: an InvalidArgument error is wanted
	}{
		{name: "empty", query: nil, rcode: -1},
		{name: "short header", query: valid[:11], rcode: -1},
		{name: "response bit set", query: with(func(b []byte) { b[2] |= 0x80 }), rcode: -1},
		{name: "name cut short", query: valid[:14], rcode: -1},
		{name: "header only, QDCOUNT 1", query: valid[:12], rcode: -1},
		{name: "label past the end", query: with(func(b []byte) { b[12] = 60 }), rcode: -1},
		{name: "two questions: FORMERR", query: with(func(b []byte) { b[5] = 2 }), rcode: mdns.RcodeFormatError},
		{name: "no question: FORMERR", query: with(func(b []byte) { b[5] = 0 }), rcode: mdns.RcodeFormatError},
		{name: "three additional records: FORMERR", query: with(func(b []byte) { b[11] = 3 }), rcode: mdns.RcodeFormatError},
		{name: "opcode UPDATE: NOTIMP", query: with(func(b []byte) { b[2] = b[2]&^0x78 | 5<<3 }), rcode: mdns.RcodeNotImplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply, err := r.Answer(t.Context(), tt.query, testView(true))
			if tt.rcode < 0 {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("reply %x, error %v; want InvalidArgument", reply, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var m mdns.Msg
			if err := m.Unpack(reply); err != nil {
				t.Fatal(err)
			}
			if m.Rcode != tt.rcode || m.Id != binaryID(tt.query) || !m.Response || len(m.Question) != 0 || len(m.Answer) != 0 {
				t.Errorf("reply %v, want %s with no sections", &m, mdns.RcodeToString[tt.rcode])
			}
		})
	}
}

func binaryID(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

func TestParsePTR(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" for not ok
	}{
		{name: "IPv4", in: "4.3.2.1.in-addr.arpa", want: "1.2.3.4"},
		{name: "IPv4 zeros", in: "0.0.0.0.in-addr.arpa", want: "0.0.0.0"},
		{name: "IPv4 partial", in: "3.2.1.in-addr.arpa"},
		{name: "IPv4 too many labels", in: "5.4.3.2.1.in-addr.arpa"},
		{name: "IPv4 octet too big", in: "256.3.2.1.in-addr.arpa"},
		{name: "IPv4 leading zero", in: "04.3.2.1.in-addr.arpa"},
		{name: "IPv4 empty label", in: "4..2.1.in-addr.arpa"},
		{name: "IPv4 not a number", in: "a.3.2.1.in-addr.arpa"},
		{name: "zone apex", in: "in-addr.arpa"},
		{
			name: "IPv6",
			in:   "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa",
			want: "4321:0:1:2:3:4:567:89ab",
		},
		{name: "IPv6 short", in: "b.a.9.8.ip6.arpa"},
		{name: "IPv6 bad nibble", in: "g.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa"},
		{name: "other name", in: "example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parsePTR(tt.in)
			if tt.want == "" {
				if ok {
					t.Errorf("parsePTR(%q) = %v, want not ok", tt.in, got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Errorf("parsePTR(%q) = %v, %v; want %s", tt.in, got, ok, tt.want)
			}
		})
	}
}

func TestNewResolverUpstreams(t *testing.T) {
	r := NewResolver([]string{"192.0.2.1:53", "bogus", "192.0.2.2", "[2001:db8::1]:53", "192.0.2.3:53", "192.0.2.4:53"}, nil)
	want := []string{"192.0.2.1:53", "[2001:db8::1]:53", "192.0.2.3:53"}
	if !slices.Equal(r.upstreams, want) {
		t.Errorf("upstreams %q, want %q", r.upstreams, want)
	}
}

// BenchmarkAnswerLocal measures one local A answer.
func BenchmarkAnswerLocal(b *testing.B) {
	r := NewResolver(nil, nil)
	m := new(mdns.Msg).SetQuestion("web.", mdns.TypeA)
	q, _ := m.Pack()
	v := testView(false)
	for b.Loop() {
		if _, err := r.Answer(b.Context(), q, v); err != nil {
			b.Fatal(err)
		}
	}
}
