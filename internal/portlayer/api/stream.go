package api

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/portlayer"
)

// Streams (attach, exec start) are HTTP upgrades: the client sends
// "Connection: Upgrade" and "Upgrade: vch-stream"; the server answers 101
// and the connection then carries, from the client, the process's stdin
// as raw bytes (a half-close, shutdown(SHUT_WR), is its EOF) and, from the
// server, frames: a header of 8 bytes — the stream (FrameStdout,
// FrameStderr, FrameEnd), three zero bytes, the payload's length as a
// big-endian uint32 — then the payload. Stdout and stderr frames carry
// output; one FrameEnd frame ends the stream, its payload the JSON of an
// EndFrame. The first 8 bytes are laid out as the Engine API's
// multiplexed stream header (stdcopy), so existing demultiplexers read it.
const (
	// UpgradeProtocol is the Upgrade header's value.
	UpgradeProtocol = "vch-stream"
	FrameStdout     = 1
	FrameStderr     = 2
	FrameEnd        = 3
	// maxFrameBytes bounds one frame's payload.
	maxFrameBytes = 1 << 20
)

// EndFrame is the last frame's payload: the error that ended the stream,
// if any, and for an exec its exit code.
type EndFrame struct {
	Error    *portlayer.Error `json:"error,omitempty"`
	ExitCode *int             `json:"exitCode,omitempty"`
	// TimedOut is set when Error is an exec's run cut off by its
	// timeout (in process, an error wrapping context.DeadlineExceeded).
	TimedOut bool `json:"timedOut,omitempty"`
}

// FrameWriter writes frames of one stream kind on a shared connection.
type FrameWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	stream byte
	// failed, if set, is called when a write fails (the client has gone).
	failed func()
}

// Write frames p (in pieces of at most maxFrameBytes).
func (f FrameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > maxFrameBytes {
			chunk = chunk[:maxFrameBytes]
		}
		if err := writeFrame(f.mu, f.w, f.stream, chunk); err != nil {
			if f.failed != nil {
				f.failed()
			}
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

func writeFrame(mu *sync.Mutex, w io.Writer, stream byte, p []byte) error {
	var h [8]byte
	h[0] = stream
	binary.BigEndian.PutUint32(h[4:], uint32(len(p)))
	mu.Lock()
	defer mu.Unlock()
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	if f, ok := w.(interface{ Flush() error }); ok && err == nil {
		err = f.Flush()
	}
	return err
}

// ReadFrames copies stdout and stderr frames from r to stdout and stderr
// (nil: discarded) until the end frame, which it returns. A stream cut
// before the end frame is unavailable.
func ReadFrames(r io.Reader, stdout, stderr io.Writer) (EndFrame, error) {
	var h [8]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return EndFrame{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "stream cut before its end", Err: err}
		}
		n := binary.BigEndian.Uint32(h[4:])
		if n > maxFrameBytes {
			return EndFrame{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: fmt.Sprintf("stream frame of %d bytes, more than %d", n, maxFrameBytes)}
		}
		switch h[0] {
		case FrameStdout, FrameStderr:
			w := stdout
			if h[0] == FrameStderr {
				w = stderr
			}
			if w == nil {
				w = io.Discard
			}
			if _, err := io.CopyN(w, r, int64(n)); err != nil {
				return EndFrame{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "stream cut in a frame", Err: err}
			}
		case FrameEnd:
			b := make([]byte, n)
			if _, err := io.ReadFull(r, b); err != nil {
				return EndFrame{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "stream cut in its end frame", Err: err}
			}
			var end EndFrame
			if err := json.Unmarshal(b, &end); err != nil {
				return EndFrame{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "bad end frame", Err: err}
			}
			return end, nil
		default:
			return EndFrame{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: fmt.Sprintf("unknown stream frame %d", h[0])}
		}
	}
}

// upgraded is the server's side of a stream once upgraded.
//
// The client's leaving is noticed however the stream stands: a write to
// it fails, a read from it fails, or — once its side has ended (EOF,
// which is also stdin's half-close and so not by itself a leaving) —
// the connection is hung up entirely (POLLHUP: on a unix socket, the
// client has closed it). gone is closed then, and the stream's handler
// ends it. (Over TCP a client's close without a reset is seen only by a
// write, as TCP cannot tell it from a half-close.)
type upgraded struct {
	conn net.Conn
	buf  *bufio.ReadWriter
	mu   sync.Mutex
	// stdinR is the stdin the stream's process reads (readClient).
	stdinR *io.PipeReader
	// gone is closed when the client is known to have gone; ended when
	// end has closed the connection.
	gone, ended         chan struct{}
	goneOnce, endedOnce sync.Once
}

