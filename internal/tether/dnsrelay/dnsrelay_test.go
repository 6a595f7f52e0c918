package dnsrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildQuery returns a query for name (no trailing dot) and qtype, with an
// EDNS(0) OPT record advertising ednsSize when it is non-zero.
func buildQuery(id uint16, name string, qtype uint16, ednsSize uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, 0x01, 0x00) // RD
	b = binary.BigEndian.AppendUint16(b, 1)
	b = append(b, 0, 0, 0, 0)
	if ednsSize != 0 {
		b = binary.BigEndian.AppendUint16(b, 1)
	} else {
		b = append(b, 0, 0)
	}
	for _, l := range strings.Split(name, ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, qtype)
	b = binary.BigEndian.AppendUint16(b, 1) // IN
	if ednsSize != 0 {
		b = append(b, 0) // root name
		b = binary.BigEndian.AppendUint16(b, typeOPT)
		b = binary.BigEndian.AppendUint16(b, ednsSize)
		b = append(b, 0, 0, 0, 0, 0, 0) // TTL, RDLEN
	}
	return b
}

// buildReply answers query with n A records (16 bytes each), dropping the
// query's additional section.
func buildReply(query []byte, n int) []byte {
	end, ok := skipQuestions(query)
	if !ok {
		panic("bad test query")
	}
	b := append([]byte(nil), query[:end]...)
	b[2] |= 0x80 // QR
	b[3] = 0x80  // RA
	binary.BigEndian.PutUint16(b[6:], uint16(n))
	binary.BigEndian.PutUint16(b[10:], 0)
	for i := range n {
		b = append(b, 0xC0, 12) // pointer to the question's name
		b = binary.BigEndian.AppendUint16(b, 1)
		b = binary.BigEndian.AppendUint16(b, 1)
		b = append(b, 0, 0, 0, 60, 0, 4, 192, 0, 2, byte(i))
	}
	return b
}

// fakeForward answers each query with buildReply(query, records(query))
// and records what it was asked; it fails on demand and can be held.
type fakeForward struct {
	mu       sync.Mutex
	queries  [][]byte
	inFlight int
	maxIn    int
	records  int
	fail     bool
	hold     chan struct{} // if non-nil, calls wait for it to close or ctx
	entered  chan struct{} // if non-nil, gets a value per call
	ctxErr   []error       // ctx.Err() of held calls on return
	deadline []time.Time
}

func (f *fakeForward) forward(ctx context.Context, query []byte) ([]byte, error) {
	f.mu.Lock()
	f.queries = append(f.queries, bytes.Clone(query))
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	d, _ := ctx.Deadline()
	f.deadline = append(f.deadline, d)
	hold, entered, fail, n := f.hold, f.entered, f.fail, f.records
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if entered != nil {
		entered <- struct{}{}
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			f.mu.Lock()
			f.ctxErr = append(f.ctxErr, ctx.Err())
			f.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	if fail {
		return nil, errors.New("channel down")
	}
	return buildReply(query, n), nil
}

func (f *fakeForward) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queries)
}

// relay is a running serve on 127.0.0.1 with random ports.
type relay struct {
	udp, tcp string
	cancel   context.CancelFunc
	done     chan error
	once     sync.Once
}

func startRelay(t *testing.T, f *fakeForward) *relay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &relay{udp: pc.LocalAddr().String(), tcp: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- serve(ctx, pc, ln, f.forward) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the relay and waits for serve to return (nil wanted).
// Idempotent.
func (r *relay) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("serve returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("serve did not return after cancel")
		}
	})
}

// udpExchange sends query and returns the reply, or nil if none arrives
// within wait.
func udpExchange(t *testing.T, addr string, query []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(query); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, maxMsgSize)
	n, err := c.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		t.Fatal(err)
	}
	return buf[:n]
}

