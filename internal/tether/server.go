package tether

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/link"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/tether/proctable"
)

// server serves the host's sessions on the virtio-serial port.
type server struct {
	logger *slog.Logger
	reaper *reaper
	table  *proctable.Table

	nics nics
	// rehello, on a serial channel, runs the guest's hello again before
	// each session after the first (channelChoice.hello); nil on a
	// virtio-serial port, which reads EOF when its host goes.
	rehello func(*os.File) error
	// channelTLS, on a serial channel whose guestinfo asks for it, runs
	// the guest's TLS handshake at the start of each session (after the
	// hello; the host's agent protocol then runs inside TLS); nil: plain.
	channelTLS func(net.Conn) (net.Conn, error)
	// frameStall, on a serial channel, is how long a read may block in
	// the middle of a link frame before the session ends (serialFrameStall;
	// link.StallBounded); 0 on a virtio-serial port.
	frameStall time.Duration
	// zygote is the main process's helper made before a template was
	// saved; nil in a booted guest.
	zygote *zygote

	mu           sync.Mutex
	mainPid      int        // the container's main process while it runs, else 0
	mainStarting bool       // a main process is being started
	conn         *link.Conn // the current session, nil between sessions
	relay        bool       // the DNS relay runs
	// cgroup is the container's cgroup directory once setup made it
	// (containerCgroup), else "": processes then run in tether's.
	cgroup string
	// security is the setup's process-wide settings (no new privileges,
	// a writable cgroup mount).
	security processSecurity
	// unclaimed: a warm guest (wire.Wake.Deferred) not yet claimed; it
	// has no root and refuses setup and processes.
	unclaimed bool
	// prepared: prepareWarm did all of its work, so a claim's wake is
	// claimWake; unclaimable: why this warm guest refuses its claim.
	prepared    bool
	unclaimable error
}

// errUnclaimed refuses what a warm guest cannot do before its claim.
var errUnclaimed = errors.New("tether: this warm guest has not been claimed by a container")

// isUnclaimed reports whether the guest still waits for its claim.
func (s *server) isUnclaimed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unclaimed
}

func newServer(logger *slog.Logger, r *reaper) *server {
	return &server{logger: logger, reaper: r, table: proctable.New(wire.SpoolLimitBytes)}
}

// hostPoll is how often tether looks for a host while none is connected:
// QEMU's chardev reconnects once a second, so this adds little to it.
const hostPoll = 100 * time.Millisecond

// errPowerOff ends serve: the host asked for a power-off.
var errPowerOff = errors.New("tether: power-off requested")

// serve runs the host's sessions on the port, one after another, until a
// power-off request. A session ends when the host's side of the port
// closes (the daemon stopped or died); the container's processes keep
// running, their output waits in the process table, and the next host to
// connect gets a new session (wire protocol v2).
func (s *server) serve(port *os.File) error {
	for first := true; ; first = false {
		if !first && s.rehello != nil {
			// A serial line has no end of session of its own: the next
			// host's listener starts with its hello, whose first bytes
			// ended the last session's framing (the magic's bytes, read
			// as a frame header, declare a frame over link.MaxFrameBytes).
			if err := s.rehello(port); err != nil {
				s.logger.Info("channel hello failed; waiting for the next host", "err", err)
				time.Sleep(time.Second)
				continue // and the hello again
			}
		}
		var conn *sessionConn
		if s.channelTLS != nil {
			// TLS's client speaks first: right after the hello.
			conn = newSessionConn(port, nil)
		} else {
			var err error
			if conn, err = waitHost(port); err != nil {
				return err
			}
		}
		err := s.session(conn)
		conn.end() // also clears the port's deadlines: the next hello waits
		if errors.Is(err, errPowerOff) {
			return nil
		}
		s.logger.Info("host disconnected; processes keep running", "err", err)
	}
}

// serialFrameStall is how long tether waits, on a serial channel, for the
// rest of a link frame that stopped arriving midway before it ends the
// session: a serial line says nothing when the daemon at its other end
// dies, and the next daemon's hello would otherwise be read as the rest of
// that frame (docs/vsphere.md, "Adoption"). A daemon that lives writes a
// frame in one write, so a pause this long inside one is its death (or a
// host stalled as long, whose session then starts again).
const serialFrameStall = 10 * time.Second

// stallSession is a session on a serial channel: link.StallBounded over
// the port's read deadline.
type stallSession struct {
	*sessionConn
	limit time.Duration
}

func (c stallSession) FrameStall() time.Duration { return c.limit }

