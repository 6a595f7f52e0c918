package link

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// frameHeaderBytes is a V4 frame's header: type, ID, payload length.
const frameHeaderBytes = 9

// frameDataChunk is the most data one V4 frame carries: header and data
// are one write of 32 KiB, the most a Linux virtio-console port takes in
// one write (drivers/char/virtio_console.c).
const frameDataChunk = 32<<10 - frameHeaderBytes

// FrameSizer is a byte stream that takes large writes for no more per
// byte than small ones (tether's virtio port, written through a pipe with
// splice(2): one virtqueue buffer per write, not per 32 KiB). On one, V4
// data frames are up to FrameBytes bytes, header included (at most
// windowBytes), instead of 32 KiB.
type FrameSizer interface {
	FrameBytes() int
}

// FrameWriter is a byte stream that writes a frame's header and payload
// together without joining them first (writev(2)); V4 uses it instead of
// copying each frame into a buffer of its own.
type FrameWriter interface {
	WriteFrame(header, payload []byte) error
}

// StallBounded is a byte stream with no end-of-session signal of its
// own (a plain serial line: a peer that died says nothing), on which V4
// ends the connection when a frame stops arriving midway: while a frame's
// payload is incomplete, every read of the stream must return within
// FrameStall, or the reader fails with the read's deadline error and the
// connection ends as if the stream had closed. Between frames reads wait
// without a deadline (an idle link is no stall). Without this, a reader
// whose peer died while sending a frame would read the next peer's
// first bytes as the rest of that frame.
type StallBounded interface {
	// FrameStall is the longest a read may block mid-frame (seconds'
	// scale; at least a millisecond).
	FrameStall() time.Duration
	// SetReadDeadline is os.File's and net.Conn's: reads blocked past t
	// fail with os.ErrDeadlineExceeded; the zero time clears it.
	SetReadDeadline(t time.Time) error
}

// stallReader is readLoop's view of a StallBounded stream: while mid is
// set, every read carries a deadline FrameStall away; once mid is unset
// the deadline is cleared before the next read.
type stallReader struct {
	r     io.Reader
	sb    StallBounded
	mid   bool
	armed bool
}

func (s *stallReader) Read(b []byte) (int, error) {
	switch {
	case s.mid:
		if err := s.sb.SetReadDeadline(time.Now().Add(s.sb.FrameStall())); err != nil {
			return 0, err
		}
		s.armed = true
	case s.armed:
		if err := s.sb.SetReadDeadline(time.Time{}); err != nil {
			return 0, err
		}
		s.armed = false
	}
	return s.r.Read(b)
}

// creditStep is how much a V4 receiver lets its reader consume before it
// returns the credit to the sender: a quarter of the window, so a sender
// that is faster than the network of one VMM rarely waits.
const creditStep = windowBytes / 4

// readBufferBytes is the V4 reader's buffer on the byte stream: a
// virtio-serial port's receive buffer (a page; the guest's reads return
// at most one), and small enough that a payload of a data frame is read
// straight into its own slice (bufio reads past its buffer into the
// caller's) instead of through the buffer.
const readBufferBytes = 4 << 10

// errProtocol ends a V4 connection whose peer broke the framing: the byte
// stream cannot be trusted past a frame it does not understand.
var errProtocol = errors.New("link: protocol violation")

// frameConn is one end of a V4 link. One goroutine (readLoop) reads the
// byte stream and dispatches each frame; writers write whole frames under
// wmu. Every send to a delivery channel (newChans, reqs, a channel's reqs)
// is the reader's, and the reader closes them when it ends.
type frameConn struct {
	rwc    io.ReadWriteCloser
	client bool
	chunk  int         // the most data one frame carries
	fw     FrameWriter // rwc's, or nil

	wmu  sync.Mutex // one frame at a time on the byte stream
	wbuf []byte

	mu       sync.Mutex
	ended    bool                  // end ran: nothing more is registered
	chans    map[uint32]*frameChan // channels open or being opened, by ID
	pending  map[uint32]chan globalReply
	nextChan uint32
	nextReq  uint32

	newChans chan NewChannel
	reqs     chan *Request

	closeOnce sync.Once
	closed    chan struct{} // Close was called or the stream failed
	done      chan struct{} // end ran: everything delivered is closed
}