// hangupPoll is how often a stream whose client's side has ended checks
// whether the client has hung up.
const hangupPoll = 200 * time.Millisecond

// hangUp records that the client has gone.
func (u *upgraded) hangUp() { u.goneOnce.Do(func() { close(u.gone) }) }

// upgrade answers 101 and takes the connection over; before that, a
// request without the upgrade headers is invalid_argument.
func upgrade(w http.ResponseWriter, r *http.Request) (*upgraded, error) {
	if r.Header.Get("Upgrade") != UpgradeProtocol {
		return nil, invalid("this route is a stream: send Connection: Upgrade and Upgrade: %s", UpgradeProtocol)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, &portlayer.Error{Class: portlayer.ClassInternal, Message: "the connection cannot be taken over"}
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return nil, &portlayer.Error{Class: portlayer.ClassInternal, Message: "take the connection over", Err: err}
	}
	if _, err := buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + UpgradeProtocol + "\r\n\r\n"); err == nil {
		err = buf.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &upgraded{conn: conn, buf: buf, gone: make(chan struct{}), ended: make(chan struct{})}, nil
}

// stdout and stderr are the output streams' writers; a failed write
// means the client has gone.
func (u *upgraded) stdout() io.Writer {
	return FrameWriter{mu: &u.mu, w: u.buf, stream: FrameStdout, failed: u.hangUp}
}
func (u *upgraded) stderr() io.Writer {
	return FrameWriter{mu: &u.mu, w: u.buf, stream: FrameStderr, failed: u.hangUp}
}

// readClient reads the client's side of the connection until it ends,
// watching for the client's leaving (see upgraded). With stdin it
// returns the stream's stdin: the client's bytes until its half-close,
// then EOF (a failed read is stdin's error); without, the client's
// bytes are discarded and it returns nil. Call it once, before the
// stream's process starts.
func (u *upgraded) readClient(stdin bool) io.Reader {
	var pw *io.PipeWriter
	if stdin {
		u.stdinR, pw = io.Pipe()
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := u.buf.Read(buf)
			if n > 0 && pw != nil {
				if _, werr := pw.Write(buf[:n]); werr != nil {
					pw = nil // the process's stdin is closed: discard the rest
				}
			}
			if err == io.EOF {
				if pw != nil {
					_ = pw.Close()
				}
				u.watchHangup()
				return
			}
			if err != nil {
				if pw != nil {
					_ = pw.CloseWithError(err)
				}
				u.hangUp()
				return
			}
		}
	}()
	if !stdin {
		return nil
	}
	return u.stdinR
}

// watchHangup waits, polling, until the connection is hung up (then
// records the client's leaving) or the stream has ended.
func (u *upgraded) watchHangup() {
	nc := u.conn
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	t := time.NewTicker(hangupPoll)
	defer t.Stop()
	for {
		select {
		case <-u.ended:
			return
		case <-t.C:
		}
		if hungUp(rc) {
			u.hangUp()
			return
		}
	}
}

// hungUp reports whether the connection's peer has gone: POLLHUP (both
// directions shut) or POLLERR, which poll reports whatever was asked.
func hungUp(rc syscall.RawConn) bool {
	hup := false
	cerr := rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, err := unix.Poll(pfd, 0); err == nil && n > 0 {
			hup = pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return hup || cerr != nil // a closed descriptor: gone too
}

// end sends the end frame (err's Error, exit code) and closes.
func (u *upgraded) end(err error, exitCode *int) {
	u.finish(err, EndFrame{ExitCode: exitCode})
}

// finish sends the end frame e with err's Error and closes.
func (u *upgraded) finish(err error, e EndFrame) {
	if err != nil {
		body := ErrorBody(err)
		e.Error = &body
	}
	b, _ := json.Marshal(e)
	_ = writeFrame(&u.mu, u.buf, FrameEnd, b)
	u.conn.Close()
	u.endedOnce.Do(func() { close(u.ended) })
	if u.stdinR != nil {
		// A process that stopped reading its stdin leaves the reader of
		// the client's side blocked on the pipe: free it.
		_ = u.stdinR.CloseWithError(io.ErrClosedPipe)
	}
}