// SetReadDeadline sets the port's read deadline unless the session is
// closed: Close stops the session's reader with a deadline in the past,
// which a later deadline must not undo (net.ErrClosed then ends the read).
func (c stallSession) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	return c.port.SetReadDeadline(t)
}

// stallBounded is conn as the link should read it: stall-bounded on a
// serial channel whose port takes read deadlines, else conn itself.
func (s *server) stallBounded(conn *sessionConn) io.ReadWriteCloser {
	if s.frameStall <= 0 {
		return conn
	}
	if err := conn.port.SetReadDeadline(time.Time{}); err != nil {
		s.logger.Warn("serial channel takes no read deadline: a frame cut by a dying host is not bounded", "err", err)
		return conn
	}
	return stallSession{conn, s.frameStall}
}

// tlsHandshakeTimeout bounds the guest's TLS handshake at a session's
// start (a host that went mid-handshake; under TCG the handshake itself
// takes well under a second).
const tlsHandshakeTimeout = 30 * time.Second

// secure runs the channel's TLS handshake over rw (conn's stream) and
// returns the session's stream inside TLS, stall-bounded as rw was.
func (s *server) secure(conn *sessionConn, rw io.ReadWriteCloser) (io.ReadWriteCloser, error) {
	pc := &portConn{ReadWriteCloser: rw}
	if sb, ok := rw.(stallSession); ok {
		pc.recordStall = sb.limit
	}
	_ = pc.SetReadDeadline(time.Now().Add(tlsHandshakeTimeout))
	tc, err := s.channelTLS(pc)
	_ = pc.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	ts := tlsSession{Conn: tc, under: conn}
	if sb, ok := rw.(stallSession); ok {
		return stallTLS{ts, sb.limit}, nil
	}
	return ts, nil
}

// tlsRecordHeader is the length of a TLS record's header: type, version
// (2 bytes), length (2 bytes) (RFC 8446 section 5.1).
const tlsRecordHeader = 5

// portConn is a session's stream as the net.Conn that crypto/tls takes.
// Read deadlines go to the stream where it takes them (a stallSession);
// write deadlines are not kept (a session's Close unblocks its writes).
//
// With recordStall set it bounds a TLS record cut midway, as the link
// bounds a cut frame: the link sees only whole records' plaintext, so a
// host that died in the middle of a record would leave TLS waiting for
// the record's rest and taking the next listener's line as part of it
// (no nudge, no new session). portConn follows the records' headers as
// their bytes pass; while a record is incomplete each read carries a
// deadline recordStall away (or the caller's, if sooner), between
// records the caller's deadline alone. Not safe for concurrent reads
// (TLS reads under its own lock).
type portConn struct {
	io.ReadWriteCloser
	recordStall time.Duration
	deadline    time.Time // the caller's (TLS's, the link's through it)
	header      [tlsRecordHeader]byte
	headerSeen  int  // bytes of the current record's header read
	bodyLeft    int  // bytes of the current record's body still to come
	bounded     bool // the port's deadline is the record's bound
}

func (*portConn) LocalAddr() net.Addr  { return serialAddr{} }
func (*portConn) RemoteAddr() net.Addr { return serialAddr{} }

func (c *portConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *portConn) SetReadDeadline(t time.Time) error {
	c.deadline, c.bounded = t, false
	return c.setPort(t)
}

func (*portConn) SetWriteDeadline(time.Time) error { return nil }