type globalReply struct {
	ok      bool
	payload []byte
}

func startFrames(rwc io.ReadWriteCloser, client bool) *frameConn {
	c := &frameConn{rwc: rwc, client: client, chans: map[uint32]*frameChan{}, pending: map[uint32]chan globalReply{},
		newChans: make(chan NewChannel, requestQueue), reqs: make(chan *Request, requestQueue),
		closed: make(chan struct{}), done: make(chan struct{})}
	// The client's IDs are odd, the server's even (as yamux's streams).
	c.chunk = frameDataChunk
	if fs, ok := rwc.(FrameSizer); ok {
		c.chunk = min(max(fs.FrameBytes(), 32<<10), windowBytes) - frameHeaderBytes
	}
	c.fw, _ = rwc.(FrameWriter)
	c.nextChan, c.nextReq = 2, 2
	if client {
		c.nextChan, c.nextReq = 1, 1
	}
	go c.readLoop()
	return c
}

// ours reports whether id is one this side allocates.
func (c *frameConn) ours(id uint32) bool { return (id%2 == 1) == c.client }

// write sends one frame. ErrClosed once the connection has ended.
func (c *frameConn) write(typ byte, id uint32, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	if c.fw != nil {
		var h [frameHeaderBytes]byte
		h[0] = typ
		binary.BigEndian.PutUint32(h[1:], id)
		binary.BigEndian.PutUint32(h[5:], uint32(len(payload)))
		if err := c.fw.WriteFrame(h[:], payload); err != nil {
			c.fail()
			return ErrClosed
		}
		return nil
	}
	n := frameHeaderBytes + len(payload)
	b := c.wbuf
	if n > frameHeaderBytes+c.chunk {
		b = make([]byte, n) // a large request: not kept
	} else if b == nil {
		c.wbuf = make([]byte, frameHeaderBytes+c.chunk)
		b = c.wbuf
	}
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], id)
	binary.BigEndian.PutUint32(b[5:], uint32(len(payload)))
	copy(b[frameHeaderBytes:], payload)
	if _, err := c.rwc.Write(b[:n]); err != nil {
		c.fail()
		return ErrClosed
	}
	return nil
}

// fail ends the connection: the byte stream is closed, so the reader
// ends and closes everything it delivered.
func (c *frameConn) fail() {
	c.closeOnce.Do(func() {
		close(c.closed)
		_ = c.rwc.Close()
	})
}

func (c *frameConn) Close() error {
	c.fail()
	return nil
}

func (c *frameConn) Wait() error {
	<-c.closed
	return nil
}

// readLoop reads frames until the byte stream ends or breaks the framing,
// then ends every channel and request.
func (c *frameConn) readLoop() {
	defer c.end()
	var stall *stallReader
	var src io.Reader = c.rwc
	if sb, ok := c.rwc.(StallBounded); ok {
		stall = &stallReader{r: c.rwc, sb: sb}
		src = stall
	}
	r := bufio.NewReaderSize(src, readBufferBytes)
	var h [frameHeaderBytes]byte
	for {
		if _, err := io.ReadFull(r, h[:1]); err != nil {
			return
		}
		if stall != nil {
			stall.mid = true // the rest of the header, then the payload
		}
		if _, err := io.ReadFull(r, h[1:]); err != nil {
			return
		}
		typ, id, n := h[0], binary.BigEndian.Uint32(h[1:]), binary.BigEndian.Uint32(h[5:])
		if n > MaxFrameBytes {
			return
		}
		p, err := readPayload(r, n)
		if err != nil {
			return
		}
		if stall != nil {
			stall.mid = false
		}
		if err := c.dispatch(typ, id, p); err != nil {
			return
		}
	}
}