func TestUDP(t *testing.T) {
	tests := []struct {
		name      string
		edns      uint16
		records   int
		truncated bool
	}{
		{name: "small reply", records: 2},
		{name: "512 bytes fit without EDNS", records: (512 - 21) / 16},
		{name: "over 512 without EDNS: truncated", records: 40, truncated: true},
		{name: "EDNS 4096 takes 1,000 bytes", edns: 4096, records: 60},
		{name: "over the EDNS size: truncated", edns: 1232, records: 100, truncated: true},
		{name: "EDNS below 512 counts as 512", edns: 256, records: 20},
		{name: "EDNS below 512, over 512: truncated", edns: 256, records: 40, truncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeForward{records: tt.records}
			r := startRelay(t, f)
			q := buildQuery(0x1234, "web", 1, tt.edns)
			reply := udpExchange(t, r.udp, q, 5*time.Second)
			full := buildReply(q, tt.records)
			if f.calls() != 1 || !bytes.Equal(f.queries[0], q) {
				t.Fatalf("forward got %x, want %x once", f.queries, q)
			}
			if !tt.truncated {
				if !bytes.Equal(reply, full) {
					t.Fatalf("reply of %d bytes differs from the forwarded %d", len(reply), len(full))
				}
				return
			}
			qend, _ := skipQuestions(q)
			want := append([]byte(nil), full[:qend]...)
			want[2] |= 0x02
			binary.BigEndian.PutUint16(want[6:], 0)
			if !bytes.Equal(reply, want) {
				t.Errorf("reply %x, want header and question with TC %x", reply, want)
			}
		})
	}
}

func TestUDPForwardErrorNoReply(t *testing.T) {
	f := &fakeForward{fail: true}
	r := startRelay(t, f)
	if reply := udpExchange(t, r.udp, buildQuery(1, "web", 1, 0), 300*time.Millisecond); reply != nil {
		t.Fatalf("reply %x to a failed forward, want none", reply)
	}
	// The relay keeps serving.
	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	if reply := udpExchange(t, r.udp, buildQuery(2, "web", 1, 0), 5*time.Second); reply == nil {
		t.Fatal("no reply after a failed forward")
	}
}

func TestUDPDropsNonQueries(t *testing.T) {
	f := &fakeForward{}
	r := startRelay(t, f)
	response := buildQuery(1, "web", 1, 0)
	response[2] |= 0x80
	for _, msg := range [][]byte{response, make([]byte, 11), {}} {
		if reply := udpExchange(t, r.udp, msg, 200*time.Millisecond); reply != nil {
			t.Errorf("reply %x to %x, want none", reply, msg)
		}
	}
	if n := f.calls(); n != 0 {
		t.Errorf("forward called %d times, want 0", n)
	}
}