// setPort sets the stream's read deadline where it takes one.
func (c *portConn) setPort(t time.Time) error {
	if d, ok := c.ReadWriteCloser.(interface{ SetReadDeadline(time.Time) error }); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

func (c *portConn) Read(b []byte) (int, error) {
	if c.recordStall > 0 && (c.headerSeen > 0 || c.bodyLeft > 0) {
		t := time.Now().Add(c.recordStall)
		if !c.deadline.IsZero() && c.deadline.Before(t) {
			t = c.deadline
		}
		if err := c.setPort(t); err != nil {
			return 0, err
		}
		c.bounded = true
	} else if c.bounded {
		if err := c.setPort(c.deadline); err != nil {
			return 0, err
		}
		c.bounded = false
	}
	n, err := c.ReadWriteCloser.Read(b)
	for p := b[:n]; len(p) > 0; {
		if c.bodyLeft > 0 {
			k := min(c.bodyLeft, len(p))
			c.bodyLeft -= k
			p = p[k:]
			continue
		}
		c.header[c.headerSeen] = p[0]
		c.headerSeen++
		p = p[1:]
		if c.headerSeen == tlsRecordHeader {
			c.bodyLeft = int(c.header[3])<<8 | int(c.header[4])
			c.headerSeen = 0
		}
	}
	return n, err
}

// serialAddr names the serial channel's ends for net.Conn.
type serialAddr struct{}

func (serialAddr) Network() string { return "serial" }
func (serialAddr) String() string  { return "serial channel" }

// tlsSession is a session's stream inside the channel's TLS. Close ends
// the port's session first, so that TLS's closing alert cannot block on
// a line nobody reads.
type tlsSession struct {
	net.Conn
	under io.Closer
}

// stallTLS is a tlsSession over a stallSession: link.StallBounded, its
// read deadlines reaching the port through TLS.
type stallTLS struct {
	tlsSession
	limit time.Duration
}

func (c stallTLS) FrameStall() time.Duration { return c.limit }

func (c tlsSession) Close() error {
	_ = c.under.Close()
	return c.Conn.Close()
}

// session serves one host connection until it ends: the host's
// wire.Hello, wire.Hello4 in answer, then link.V4 (wire protocol v4).
func (s *server) session(conn *sessionConn) error {
	rw := s.stallBounded(conn)
	if s.channelTLS != nil {
		var err error
		if rw, err = s.secure(conn, rw); err != nil {
			return err
		}
	}
	if err := wire.AcceptHello(rw); err != nil {
		return err
	}
	sc, chans, reqs, err := link.Server(rw, link.V4)
	if err != nil {
		return fmt.Errorf("tether: start link: %w", err)
	}
	defer sc.Close()
	s.logger.Info("host connected")
	s.mu.Lock()
	s.conn = sc
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.conn == sc {
			s.conn = nil
		}
		s.mu.Unlock()
	}()
	go func() {
		for nc := range chans {
			go s.handleChannel(nc, conn.dead.Load)
		}
	}()
	for req := range reqs {
		if s.table.HandleRequest(req) {
			continue
		}
		switch req.Type {
		case wire.RequestClaim:
			var w wire.Wake
			err := json.Unmarshal(req.Payload, &w)
			if err == nil {
				err = s.claim(context.Background(), w)
			}
			if err != nil {
				replyErr(req, err)
				continue
			}
			_ = req.Reply(true, nil)
		case wire.RequestSetup:
			if s.isUnclaimed() {
				replyErr(req, errUnclaimed)
				continue
			}
			var setup wire.Setup
			if err := json.Unmarshal(req.Payload, &setup); err != nil {
				replyErr(req, fmt.Errorf("tether: bad setup: %w", err))
				continue
			}
			if err := applySetup(context.Background(), setup); err != nil {
				replyErr(req, err)
				continue
			}
			if err := s.nics.setupAll(setup.Interfaces); err != nil {
				replyErr(req, err)
				continue
			}
			if err := applySysctls(setup.Sysctls); err != nil {
				replyErr(req, err)
				continue
			}
			if err := setupCgroup(setup.Resources); err != nil {
				if setup.Resources != nil {
					replyErr(req, err)
					continue
				}
				// No limit asked: the container runs without a cgroup of
				// its own (stats then count the whole guest).
				s.logger.Warn("no container cgroup", "err", err)
			} else {
				s.mu.Lock()
				s.cgroup = containerCgroup
				s.mu.Unlock()
			}
			s.mu.Lock()
			s.security = processSecurity{noNewPrivs: setup.NoNewPrivileges, writableCgroup: setup.WritableCgroup,
				masked: setup.MaskedPaths, readonly: setup.ReadonlyPaths, seccomp: setup.Seccomp}
			s.mu.Unlock()
			if setup.DNSRelay != "" {
				s.startDNSRelay(setup.DNSRelay)
			}
			_ = req.Reply(true, nil)
		case wire.RequestInterface:
			var f wire.Interface
			err := json.Unmarshal(req.Payload, &f)
			if err == nil {
				err = s.nics.configure(f)
			}
			if err != nil {
				replyErr(req, err)
				continue
			}
			_ = req.Reply(true, nil)
		case wire.RequestClock:
			var c wire.Clock
			err := json.Unmarshal(req.Payload, &c)
			if err == nil {
				tv := unix.NsecToTimeval(c.TimeUnixNano)
				err = unix.Settimeofday(&tv)
			}
			if err != nil {
				replyErr(req, fmt.Errorf("tether: set clock: %w", err))
				continue
			}
			_ = req.Reply(true, nil)
		case wire.RequestUser:
			var u wire.User
			if err := json.Unmarshal(req.Payload, &u); err != nil {
				replyErr(req, fmt.Errorf("tether: bad user request: %w", err))
				continue
			}
			if _, err := resolveUser(u.User, nil); err != nil {
				replyErr(req, err)
				continue
			}
			_ = req.Reply(true, nil)
		case wire.RequestResources:
			var r wire.Resources
			err := json.Unmarshal(req.Payload, &r)
			s.mu.Lock()
			cg := s.cgroup
			s.mu.Unlock()
			switch {
			case err != nil:
				err = fmt.Errorf("tether: bad resources: %w", err)
			case cg == "":
				err = errors.New("tether: the container has no cgroup")
			default:
				err = applyResources(cg, r)
			}
			if err != nil {
				replyErr(req, err)
				continue
			}
			_ = req.Reply(true, nil)
		case wire.RequestTop, wire.RequestStats:
			s.mu.Lock()
			mainPid := s.mainPid
			s.mu.Unlock()
			var reply any
			var err error
			if req.Type == wire.RequestTop {
				if mainPid == 0 {
					err = errors.New("the container's main process is not running")
				} else {
					reply, err = top(mainPid)
				}
			} else {
				reply, err = stats(mainPid)
			}
			if err != nil {
				replyErr(req, err)
				continue
			}
			_ = req.Reply(true, wire.Encode(reply))
		case wire.RequestArchiveStat:
			go handleArchiveStat(req)
		case wire.RequestPowerOff:
			s.logger.Info("power-off requested")
			_ = req.Reply(true, nil)
			_ = sc.Close()
			return errPowerOff
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	return errors.New("tether: host connection closed")
}

// currentConn is the current session's connection, nil between sessions.
func (s *server) currentConn() *link.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// replyErr refuses req with err: a *wire.MountError as its JSON, so the
// host can tell which mount and why; any other error as its text.
func replyErr(req *link.Request, err error) {
	if !req.WantReply {
		return
	}
	var me *wire.MountError
	if errors.As(err, &me) {
		_ = req.Reply(false, wire.Encode(me))
		return
	}
	_ = req.Reply(false, []byte(err.Error()))
}

func (s *server) handleChannel(nc link.NewChannel, dead func() bool) {
	if t := nc.ChannelType(); (t == wire.ChannelProcess || isArchiveChannel(t)) && s.isUnclaimed() {
		_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: errUnclaimed.Error(), ExitCode: 126})))
		return
	}
	switch t := nc.ChannelType(); {
	case t == wire.ChannelProcess:
	case t == wire.ChannelAttach:
		s.table.ServeAttach(nc, dead)
		return
	case isArchiveChannel(t):
		s.handleArchiveChannel(nc)
		return
	default:
		_ = nc.Reject(link.UnknownChannelType, "unknown channel type")
		return
	}
	var spec wire.Process
	if err := json.Unmarshal(nc.ExtraData(), &spec); err != nil {
		_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "bad process spec: " + err.Error(), ExitCode: 126})))
		return
	}
	entry, err := s.table.Reserve(spec)
	if err != nil {
		_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: err.Error(), ExitCode: 126})))
		return
	}
	s.mu.Lock()
	mainPid := s.mainPid
	if !spec.Exec {
		if mainPid != 0 || s.mainStarting {
			s.mu.Unlock()
			entry.Abandon()
			_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "the main process is already running", ExitCode: 126})))
			return
		}
		s.mainStarting = true
	}
	cgroup, security := s.cgroup, s.security
	s.mu.Unlock()
	var oomBefore int64
	if cgroup != "" && !spec.Exec {
		oomBefore = oomKills()
	}
	proc, err := startProcess(s.reaper, s.zygote, spec, mainPid, cgroup, security)
	if !spec.Exec {
		// Record the main process before the host learns it started, so an
		// exec that follows at once finds it.
		s.mu.Lock()
		s.mainStarting = false
		if err == nil {
			s.mainPid = proc.pid
		}
		s.mu.Unlock()
	}
	if err != nil {
		entry.Abandon()
		se := wire.StartError{Message: err.Error(), ExitCode: 126}
		var ste *startError
		if errors.As(err, &ste) {
			se.ExitCode = ste.code
		}
		s.logger.Info("process start failed", "args", spec.Args, "err", err)
		_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(se)))
		return
	}
	entry.Started(proc.pid, proc.stdinWriter(), proc)
	s.logger.Info("process started", "pid", proc.pid, "id", entry.ID(), "args0", spec.Args[0], "exec", spec.Exec)
	go func() {
		code := proc.feed(entry.Stdout, entry.Stderr)
		if !spec.Exec {
			s.mu.Lock()
			s.mainPid = 0
			s.mu.Unlock()
		}
		s.logger.Info("process exited", "pid", proc.pid, "id", entry.ID(), "exit_code", code)
		if cgroup != "" && !spec.Exec && oomKills() > oomBefore {
			s.logger.Info("container had an OOM kill", "id", entry.ID())
			entry.SetOOMKilled()
		}
		entry.Exited(code)
	}()
	// The process runs whether or not this channel opens: a host that
	// reconnects attaches to it by ID.
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	entry.Serve(ch, reqs, wire.Attach{ID: entry.ID()}, dead)
}