// readPayload reads n bytes; a payload larger than a window (no data
// frame is) grows with what arrives, never on the word of its header.
func readPayload(r io.Reader, n uint32) ([]byte, error) {
	if n <= windowBytes {
		p := getPayload(int(n))
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, unexpectedEOF(err)
		}
		return p, nil
	}
	var b bytes.Buffer
	if k, err := io.CopyN(&b, r, int64(n)); err != nil || k != int64(n) {
		return nil, unexpectedEOF(err)
	}
	return b.Bytes(), nil
}

// end runs when the reader returns: the connection is closed, and every
// channel, pending request and delivery channel ends.
func (c *frameConn) end() {
	c.fail()
	c.mu.Lock()
	c.ended = true
	chans := c.chans
	c.chans = map[uint32]*frameChan{}
	pending := c.pending
	c.pending = map[uint32]chan globalReply{}
	c.mu.Unlock()
	for _, fc := range chans {
		fc.endByPeer()
	}
	for _, ch := range pending {
		close(ch)
	}
	close(c.newChans)
	close(c.reqs)
	close(c.done)
}

// dispatch handles one frame; an error ends the connection.
func (c *frameConn) dispatch(typ byte, id uint32, p []byte) error {
	switch typ {
	case frameOpen:
		return c.handleOpen(id, p)
	case frameGlobalRequest:
		want, name, body, ok := parseRequest(p)
		if !ok {
			return errProtocol
		}
		r := &Request{Type: name, WantReply: want, Payload: body}
		if want {
			r.reply = func(ok bool, payload []byte) error {
				typ := frameGlobalFailure
				if ok {
					typ = frameGlobalSuccess
				}
				return c.write(typ, id, payload)
			}
		}
		select {
		case c.reqs <- r:
			return nil
		case <-c.closed:
			return ErrClosed
		}
	case frameGlobalSuccess, frameGlobalFailure:
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- globalReply{ok: typ == frameGlobalSuccess, payload: p}
		}
		return nil
	}
	c.mu.Lock()
	fc := c.chans[id]
	if typ == frameClose && fc != nil {
		delete(c.chans, id)
	}
	c.mu.Unlock()
	if fc == nil {
		// A channel this side closed and forgot, or one never opened: a
		// frame the peer sent before it read the close.
		return nil
	}
	return fc.handle(typ, p)
}

// handleOpen registers the peer's new channel and delivers it.
func (c *frameConn) handleOpen(id uint32, p []byte) error {
	kind, extra, ok := cutString(p)
	if !ok || c.ours(id) {
		return errProtocol
	}
	c.mu.Lock()
	if c.chans[id] != nil {
		c.mu.Unlock()
		return errProtocol
	}
	fc := newFrameChan(c, id)
	c.chans[id] = fc
	c.mu.Unlock()
	select {
	case c.newChans <- &frameNewChannel{fc: fc, kind: kind, extra: extra}:
		return nil
	case <-c.closed:
		return ErrClosed
	}
}

// allocate returns a free ID of this side's from *next.
func (c *frameConn) allocate(next *uint32, inUse func(uint32) bool) uint32 {
	for {
		id := *next
		*next += 2
		if id != 0 && !inUse(id) {
			return id
		}
	}
}

func (c *frameConn) SendRequest(ctx context.Context, name string, wantReply bool, payload []byte) (bool, []byte, error) {
	body := requestPayload(wantReply, name, payload)
	if len(body) > MaxFrameBytes {
		return false, nil, fmt.Errorf("link: request %s: %w", name, ErrTooLarge)
	}
	var reply chan globalReply
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return false, nil, fmt.Errorf("link: request %s: %w", name, ErrClosed)
	}
	id := c.allocate(&c.nextReq, func(id uint32) bool { _, ok := c.pending[id]; return ok })
	if wantReply {
		reply = make(chan globalReply, 1)
		c.pending[id] = reply
	}
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
	if err := c.write(frameGlobalRequest, id, body); err != nil {
		forget()
		return false, nil, fmt.Errorf("link: request %s: %w", name, err)
	}
	if !wantReply {
		return false, nil, nil
	}
	select {
	case r, ok := <-reply:
		if !ok {
			return false, nil, fmt.Errorf("link: request %s: no reply: %w", name, ErrClosed)
		}
		return r.ok, r.payload, nil
	case <-ctx.Done():
		forget()
		return false, nil, ctx.Err()
	}
}

