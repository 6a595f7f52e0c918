package link

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Frame types on a stream (see the package doc).
const (
	frameOpen        byte = 1 // type (u32 length + bytes), extra data
	frameOpenConfirm byte = 2
	frameOpenFailure byte = 3 // reason (u32), message
	frameData        byte = 4
	frameExtended    byte = 5
	frameEOF         byte = 6
	frameRequest     byte = 7 // want reply (1 byte), name (u32 length + bytes), payload
	frameSuccess     byte = 8 // payload
	frameFailure     byte = 9 // payload

	// V4 only (see the package doc).
	frameGlobalRequest byte = 10 // as frameRequest; ID: the request's
	frameGlobalSuccess byte = 11 // payload; ID: the request's
	frameGlobalFailure byte = 12 // payload; ID: the request's
	frameCredit        byte = 13 // u32: bytes more the peer may send
	frameClose         byte = 14
)

// headerBytes is a frame's header: type and payload length.
const headerBytes = 5

// MaxFrameBytes bounds one frame's payload (4 MiB): a larger one ends its
// stream as malformed. The host does not trust the guest, so a frame's
// memory is taken as its bytes arrive, never on the word of its header.
const MaxFrameBytes = 4 << 20

// maxOpening bounds the peer's streams whose first frame is being read at
// once; more wait in yamux's accept backlog (and beyond that are reset).
const maxOpening = 32

// dataChunk is the most data one frame carries. Each frame is one write on
// the stream, and with yamux's header one write on the byte stream
// (coalescer): 32 KiB in all, the most a Linux virtio-console port takes
// in one write (drivers/char/virtio_console.c).
const dataChunk = 32<<10 - headerBytes - yamuxHeaderBytes

// windowBytes is each stream's receive window (yamux's
// MaxStreamWindowSize): how much one channel may have in flight unread.
const windowBytes = 1 << 20

// bufferedBytes is how much received data a channel keeps per stream
// (data, extended data) before it stops reading its frames, which stops
// the window's updates: the sender then blocks, as an SSH channel's
// sender blocks on a full window.
const bufferedBytes = 1 << 20

// requestQueue is how many received requests a channel or connection
// queues before it stops reading.
const requestQueue = 16

// writeTimeout is yamux's ConnectionWriteTimeout: a frame that cannot be
// written to the byte stream for this long means the peer is gone.
const writeTimeout = 30 * time.Second

// yamuxConn is one end of a v3 link: link's frames on yamux streams.
type yamuxConn struct {
	sess  *yamux.Session
	chans chan NewChannel
	reqs  chan *Request
}

func config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false // a guest may be paused for any time
	c.ConnectionWriteTimeout = writeTimeout
	c.MaxStreamWindowSize = windowBytes
	c.StreamOpenTimeout = 0 // callers bound their opens with contexts
	c.LogOutput = io.Discard
	return c
}

func yamuxClient(rwc io.ReadWriteCloser) (*yamuxConn, <-chan NewChannel, <-chan *Request, error) {
	s, err := yamux.Client(&coalescer{ReadWriteCloser: rwc}, config())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("link: %w", err)
	}
	return start(s)
}

func yamuxServer(rwc io.ReadWriteCloser) (*yamuxConn, <-chan NewChannel, <-chan *Request, error) {
	s, err := yamux.Server(&coalescer{ReadWriteCloser: rwc}, config())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("link: %w", err)
	}
	return start(s)
}

func start(s *yamux.Session) (*yamuxConn, <-chan NewChannel, <-chan *Request, error) {
	c := &yamuxConn{sess: s, chans: make(chan NewChannel, requestQueue), reqs: make(chan *Request, requestQueue)}
	go c.accept()
	return c, c.chans, c.reqs, nil
}

// accept takes the peer's streams until the connection ends, then closes
// the delivery channels once every stream's first frame was delivered.
func (c *yamuxConn) accept() {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		close(c.chans)
		close(c.reqs)
	}()
	opening := make(chan struct{}, maxOpening)
	for {
		st, err := c.sess.AcceptStream()
		if err != nil {
			return
		}
		select {
		case opening <- struct{}{}:
		case <-c.sess.CloseChan():
			_ = st.Close()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.first(st)
			<-opening
		}()
	}
}

// first reads a stream's first frame and delivers what it opens.
func (c *yamuxConn) first(st *yamux.Stream) {
	typ, payload, err := readFrame(st)
	if err != nil {
		refuse(st)
		return
	}
	switch typ {
	case frameOpen:
		kind, extra, ok := cutString(payload)
		if !ok {
			_ = st.Close()
			return
		}
		select {
		case c.chans <- &newChannel{st: st, kind: kind, extra: extra}:
		case <-c.sess.CloseChan():
			_ = st.Close()
		}
	case frameRequest:
		want, name, body, ok := parseRequest(payload)
		if !ok {
			_ = st.Close()
			return
		}
		r := &Request{Type: name, WantReply: want, Payload: body}
		if want {
			r.reply = func(ok bool, p []byte) error {
				err := writeFrame(st, replyFrame(ok), p)
				_ = st.Close()
				return err
			}
		} else {
			_ = st.Close()
		}
		select {
		case c.reqs <- r:
		case <-c.sess.CloseChan():
			_ = st.Close()
		}
	default:
		_ = st.Close()
	}
}

// refuse ends a stream whose first frame was malformed: it closes this
// side, and reads and drops what the peer still sends (in the
// background), so the peer's writes end and it reads the close.
func refuse(st *yamux.Stream) {
	_ = st.Close()
	go func() { _, _ = io.Copy(io.Discard, st) }()
}