// sessionConn is one session's view of the virtio-serial port. It remembers whether a read failed (the
// host's side closed: the session is over), and on Close aborts writes
// still blocked on the port, so nothing of this session reaches the next
// host.
type sessionConn struct {
	port *os.File
	pre  []byte       // bytes read while waiting for the host, not yet returned
	sp   *portSplicer // writes through a pipe, or nil: write(2)

	dead    atomic.Bool
	mu      sync.Mutex
	closed  bool
	writers sync.WaitGroup
}

// waitHost waits until a host sends something on the port and returns a
// session over it. While no host is connected, a virtio-serial port reads
// as EOF at once (Linux drivers/char/virtio_console.c), so it polls.
func waitHost(port *os.File) (*sessionConn, error) {
	buf := make([]byte, 4096)
	for {
		n, err := port.Read(buf)
		if n > 0 {
			return newSessionConn(port, append([]byte(nil), buf[:n]...)), nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("tether: read channel: %w", err)
		}
		time.Sleep(hostPoll)
	}
}

// newSessionConn is a session on port that first returns pre (bytes
// already read from the host), with a splicer where the port takes one.
func newSessionConn(port *os.File, pre []byte) *sessionConn {
	c := &sessionConn{port: port, pre: pre}
	c.sp, _ = newPortSplicer(port) // without one, write(2)
	return c
}