func (c *frameConn) OpenChannel(ctx context.Context, kind string, extra []byte) (Channel, <-chan *Request, error) {
	body := appendString(nil, kind, extra)
	if len(body) > MaxFrameBytes {
		return nil, nil, fmt.Errorf("link: open %s: %w", kind, ErrTooLarge)
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return nil, nil, fmt.Errorf("link: open %s: %w", kind, ErrClosed)
	}
	id := c.allocate(&c.nextChan, func(id uint32) bool { return c.chans[id] != nil })
	fc := newFrameChan(c, id)
	fc.opened = make(chan error, 1)
	c.chans[id] = fc
	c.mu.Unlock()
	if err := c.write(frameOpen, id, body); err != nil {
		return nil, nil, fmt.Errorf("link: open %s: %w", kind, err)
	}
	select {
	case err := <-fc.opened:
		if err != nil {
			return nil, nil, err
		}
		return fc, fc.reqs, nil
	case <-ctx.Done():
		// The peer may still confirm: the close that follows tells it
		// the channel is gone, and its close in answer frees the ID.
		_ = fc.Close()
		return nil, nil, ctx.Err()
	}
}

// frameChan is one V4 channel. The connection's reader fills its buffers
// and request queue; writers take credit, then write frames on the
// connection.
type frameChan struct {
	c    *frameConn
	id   uint32
	data *buffer
	ext  *buffer
	reqs chan *Request

	// opened receives the peer's answer to this side's open: nil for a
	// confirmation, an *OpenChannelError, or ErrClosed.
	opened chan error

	mu       sync.Mutex
	cond     *sync.Cond
	credit   int  // bytes this side may still send
	window   int  // bytes the peer may still send
	consumed int  // bytes read since credit was last returned
	sentEOF  bool // this side sent its EOF
	sentEnd  bool // this side sent its close
	peerGone bool // the peer's close arrived, or the connection ended

	wmu sync.Mutex // this channel's frames in order: data, EOF, requests, close

	reqMu   sync.Mutex // one channel request awaiting its reply at a time
	replies chan bool

	closeOnce sync.Once
	closed    chan struct{} // Close was called
	gone      chan struct{} // the peer's end (endByPeer)
}

func newFrameChan(c *frameConn, id uint32) *frameChan {
	fc := &frameChan{c: c, id: id, data: newBuffer(), ext: newBuffer(), reqs: make(chan *Request, requestQueue),
		credit: windowBytes, window: windowBytes, replies: make(chan bool, 1),
		closed: make(chan struct{}), gone: make(chan struct{})}
	fc.cond = sync.NewCond(&fc.mu)
	return fc
}

