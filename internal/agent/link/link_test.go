package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"
)

// pair is both ends of a link over a Unix socket pair.
type pair struct {
	host, guest           *Conn
	hostChans, guestChans <-chan NewChannel
	hostReqs, guestReqs   <-chan *Request
}

// eachVersion runs test in each framing.
func eachVersion(t *testing.T, test func(t *testing.T, v Version)) {
	for _, v := range []Version{V3, V4} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) { test(t, v) })
	}
}

func newPair(t *testing.T, v Version) *pair {
	t.Helper()
	a, b := testenv.SocketPair(t)
	var p pair
	var err error
	if p.host, p.hostChans, p.hostReqs, err = Client(a, v); err != nil {
		t.Fatal(err)
	}
	if p.guest, p.guestChans, p.guestReqs, err = Server(b, v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.host.Close(); p.guest.Close() })
	return &p
}

func TestGlobalRequests(t *testing.T) { eachVersion(t, testGlobalRequests) }

func testGlobalRequests(t *testing.T, v Version) {
	p := newPair(t, v)
	go func() {
		for r := range p.guestReqs {
			switch r.Type {
			case "echo":
				_ = r.Reply(true, append([]byte("re:"), r.Payload...))
			case "note":
				if r.WantReply {
					panic("note wants a reply")
				}
			default:
				_ = r.Reply(false, []byte("unknown "+r.Type))
			}
		}
	}()
	ok, resp, err := p.host.SendRequest(t.Context(), "echo", true, []byte("hi"))
	if err != nil || !ok || string(resp) != "re:hi" {
		t.Fatalf("echo = %v %q %v", ok, resp, err)
	}
	ok, resp, err = p.host.SendRequest(t.Context(), "nope", true, nil)
	if err != nil || ok || string(resp) != "unknown nope" {
		t.Fatalf("nope = %v %q %v", ok, resp, err)
	}
	if _, _, err := p.host.SendRequest(t.Context(), "note", false, nil); err != nil {
		t.Fatal(err)
	}
	// Many at once: each has its own stream, so replies never cross.
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprint(i)
			_, resp, err := p.host.SendRequest(t.Context(), "echo", true, []byte(want))
			if err != nil || string(resp) != "re:"+want {
				t.Errorf("echo %d = %q %v", i, resp, err)
			}
		}()
	}
	wg.Wait()
}

func TestGuestToHostRequest(t *testing.T) { eachVersion(t, testGuestToHostRequest) }

func testGuestToHostRequest(t *testing.T, v Version) {
	p := newPair(t, v)
	go func() {
		for r := range p.hostReqs {
			_ = r.Reply(true, []byte("answer"))
		}
	}()
	ok, resp, err := p.guest.SendRequest(t.Context(), "dns", true, []byte("q"))
	if err != nil || !ok || string(resp) != "answer" {
		t.Fatalf("= %v %q %v", ok, resp, err)
	}
}

func TestRequestContext(t *testing.T) { eachVersion(t, testRequestContext) }