func (c *sessionConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	n, err := c.port.Read(b)
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		c.dead.Store(true)
	}
	return n, err
}

func (c *sessionConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.writers.Add(1)
	c.mu.Unlock()
	defer c.writers.Done()
	var n int
	var err error
	if c.sp != nil {
		n, err = c.sp.write(b)
	} else {
		n, err = c.port.Write(b)
	}
	if err != nil {
		c.dead.Store(true)
	}
	return n, err
}

// WriteFrame implements link.FrameWriter, with a splicer; without one it
// joins the two and writes them.
func (c *sessionConn) WriteFrame(header, payload []byte) error {
	if c.sp == nil {
		_, err := c.Write(append(append(make([]byte, 0, len(header)+len(payload)), header...), payload...))
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.writers.Add(1)
	c.mu.Unlock()
	defer c.writers.Done()
	err := c.sp.writeFrame(header, payload)
	if err != nil {
		c.dead.Store(true)
	}
	return err
}

// FrameBytes implements link.FrameSizer: with a splicer, the link's data
// frames are up to spliceBytes, each one virtqueue buffer.
func (c *sessionConn) FrameBytes() int {
	if c.sp != nil {
		return spliceBytes
	}
	return 0
}

// Close ends the session's use of the port: blocked reads and writes
// return, later ones fail. The port itself stays open. Idempotent.
func (c *sessionConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.dead.Store(true)
		_ = c.port.SetDeadline(time.Unix(1, 0))
	}
	return nil
}

// end closes the session and waits for its writers to leave the port,
// then makes the port usable for the next session.
func (c *sessionConn) end() {
	_ = c.Close()
	c.writers.Wait()
	if c.sp != nil {
		c.sp.close()
	}
	_ = c.port.SetDeadline(time.Time{})
}

func (c *sessionConn) LocalAddr() net.Addr                { return portAddr{} }
func (c *sessionConn) RemoteAddr() net.Addr               { return portAddr{} }
func (c *sessionConn) SetDeadline(t time.Time) error      { return nil }
func (c *sessionConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *sessionConn) SetWriteDeadline(t time.Time) error { return nil }

type portAddr struct{}

func (portAddr) Network() string { return "virtio-serial" }
func (portAddr) String() string  { return wire.PortName }