// handle is the reader's handling of one frame on this channel.
func (fc *frameChan) handle(typ byte, p []byte) error {
	switch typ {
	case frameOpenConfirm, frameOpenFailure:
		if fc.opened == nil {
			return errProtocol
		}
		var err error
		if typ == frameOpenFailure {
			err = &OpenChannelError{Reason: ConnectionFailed}
			if len(p) >= 4 {
				err = &OpenChannelError{Reason: RejectionReason(binary.BigEndian.Uint32(p)), Message: string(p[4:])}
			}
		}
		select {
		case fc.opened <- err:
		default: // answered twice
			return errProtocol
		}
		if typ == frameOpenFailure {
			fc.c.forget(fc.id)
			fc.endByPeer()
		}
	case frameData, frameExtended:
		fc.mu.Lock()
		if len(p) > fc.window {
			fc.mu.Unlock()
			return errProtocol // past the window it was given
		}
		fc.window -= len(p)
		fc.mu.Unlock()
		b := fc.data
		if typ == frameExtended {
			b = fc.ext
		}
		b.add(p)
	case frameEOF:
		fc.data.end()
		fc.ext.end()
	case frameCredit:
		if len(p) != 4 {
			return errProtocol
		}
		fc.mu.Lock()
		fc.credit += int(binary.BigEndian.Uint32(p))
		over := fc.credit > 2*windowBytes
		fc.cond.Broadcast()
		fc.mu.Unlock()
		if over {
			return errProtocol
		}
	case frameRequest:
		want, name, body, ok := parseRequest(p)
		if !ok {
			return errProtocol
		}
		r := &Request{Type: name, WantReply: want, Payload: body}
		if want {
			r.reply = func(ok bool, _ []byte) error { return fc.writeControl(replyFrame(ok), nil) }
		}
		select {
		case fc.reqs <- r:
		case <-fc.closed: // nobody will read it
		case <-fc.c.closed:
			return ErrClosed
		}
	case frameSuccess, frameFailure:
		select {
		case fc.replies <- typ == frameSuccess:
		default: // an answer nobody asked for
		}
	case frameClose:
		// dispatch has forgotten the ID; answer with ours unless sent,
		// from another goroutine: the reader never waits on a write,
		// which may wait on the peer's reader.
		fc.endByPeer()
		fc.mu.Lock()
		sent := fc.sentEnd
		fc.sentEnd = true
		fc.mu.Unlock()
		if !sent {
			go func() { _ = fc.c.write(frameClose, fc.id, nil) }()
		}
	default:
		// A frame type of a later framing: skipped.
	}
	return nil
}

// forget drops id from the connection's table.
func (c *frameConn) forget(id uint32) {
	c.mu.Lock()
	delete(c.chans, id)
	c.mu.Unlock()
}

// endByPeer ends the channel from the peer's side: reads return what is
// buffered and then io.EOF, writes fail, the request queue closes. Only
// the reader calls it (for the peer's close or failure, or the
// connection's end), once per channel.
func (fc *frameChan) endByPeer() {
	fc.mu.Lock()
	if fc.peerGone {
		fc.mu.Unlock()
		return
	}
	fc.peerGone = true
	fc.cond.Broadcast()
	fc.mu.Unlock()
	fc.data.end()
	fc.ext.end()
	close(fc.reqs)
	close(fc.gone)
	if fc.opened != nil {
		select {
		case fc.opened <- fmt.Errorf("link: open: %w", ErrClosed):
		default:
		}
	}
}

func (fc *frameChan) Read(b []byte) (int, error) {
	n, err := fc.data.read(b)
	fc.consume(n)
	return n, err
}

func (fc *frameChan) Write(b []byte) (int, error) { return fc.write(frameData, b) }

func (fc *frameChan) Stderr() io.ReadWriter { return frameStderr{fc} }

type frameStderr struct{ fc *frameChan }

func (s frameStderr) Read(b []byte) (int, error) {
	n, err := s.fc.ext.read(b)
	s.fc.consume(n)
	return n, err
}

func (s frameStderr) Write(b []byte) (int, error) { return s.fc.write(frameExtended, b) }

// consume counts n bytes read and returns credit to the peer each
// creditStep.
func (fc *frameChan) consume(n int) {
	if n == 0 {
		return
	}
	fc.mu.Lock()
	fc.consumed += n
	k := 0
	if fc.consumed >= creditStep && !fc.peerGone {
		k = fc.consumed
		fc.consumed = 0
		fc.window += k
	}
	fc.mu.Unlock()
	if k > 0 {
		_ = fc.c.write(frameCredit, fc.id, binary.BigEndian.AppendUint32(nil, uint32(k)))
	}
}

// usable reports, under mu, whether this side may still write.
func (fc *frameChan) usable() bool {
	select {
	case <-fc.closed:
		return false
	default:
	}
	return !fc.peerGone && !fc.sentEOF && !fc.sentEnd
}

