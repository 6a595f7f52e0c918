package api

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

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
// EndFrame. The layout of the first 8 bytes is Docker's stdcopy header.
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
}

// FrameWriter writes frames of one stream kind on a shared connection.
type FrameWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	stream byte
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
type upgraded struct {
	conn net.Conn
	buf  *bufio.ReadWriter
	mu   sync.Mutex
}

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
	return &upgraded{conn: conn, buf: buf}, nil
}

// stdout and stderr are the output streams' writers.
func (u *upgraded) stdout() io.Writer { return FrameWriter{mu: &u.mu, w: u.buf, stream: FrameStdout} }
func (u *upgraded) stderr() io.Writer { return FrameWriter{mu: &u.mu, w: u.buf, stream: FrameStderr} }

// stdin is the client's bytes until its half-close.
func (u *upgraded) stdin() io.Reader { return u.buf.Reader }

// end sends the end frame (err's Error, exit code) and closes.
func (u *upgraded) end(err error, exitCode *int) {
	var e EndFrame
	if err != nil {
		body := ErrorBody(err)
		e.Error = &body
	}
	e.ExitCode = exitCode
	b, _ := json.Marshal(e)
	_ = writeFrame(&u.mu, u.buf, FrameEnd, b)
	u.conn.Close()
}