func testRequestContext(t *testing.T, v Version) {
	p := newPair(t, v)
	go func() {
		for range p.guestReqs { // never answered
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := p.host.SendRequest(ctx, "slow", true, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestRejectChannel(t *testing.T) { eachVersion(t, testRejectChannel) }

func testRejectChannel(t *testing.T, v Version) {
	p := newPair(t, v)
	go func() {
		for nc := range p.guestChans {
			if nc.ChannelType() != "proc" || string(nc.ExtraData()) != "spec" {
				_ = nc.Reject(UnknownChannelType, "unknown channel type")
				continue
			}
			_ = nc.Reject(ConnectionFailed, `{"message":"not found"}`)
		}
	}()
	_, _, err := p.host.OpenChannel(t.Context(), "proc", []byte("spec"))
	var oce *OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ConnectionFailed || oce.Message != `{"message":"not found"}` {
		t.Fatalf("err = %#v", err)
	}
	_, _, err = p.host.OpenChannel(t.Context(), "other", nil)
	if !errors.As(err, &oce) || oce.Reason != UnknownChannelType {
		t.Fatalf("err = %#v", err)
	}
}

// serveEcho accepts channels: stdin is copied to stdout with each line
// also to stderr, and at EOF an "exit-status" request follows all output,
// then the channel closes (as tether serves a process).
func serveEcho(chans <-chan NewChannel) {
	for nc := range chans {
		go func() {
			ch, reqs, err := nc.Accept()
			if err != nil {
				return
			}
			go func() {
				for r := range reqs {
					_ = r.Reply(r.Type == "signal", nil)
				}
			}()
			n, _ := io.Copy(io.MultiWriter(ch, ch.Stderr()), ch)
			_, _ = ch.SendRequest("exit-status", false, fmt.Appendf(nil, "%d", n))
			_ = ch.Close()
		}()
	}
}

func TestChannelOrderAndExit(t *testing.T) { eachVersion(t, testChannelOrderAndExit) }

func testChannelOrderAndExit(t *testing.T, v Version) {
	p := newPair(t, v)
	go serveEcho(p.guestChans)
	ch, reqs, err := p.host.OpenChannel(t.Context(), "proc", nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := ch.SendRequest("signal", true, nil)
	if err != nil || !ok {
		t.Fatalf("signal = %v %v", ok, err)
	}
	if ok, err := ch.SendRequest("other", true, nil); err != nil || ok {
		t.Fatalf("other = %v %v", ok, err)
	}
	var want bytes.Buffer
	for i := range 10000 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	go func() {
		_, _ = ch.Write(want.Bytes())
		_ = ch.CloseWrite()
	}()
	var out, errOut []byte
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out, _ = io.ReadAll(ch) }()
	go func() { defer wg.Done(); errOut, _ = io.ReadAll(ch.Stderr()) }()
	var status string
	for r := range reqs {
		if r.Type == "exit-status" {
			status = string(r.Payload)
		}
	}
	wg.Wait()
	if !bytes.Equal(out, want.Bytes()) || !bytes.Equal(errOut, want.Bytes()) {
		t.Fatalf("stdout %d bytes, stderr %d bytes, want %d each, in order", len(out), len(errOut), want.Len())
	}
	if status != fmt.Sprint(want.Len()) {
		t.Fatalf("exit status %q, want %d", status, want.Len())
	}
}

// TestFlowControl: a reader that does not read stops the writer (the
// window and the buffer fill), nothing is lost, and other channels go on.
func TestFlowControl(t *testing.T) { eachVersion(t, testFlowControl) }

func testFlowControl(t *testing.T, v Version) {
	p := newPair(t, v)
	accepted := make(chan Channel, 2)
	go func() {
		for nc := range p.guestChans {
			ch, reqs, _ := nc.Accept()
			go DiscardRequests(reqs)
			accepted <- ch
		}
	}()
	ch, _, err := p.host.OpenChannel(t.Context(), "bulk", nil)
	if err != nil {
		t.Fatal(err)
	}
	guestCh := <-accepted
	data := make([]byte, 8<<20)
	_, _ = rand.Read(data)
	wrote := make(chan int, 1)
	go func() {
		n, _ := ch.Write(data)
		wrote <- n
	}()
	select {
	case n := <-wrote:
		t.Fatalf("write of %d bytes returned (%d) with nobody reading", len(data), n)
	case <-time.After(300 * time.Millisecond):
	}
	// A second channel still works while the first is stuck.
	ch2, _, err := p.host.OpenChannel(t.Context(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	g2 := <-accepted
	go func() { _, _ = ch2.Write([]byte("ping")); _ = ch2.CloseWrite() }()
	if b, _ := io.ReadAll(g2); string(b) != "ping" {
		t.Fatalf("second channel read %q", b)
	}
	got := make([]byte, len(data))
	if _, err := io.ReadFull(guestCh, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data differs")
	}
	if n := <-wrote; n != len(data) {
		t.Fatalf("wrote %d", n)
	}
}

func TestCloseEndsPeer(t *testing.T) { eachVersion(t, testCloseEndsPeer) }

func testCloseEndsPeer(t *testing.T, v Version) {
	p := newPair(t, v)
	accepted := make(chan Channel, 1)
	guestReqs := make(chan (<-chan *Request), 1)
	go func() {
		for nc := range p.guestChans {
			ch, reqs, _ := nc.Accept()
			accepted <- ch
			guestReqs <- reqs
		}
	}()
	ch, _, err := p.host.OpenChannel(t.Context(), "proc", nil)
	if err != nil {
		t.Fatal(err)
	}
	g := <-accepted
	reqs := <-guestReqs
	// The guest writes more than a window's worth that nobody reads.
	go func() { _, _ = g.Write(make([]byte, 4<<20)) }()
	time.Sleep(100 * time.Millisecond)
	ch.Close()
	if _, err := ch.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
	if n, err := ch.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after close = %d %v", n, err)
	}
	for range reqs { // closes with the channel
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := g.Write([]byte("x")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("guest writes still succeed after the host's close")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnectionEnd(t *testing.T) { eachVersion(t, testConnectionEnd) }

func testConnectionEnd(t *testing.T, v Version) {
	p := newPair(t, v)
	accepted := make(chan Channel, 1)
	go func() {
		for nc := range p.guestChans {
			ch, reqs, _ := nc.Accept()
			go DiscardRequests(reqs)
			accepted <- ch
		}
	}()
	ch, reqs, err := p.host.OpenChannel(t.Context(), "proc", nil)
	if err != nil {
		t.Fatal(err)
	}
	g := <-accepted
	_, _ = g.Write([]byte("before"))
	p.guest.Close()
	b, err := io.ReadAll(ch)
	if err != nil || string(b) != "before" {
		t.Fatalf("read %q %v after the peer's end", b, err)
	}
	for range reqs {
	}
	done := make(chan struct{})
	go func() { p.host.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the peer's end")
	}
	for range p.hostChans {
	}
	for range p.hostReqs {
	}
	if _, _, err := p.host.OpenChannel(t.Context(), "proc", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("open after end = %v", err)
	}
	if _, _, err := p.host.SendRequest(t.Context(), "x", true, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("request after end = %v", err)
	}
}

func TestOpenContext(t *testing.T) { eachVersion(t, testOpenContext) }

func testOpenContext(t *testing.T, v Version) {
	p := newPair(t, v)
	go func() {
		for range p.guestChans { // never answered
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := p.host.OpenChannel(ctx, "proc", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func TestMalformedFrames(t *testing.T) {
	a, b := testenv.SocketPair(t)
	guest, chans, reqs, err := Server(b, V3)
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()
	host, _, _, err := Client(a, V3)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	// A stream whose first frame is neither an open nor a request, one
	// that claims a huge frame, and one cut short: each is dropped, and
	// the connection goes on.
	for _, raw := range [][]byte{{frameData, 0, 0, 0, 1, 'x'}, {frameOpen, 0xff, 0xff, 0xff, 0xff}, {frameOpen, 0, 0, 0, 9, 0, 0}} {
		st, err := host.t.(*yamuxConn).sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = st.Write(raw)
		_ = st.Close()
	}
	go func() {
		for r := range reqs {
			_ = r.Reply(true, nil)
		}
	}()
	if ok, _, err := host.SendRequest(t.Context(), "still", true, nil); err != nil || !ok {
		t.Fatalf("after malformed streams: %v %v", ok, err)
	}
	select {
	case nc := <-chans:
		t.Fatalf("a malformed stream was delivered as channel %q", nc.ChannelType())
	default:
	}
}

// BenchmarkChannelThroughput: 32 KiB writes on one channel, both ends in
// this process, over a Unix socket pair, in each framing; "socket" is the
// same writes on the socket pair alone, the baseline. Run with -cpu 1 for
// what one vCPU sees.
func BenchmarkChannelThroughput(b *testing.B) {
	b.Run("socket", func(b *testing.B) {
		ca, cb := benchSockets()
		go func() { _, _ = io.Copy(io.Discard, cb) }()
		buf := make([]byte, 32<<10)
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			if _, err := ca.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, v := range []Version{V3, V4} {
		b.Run(fmt.Sprintf("v%d", v), func(b *testing.B) { benchChannel(b, v) })
	}
}

func benchSockets() (net.Conn, net.Conn) {
	fds, _ := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	fa, fb := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	ca, _ := net.FileConn(fa)
	cb, _ := net.FileConn(fb)
	fa.Close()
	fb.Close()
	return ca, cb
}

func benchChannel(b *testing.B, v Version) {
	ca, cb := benchSockets()
	host, _, _, _ := Client(ca, v)
	guest, chans, _, _ := Server(cb, v)
	defer host.Close()
	defer guest.Close()
	go func() {
		for nc := range chans {
			ch, reqs, _ := nc.Accept()
			go DiscardRequests(reqs)
			go func() { _, _ = io.Copy(io.Discard, ch) }()
		}
	}()
	ch, _, err := host.OpenChannel(context.Background(), "bulk", nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := ch.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLargeFrames: a request payload larger than a data chunk arrives
// whole; one over MaxFrameBytes, or one whose header promises more than
// is sent, ends only its own stream.
func TestLargeFrames(t *testing.T) { eachVersion(t, testLargeFrames) }

func testLargeFrames(t *testing.T, v Version) {
	p := newPair(t, v)
	go func() {
		for r := range p.guestReqs {
			_ = r.Reply(true, []byte(fmt.Sprint(len(r.Payload))))
		}
	}()
	big := bytes.Repeat([]byte("x"), 2<<20)
	ok, resp, err := p.host.SendRequest(t.Context(), "big", true, big)
	if err != nil || !ok || string(resp) != fmt.Sprint(len(big)) {
		t.Fatalf("2 MiB request = %v %q %v", ok, resp, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, _, err := p.host.SendRequest(ctx, "huge", true, make([]byte, MaxFrameBytes+1)); err == nil || ctx.Err() != nil {
		t.Fatalf("a frame over MaxFrameBytes: err %v (ctx %v), want the stream ended", err, ctx.Err())
	}
	if v == V4 {
		// Refused before it is sent; the connection goes on.
		if _, _, err := p.host.SendRequest(ctx, "huge", true, make([]byte, MaxFrameBytes+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err %v, want ErrTooLarge", err)
		}
		if ok, _, err := p.host.SendRequest(t.Context(), "after", true, nil); err != nil || !ok {
			t.Fatalf("after a refused request: %v %v", ok, err)
		}
		return
	}
	st, err := p.host.t.(*yamuxConn).sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = st.Write([]byte{frameRequest, 0, 0x3f, 0xff, 0xff, 1, 2, 3})
	_ = st.Close()
	if ok, _, err := p.host.SendRequest(t.Context(), "after", true, nil); err != nil || !ok {
		t.Fatalf("after bad frames: %v %v", ok, err)
	}
}

// TestManyOpens: more streams at once than are read concurrently
// (maxOpening) are all served.
func TestManyOpens(t *testing.T) { eachVersion(t, testManyOpens) }

func testManyOpens(t *testing.T, v Version) {
	p := newPair(t, v)
	release := make(chan struct{})
	go func() {
		for r := range p.guestReqs {
			go func() {
				<-release
				_ = r.Reply(true, nil)
			}()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 4*maxOpening)
	for range 4 * maxOpening {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, _, err := p.host.SendRequest(t.Context(), "wait", true, nil)
			if err == nil && !ok {
				err = errors.New("refused")
			}
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