func TestUDPBoundedInFlight(t *testing.T) {
	const sent = MaxUDPInFlight + 36
	f := &fakeForward{hold: make(chan struct{}), entered: make(chan struct{}, sent)}
	r := startRelay(t, f)
	c, err := net.Dial("udp", r.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range sent {
		if _, err := c.Write(buildQuery(uint16(i), "web", 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for range MaxUDPInFlight {
		select {
		case <-f.entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d forwards started", f.calls())
		}
	}
	// No further call may start while all slots are held.
	select {
	case <-f.entered:
		t.Fatalf("forward call %d started with %d in flight", f.calls(), MaxUDPInFlight)
	case <-time.After(200 * time.Millisecond):
	}
	close(f.hold)
	got := map[uint16]bool{}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, maxMsgSize)
	for len(got) < sent {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d replies: %v", len(got), err)
		}
		got[binary.BigEndian.Uint16(buf[:n])] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxIn != MaxUDPInFlight {
		t.Errorf("at most %d forwards in flight, want %d", f.maxIn, MaxUDPInFlight)
	}
}

// tcpWrite sends msgs, each with its length prefix, in one write.
func tcpWrite(t *testing.T, c net.Conn, msgs ...[]byte) {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// tcpRead reads one length-prefixed message.
func tcpRead(c net.Conn) ([]byte, error) {
	var p [2]byte
	if _, err := io.ReadFull(c, p[:]); err != nil {
		return nil, err
	}
	m := make([]byte, binary.BigEndian.Uint16(p[:]))
	_, err := io.ReadFull(c, m)
	return m, err
}

func TestTCPSeveralQueries(t *testing.T) {
	// 300 records: 4,800 bytes, sent whole over TCP.
	f := &fakeForward{records: 300}
	r := startRelay(t, f)
	c, err := net.Dial("tcp", r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	qs := [][]byte{buildQuery(1, "web", 1, 0), buildQuery(2, "db", 1, 0), buildQuery(3, "example.com", 28, 0)}
	tcpWrite(t, c, qs...)
	for i, q := range qs {
		reply, err := tcpRead(c)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if want := buildReply(q, 300); !bytes.Equal(reply, want) {
			t.Fatalf("reply %d: %d bytes, want the forwarded %d", i, len(reply), len(want))
		}
	}
	// And another one later on the same connection.
	q := buildQuery(4, "web", 1, 0)
	tcpWrite(t, c, q)
	if reply, err := tcpRead(c); err != nil || !bytes.Equal(reply, buildReply(q, 300)) {
		t.Fatalf("fourth reply %d bytes, %v", len(reply), err)
	}
}

func TestTCPClosesConnection(t *testing.T) {
	response := buildQuery(1, "web", 1, 0)
	response[2] |= 0x80
	tests := []struct {
		name  string
		fail  bool
		query []byte
	}{
		{name: "forward error", fail: true, query: buildQuery(1, "web", 1, 0)},
		{name: "a response, not a query", query: response},
		{name: "shorter than a header", query: make([]byte, 5)},
		{name: "zero length", query: []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeForward{fail: tt.fail}
			r := startRelay(t, f)
			c, err := net.Dial("tcp", r.tcp)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			tcpWrite(t, c, tt.query)
			if reply, err := tcpRead(c); !errors.Is(err, io.EOF) {
				t.Fatalf("read %x, %v; want EOF", reply, err)
			}
		})
	}
}

func TestQueryTimeout(t *testing.T) {
	f := &fakeForward{records: 1}
	r := startRelay(t, f)
	before := time.Now()
	if udpExchange(t, r.udp, buildQuery(1, "web", 1, 0), 5*time.Second) == nil {
		t.Fatal("no reply")
	}
	c, err := net.Dial("tcp", r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tcpWrite(t, c, buildQuery(2, "web", 1, 0))
	if _, err := tcpRead(c); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, d := range f.deadline {
		if d.IsZero() || d.Before(before.Add(QueryTimeout)) || d.After(time.Now().Add(QueryTimeout)) {
			t.Errorf("call %d: deadline %v, want %v after the query", i, d, QueryTimeout)
		}
	}
}

func TestShutdownEndsInFlight(t *testing.T) {
	f := &fakeForward{hold: make(chan struct{}), entered: make(chan struct{}, 2)}
	r := startRelay(t, f)
	u, err := net.Dial("udp", r.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write(buildQuery(1, "web", 1, 0)); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tcpWrite(t, c, buildQuery(2, "web", 1, 0))
	for range 2 {
		select {
		case <-f.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("forward not called")
		}
	}
	r.stop(t) // serve has returned: every forward call has too
	f.mu.Lock()
	if len(f.ctxErr) != 2 || !errors.Is(f.ctxErr[0], context.Canceled) || !errors.Is(f.ctxErr[1], context.Canceled) {
		t.Errorf("held calls ended with %v, want 2 × canceled", f.ctxErr)
	}
	f.mu.Unlock()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := tcpRead(c); err == nil {
		t.Error("TCP connection still open after shutdown")
	}
}

func TestServe(t *testing.T) {
	// Serve on 127.0.0.1 port 0: one random port for both transports,
	// found from the connections it accepts.
	f := &fakeForward{records: 1}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	// Reserve a port, free it, and serve on it; retry if it was taken
	// meanwhile (for UDP or TCP).
	var addr string
	q := buildQuery(7, "web", 1, 0)
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		pc.Close()
		go func() { done <- Serve(ctx, addr, f.forward) }()
		if answered(t, addr, q, done) {
			break
		}
		addr = ""
	}
	if addr == "" {
		t.Fatal("no free port found")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	q = buildQuery(8, "web", 1, 0)
	tcpWrite(t, c, q)
	if reply, err := tcpRead(c); err != nil || !bytes.Equal(reply, buildReply(q, 1)) {
		t.Fatalf("TCP reply %x, %v", reply, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// answered sends q over UDP to addr until a reply comes back (true) or
// the Serve call behind it ends (false).
func answered(t *testing.T, addr string, q []byte, done <-chan error) bool {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, maxMsgSize)
	for range 100 {
		select {
		case err := <-done:
			t.Logf("Serve(%s): %v; retrying", addr, err)
			return false
		default:
		}
		// A write or read may fail with "connection refused" until
		// Serve listens.
		_, _ = c.Write(q)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			if !bytes.Equal(buf[:n], buildReply(q, 1)) {
				t.Fatalf("reply %x", buf[:n])
			}
			return true
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			time.Sleep(20 * time.Millisecond) // refused: not listening yet
		}
	}
	t.Fatal("Serve neither answers nor fails")
	return false
}

func TestServeListenError(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tests := []struct {
		name string
		addr string
	}{
		{name: "UDP port taken", addr: pc.LocalAddr().String()},
		{name: "not an address", addr: "no-such-host.invalid:53:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeForward{}
			if err := Serve(t.Context(), tt.addr, f.forward); err == nil {
				t.Fatal("Serve succeeded, want a listen error")
			}
		})
	}
}