// write sends b as frames of at most the connection's chunk, each within
// the credit the peer has given.
func (fc *frameChan) write(typ byte, b []byte) (int, error) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	n := 0
	for n < len(b) {
		fc.mu.Lock()
		for fc.credit == 0 && fc.usable() {
			fc.cond.Wait()
		}
		if !fc.usable() {
			fc.mu.Unlock()
			return n, ErrClosed
		}
		k := min(len(b)-n, fc.c.chunk, fc.credit)
		fc.credit -= k
		fc.mu.Unlock()
		if err := fc.c.write(typ, fc.id, b[n:n+k]); err != nil {
			return n, ErrClosed
		}
		n += k
	}
	return n, nil
}

// writeControl sends one frame that is not data (EOF, a request, a
// reply): after this side's EOF too, not after either side's close.
func (fc *frameChan) writeControl(typ byte, payload []byte) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.mu.Lock()
	ok := !fc.isClosed() && !fc.sentEnd && !fc.peerGone
	if ok && typ == frameEOF {
		fc.sentEOF = true
		fc.cond.Broadcast()
	}
	fc.mu.Unlock()
	if !ok {
		return ErrClosed
	}
	return fc.c.write(typ, fc.id, payload)
}

func (fc *frameChan) isClosed() bool {
	select {
	case <-fc.closed:
		return true
	default:
		return false
	}
}

func (fc *frameChan) CloseWrite() error { return fc.writeControl(frameEOF, nil) }

func (fc *frameChan) SendRequest(name string, wantReply bool, payload []byte) (bool, error) {
	if wantReply {
		fc.reqMu.Lock()
		defer fc.reqMu.Unlock()
	}
	if err := fc.writeControl(frameRequest, requestPayload(wantReply, name, payload)); err != nil {
		return false, err
	}
	if !wantReply {
		return false, nil
	}
	select {
	case ok := <-fc.replies:
		return ok, nil
	case <-fc.gone:
		select {
		case ok := <-fc.replies:
			return ok, nil
		default:
			return false, ErrClosed
		}
	case <-fc.closed:
		return false, ErrClosed
	}
}

// Close ends the channel: local reads return io.EOF, writes fail, the
// peer reads the end after what was sent; its close in answer frees the
// ID. Idempotent.
func (fc *frameChan) Close() error {
	fc.closeOnce.Do(func() {
		close(fc.closed)
		fc.data.discard()
		fc.ext.discard()
		fc.mu.Lock()
		send := !fc.sentEnd && !fc.peerGone
		fc.sentEnd = true
		fc.cond.Broadcast() // a writer waiting for credit gives up
		fc.mu.Unlock()
		if send {
			// After the frame being written, if any.
			fc.wmu.Lock()
			_ = fc.c.write(frameClose, fc.id, nil)
			fc.wmu.Unlock()
		}
	})
	return nil
}

// frameNewChannel is a channel open received from the peer.
type frameNewChannel struct {
	fc    *frameChan
	kind  string
	extra []byte
	once  sync.Once
}

func (n *frameNewChannel) ChannelType() string { return n.kind }
func (n *frameNewChannel) ExtraData() []byte   { return n.extra }

func (n *frameNewChannel) Accept() (Channel, <-chan *Request, error) {
	err := ErrClosed
	n.once.Do(func() {
		select {
		case <-n.fc.gone:
			return
		default:
		}
		err = n.fc.c.write(frameOpenConfirm, n.fc.id, nil)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("link: accept %s: %w", n.kind, err)
	}
	return n.fc, n.fc.reqs, nil
}

func (n *frameNewChannel) Reject(reason RejectionReason, message string) error {
	err := ErrClosed
	n.once.Do(func() {
		n.fc.c.forget(n.fc.id)
		n.fc.mu.Lock()
		n.fc.sentEnd = true
		n.fc.mu.Unlock()
		p := binary.BigEndian.AppendUint32(nil, uint32(reason))
		err = n.fc.c.write(frameOpenFailure, n.fc.id, append(p, message...))
	})
	return err
}