func (c *yamuxConn) SendRequest(ctx context.Context, name string, wantReply bool, payload []byte) (bool, []byte, error) {
	st, err := c.sess.OpenStream()
	if err != nil {
		return false, nil, fmt.Errorf("link: request %s: %w: %w", name, err, ErrClosed)
	}
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()
	if err := writeFrame(st, frameRequest, requestPayload(wantReply, name, payload)); err != nil {
		_ = st.Close()
		return false, nil, fmt.Errorf("link: request %s: %w: %w", name, err, ErrClosed)
	}
	if !wantReply {
		return false, nil, st.Close()
	}
	typ, resp, err := readFrame(st)
	_ = st.Close()
	if ctx.Err() != nil {
		return false, nil, ctx.Err()
	}
	if err != nil {
		return false, nil, fmt.Errorf("link: request %s: no reply: %w: %w", name, err, ErrClosed)
	}
	return typ == frameSuccess, resp, nil
}

func (c *yamuxConn) OpenChannel(ctx context.Context, kind string, extra []byte) (Channel, <-chan *Request, error) {
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, nil, fmt.Errorf("link: open %s: %w: %w", kind, err, ErrClosed)
	}
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()
	if err := writeFrame(st, frameOpen, appendString(nil, kind, extra)); err != nil {
		_ = st.Close()
		return nil, nil, fmt.Errorf("link: open %s: %w: %w", kind, err, ErrClosed)
	}
	typ, payload, err := readFrame(st)
	if ctx.Err() != nil {
		_ = st.Close()
		return nil, nil, ctx.Err()
	}
	if err != nil {
		_ = st.Close()
		return nil, nil, fmt.Errorf("link: open %s: %w: %w", kind, err, ErrClosed)
	}
	switch typ {
	case frameOpenConfirm:
		ch := newChan(st)
		return ch, ch.reqs, nil
	case frameOpenFailure:
		_ = st.Close()
		if len(payload) < 4 {
			return nil, nil, &OpenChannelError{Reason: ConnectionFailed}
		}
		return nil, nil, &OpenChannelError{Reason: RejectionReason(binary.BigEndian.Uint32(payload)), Message: string(payload[4:])}
	default:
		_ = st.Close()
		return nil, nil, fmt.Errorf("link: open %s: unexpected frame %d: %w", kind, typ, ErrClosed)
	}
}

// abort ends a stream whose caller gave up: blocked reads and writes
// return, and the peer sees its end.
func abort(st *yamux.Stream) {
	_ = st.SetDeadline(time.Unix(1, 0))
	_ = st.Close()
}

func (c *yamuxConn) Close() error {
	_ = c.sess.Close()
	return nil
}

func (c *yamuxConn) Wait() error {
	<-c.sess.CloseChan()
	return nil
}

// newChannel is a channel open received from the peer.
type newChannel struct {
	st    *yamux.Stream
	kind  string
	extra []byte
	once  sync.Once
}

func (n *newChannel) ChannelType() string { return n.kind }
func (n *newChannel) ExtraData() []byte   { return n.extra }

func (n *newChannel) Accept() (Channel, <-chan *Request, error) {
	var ch *channel
	err := ErrClosed
	n.once.Do(func() {
		if err = writeFrame(n.st, frameOpenConfirm, nil); err != nil {
			_ = n.st.Close()
			return
		}
		ch = newChan(n.st)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("link: accept %s: %w", n.kind, err)
	}
	return ch, ch.reqs, nil
}

func (n *newChannel) Reject(reason RejectionReason, message string) error {
	err := ErrClosed
	n.once.Do(func() {
		p := binary.BigEndian.AppendUint32(nil, uint32(reason))
		err = writeFrame(n.st, frameOpenFailure, append(p, message...))
		_ = n.st.Close()
	})
	return err
}

// replyFrame is the frame type that answers a request: success or failure.
func replyFrame(ok bool) byte {
	if ok {
		return frameSuccess
	}
	return frameFailure
}

// readFrame reads one frame from r.
func readFrame(r io.Reader) (byte, []byte, error) {
	var h [headerBytes]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFrameBytes {
		return 0, nil, fmt.Errorf("link: frame of %d bytes (at most %d)", n, MaxFrameBytes)
	}
	if n <= dataChunk+headerBytes {
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return 0, nil, unexpectedEOF(err)
		}
		return h[0], p, nil
	}
	// A large frame grows with what arrives.
	var b bytes.Buffer
	if k, err := io.CopyN(&b, r, int64(n)); err != nil || k != int64(n) {
		return 0, nil, unexpectedEOF(err)
	}
	return h[0], b.Bytes(), nil
}

func unexpectedEOF(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeFrame writes one frame in one write.
func writeFrame(w io.Writer, typ byte, payload []byte) error {
	b := make([]byte, headerBytes+len(payload))
	putHeader(b, typ, len(payload))
	copy(b[headerBytes:], payload)
	_, err := w.Write(b)
	return err
}

func putHeader(b []byte, typ byte, n int) {
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(n))
}

// appendString appends s with its u32 length, then rest.
func appendString(b []byte, s string, rest []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	b = append(b, s...)
	return append(b, rest...)
}

// cutString splits what appendString made.
func cutString(p []byte) (string, []byte, bool) {
	if len(p) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return "", nil, false
	}
	return string(p[4 : 4+n]), p[4+n:], true
}

func requestPayload(wantReply bool, name string, payload []byte) []byte {
	b := []byte{0}
	if wantReply {
		b[0] = 1
	}
	return appendString(b, name, payload)
}

func parseRequest(p []byte) (want bool, name string, payload []byte, ok bool) {
	if len(p) < 1 {
		return false, "", nil, false
	}
	name, payload, ok = cutString(p[1:])
	return p[0] == 1, name, payload, ok
}
