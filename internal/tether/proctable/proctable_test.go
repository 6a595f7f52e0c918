package proctable_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/tether/proctable"
)

// controls records signals.
type controls struct {
	mu   sync.Mutex
	sigs []int
}

func (c *controls) Signal(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sigs = append(c.sigs, n)
	return nil
}
func (c *controls) Resize(rows, cols uint32) {}

// guestSide is the guest end of the tests: a table whose processes the
// test drives by hand, served over one SSH session per connect.
type guestSide struct {
	t      *testing.T
	table  *proctable.Table
	ctl    controls
	mu     sync.Mutex
	procs  map[string]*proctable.Process
	stdins map[string]*io.PipeReader
	added  chan string
}

func newGuest(t *testing.T, limit int) *guestSide {
	return &guestSide{t: t, table: proctable.New(limit), procs: map[string]*proctable.Process{}, stdins: map[string]*io.PipeReader{}, added: make(chan string, 16)}
}

// deadConn records that a read failed: the session is over.
type deadConn struct {
	net.Conn
	dead atomic.Bool
}

func (c *deadConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.dead.Store(true)
	}
	return n, err
}

// connect starts a session and returns the host's client.
func (g *guestSide) connect() *agent.Client {
	g.t.Helper()
	hostEnd, guestEnd := testenv.SocketPair(g.t)
	dc := &deadConn{Conn: guestEnd}
	go func() {
		if wire.AcceptHello(dc) != nil {
			return
		}
		_, chans, reqs, err := link.Server(dc, link.V4)
		if err != nil {
			return
		}
		go func() {
			for req := range reqs {
				if !g.table.HandleRequest(req) {
					_ = req.Reply(false, nil)
				}
			}
		}()
		for nc := range chans {
			switch nc.ChannelType() {
			case wire.ChannelAttach:
				go g.table.ServeAttach(nc, dc.dead.Load)
			case wire.ChannelProcess:
				var spec wire.Process
				_ = json.Unmarshal(nc.ExtraData(), &spec)
				p, err := g.table.Reserve(spec)
				if err != nil {
					_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: err.Error(), ExitCode: 126})))
					continue
				}
				var stdin io.WriteCloser
				if spec.Stdin {
					r, w := io.Pipe()
					stdin = w
					g.mu.Lock()
					g.stdins[p.ID()] = r
					g.mu.Unlock()
				}
				p.Started(1000, stdin, &g.ctl)
				g.mu.Lock()
				g.procs[p.ID()] = p
				g.mu.Unlock()
				g.added <- p.ID()
				ch, creqs, err := nc.Accept()
				if err != nil {
					continue
				}
				go p.Serve(ch, creqs, wire.Attach{}, dc.dead.Load)
			default:
				_ = nc.Reject(link.UnknownChannelType, "unknown")
			}
		}
	}()
	ctx, cancel := context.WithTimeout(g.t.Context(), 5*time.Second)
	defer cancel()
	c, err := agent.Dial(ctx, hostEnd)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { c.Close() })
	return c
}

func (g *guestSide) proc(id string) *proctable.Process {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.procs[id]
}

// readN reads exactly n bytes from r within 5 s.
func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(r, buf); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read %d bytes: %v (got %q)", n, err, buf)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("read %d bytes: timed out", n)
	}
	return string(buf)
}

func waitExit(t *testing.T, p *agent.Process) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return code
}

// A resumable process runs on after its session ends; a new session
// lists it, resumes its output at the host's offsets and gets the exit
// status; the process stays listed until released.
func TestResumeAfterSessionEnds(t *testing.T) {
	g := newGuest(t, 0)
	c1 := g.connect()
	p1, err := c1.Start(t.Context(), wire.Process{Args: []string{"x"}, ID: wire.MainProcessID, Resumable: true})
	if err != nil {
		t.Fatal(err)
	}
	<-g.added
	gp := g.proc(wire.MainProcessID)
	_, _ = gp.Stdout.Write([]byte("one\n"))
	_, _ = gp.Stderr.Write([]byte("e1\n"))
	if got := readN(t, p1.Stdout(), 4); got != "one\n" {
		t.Fatalf("stdout %q", got)
	}
	if got := readN(t, p1.Stderr(), 3); got != "e1\n" {
		t.Fatalf("stderr %q", got)
	}
	c1.Close() // the daemon goes away (acknowledged nothing)
	_, _ = gp.Stdout.Write([]byte("two\n"))

	c2 := g.connect()
	l, err := c2.Processes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Processes) != 1 || l.Processes[0].ID != wire.MainProcessID || !l.Processes[0].Running || l.Processes[0].Stdout != 8 || l.Processes[0].Stderr != 3 || !l.Processes[0].Resumable {
		t.Fatalf("Processes = %+v", l)
	}
	// The host stored "one\n" and "e1\n": it resumes after them.
	p2, err := c2.Attach(t.Context(), wire.Attach{ID: wire.MainProcessID, Stdout: 4, Stderr: 3}, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := readN(t, p2.Stdout(), 4); got != "two\n" {
		t.Fatalf("resumed stdout %q, want two", got)
	}
	_, _ = gp.Stdout.Write([]byte("three"))
	gp.Exited(3)
	if got := readN(t, p2.Stdout(), 5); got != "three" {
		t.Fatalf("stdout %q", got)
	}
	go io.Copy(io.Discard, p2.Stderr())
	if code := waitExit(t, p2); code != 3 {
		t.Errorf("exit %d, want 3", code)
	}
	l, _ = c2.Processes(t.Context())
	if len(l.Processes) != 1 || l.Processes[0].Running || l.Processes[0].ExitCode == nil || *l.Processes[0].ExitCode != 3 {
		t.Fatalf("after exit: %+v", l)
	}
	if err := c2.Release(t.Context(), wire.MainProcessID); err != nil {
		t.Fatal(err)
	}
	if l, _ = c2.Processes(t.Context()); len(l.Processes) != 0 {
		t.Errorf("released process still listed: %+v", l)
	}
}

// Acknowledged output is dropped; a full spool blocks the process's writer
// until the host acknowledges.
func TestAckAndBackPressure(t *testing.T) {
	g := newGuest(t, 8)
	c := g.connect()
	p, err := c.Start(t.Context(), wire.Process{Args: []string{"x"}, ID: "a", Resumable: true})
	if err != nil {
		t.Fatal(err)
	}
	<-g.added
	gp := g.proc("a")
	wrote := make(chan struct{})
	go func() { _, _ = gp.Stdout.Write([]byte("0123456789abcdef")); close(wrote) }()
	if got := readN(t, p.Stdout(), 8); got != "01234567" {
		t.Fatalf("got %q", got)
	}
	select {
	case <-wrote:
		t.Fatal("writer passed a full spool without an ack")
	case <-time.After(50 * time.Millisecond):
	}
	if err := p.Ack(8, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("writer still blocked after the ack")
	}
	if got := readN(t, p.Stdout(), 8); got != "89abcdef" {
		t.Fatalf("got %q", got)
	}
	if start, _ := gp.Stdout.Bounds(); start != 8 {
		t.Errorf("spool starts at %d after ack 8", start)
	}
}

// Without Resumable, output counts as delivered once sent and the process
// is forgotten once its exit status is sent.
func TestNotResumableForgottenAfterExit(t *testing.T) {
	g := newGuest(t, 0)
	c := g.connect()
	p, err := c.Start(t.Context(), wire.Process{Args: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	id := <-g.added
	gp := g.proc(id)
	_, _ = gp.Stdout.Write([]byte("hi"))
	if got := readN(t, p.Stdout(), 2); got != "hi" {
		t.Fatal(got)
	}
	gp.Exited(0)
	go io.Copy(io.Discard, p.Stderr())
	if code := waitExit(t, p); code != 0 {
		t.Fatalf("exit %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := c.Processes(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Processes) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still listed: %+v", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The host's stdin EOF closes the process's stdin; a session that dies
// does not.
func TestStdinEOFOnlyFromHost(t *testing.T) {
	g := newGuest(t, 0)
	c1 := g.connect()
	p1, err := c1.Start(t.Context(), wire.Process{Args: []string{"x"}, ID: "s", Stdin: true, Resumable: true})
	if err != nil {
		t.Fatal(err)
	}
	<-g.added
	g.mu.Lock()
	stdin := g.stdins["s"]
	g.mu.Unlock()
	if _, err := p1.Stdin().Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, stdin, 2); got != "ab" {
		t.Fatal(got)
	}
	c1.Close()
	c2 := g.connect()
	p2, err := c2.Attach(t.Context(), wire.Attach{ID: "s"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Stdin().Write([]byte("cd")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, stdin, 2); got != "cd" {
		t.Fatalf("stdin after the session ended: %q", got)
	}
	if err := p2.Stdin().Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := stdin.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) {
			t.Errorf("stdin after the host's EOF: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stdin not closed by the host's EOF")
	}
}

func TestErrors(t *testing.T) {
	g := newGuest(t, 0)
	c := g.connect()
	if _, err := c.Attach(t.Context(), wire.Attach{ID: "nope"}, false); !errdefs.IsNotFound(err) {
		t.Errorf("Attach unknown: %v, want NotFound", err)
	}
	if _, err := c.Start(t.Context(), wire.Process{Args: []string{"x"}, ID: "dup"}); err != nil {
		t.Fatal(err)
	}
	<-g.added
	if _, err := c.Start(t.Context(), wire.Process{Args: []string{"x"}, ID: "dup"}); err == nil {
		t.Error("second process with the same ID started")
	}
	if err := c.Release(t.Context(), "dup"); err == nil {
		t.Error("Release of a running process succeeded")
	}
	if err := c.Release(t.Context(), "nope"); err == nil {
		t.Error("Release of an unknown process succeeded")
	}
}

// A newer attachment replaces the older one.
func TestAttachReplaces(t *testing.T) {
	g := newGuest(t, 0)
	c := g.connect()
	p1, err := c.Start(t.Context(), wire.Process{Args: []string{"x"}, ID: "r", Resumable: true})
	if err != nil {
		t.Fatal(err)
	}
	<-g.added
	gp := g.proc("r")
	// Once output flows the first channel is served.
	_, _ = gp.Stdout.Write([]byte("a"))
	if got := readN(t, p1.Stdout(), 1); got != "a" {
		t.Fatal(got)
	}
	p2, err := c.Attach(t.Context(), wire.Attach{ID: "r", Stdout: 1}, true)
	if err != nil {
		t.Fatal(err)
	}
	// The first channel is closed without an exit status.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := p1.Wait(ctx); !errdefs.IsUnavailable(err) {
		t.Errorf("replaced attachment: Wait = %v, want Unavailable (no status)", err)
	}
	_, _ = gp.Stdout.Write([]byte("x"))
	gp.Exited(7)
	if got := readN(t, p2.Stdout(), 1); got != "x" {
		t.Fatal(got)
	}
	go io.Copy(io.Discard, p2.Stderr())
	if code := waitExit(t, p2); code != 7 {
		t.Errorf("exit %d", code)
	}
}
