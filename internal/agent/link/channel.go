package link

import (
	"io"
	"sync"

	"github.com/hashicorp/yamux"
)

// channel is an open channel on one yamux stream. One goroutine (demux)
// reads the stream's frames into the data and extended-data buffers, the
// request queue and the pending reply; writers share one mutex so frames
// never interleave.
type channel struct {
	st   *yamux.Stream
	data *buffer
	ext  *buffer
	reqs chan *Request

	wmu  sync.Mutex // one frame at a time on the stream
	wbuf []byte     // a data frame being written, under wmu

	reqMu   sync.Mutex // one channel request awaiting its reply at a time
	replies chan bool  // the peer's answers, in order

	closeOnce sync.Once
	closed    chan struct{} // Close was called
	gone      chan struct{} // the stream ended (demux returned)
}

func newChan(st *yamux.Stream) *channel {
	ch := &channel{st: st, data: newBuffer(), ext: newBuffer(), reqs: make(chan *Request, requestQueue),
		replies: make(chan bool, 1), closed: make(chan struct{}), gone: make(chan struct{})}
	go ch.demux()
	return ch
}

// demux reads frames until the stream ends, then ends the channel: both
// buffers at EOF, the request queue closed, a pending request failed, and
// the stream closed on this side too.
func (ch *channel) demux() {
	defer func() {
		ch.data.end()
		ch.ext.end()
		close(ch.reqs)
		close(ch.gone)
		_ = ch.st.Close()
	}()
	for {
		typ, p, err := readFrame(ch.st)
		if err != nil {
			return
		}
		switch typ {
		case frameData:
			if !ch.data.put(p, ch.closed) {
				ch.drain()
				return
			}
		case frameExtended:
			if !ch.ext.put(p, ch.closed) {
				ch.drain()
				return
			}
		case frameEOF:
			ch.data.end()
			ch.ext.end()
		case frameRequest:
			want, name, body, ok := parseRequest(p)
			if !ok {
				return
			}
			r := &Request{Type: name, WantReply: want, Payload: body}
			if want {
				r.reply = func(ok bool, _ []byte) error {
					return ch.writeControl(replyFrame(ok), nil)
				}
			}
			select {
			case ch.reqs <- r:
			case <-ch.closed:
				ch.drain()
				return
			}
		case frameSuccess, frameFailure:
			select {
			case ch.replies <- typ == frameSuccess:
			default: // an answer nobody asked for
			}
		default:
			return
		}
	}
}

// drain reads and drops what the peer still sends after a local Close, so
// its writes do not block on a window nobody reads, until its close.
func (ch *channel) drain() {
	buf := make([]byte, 32<<10)
	for {
		if _, err := ch.st.Read(buf); err != nil {
			return
		}
	}
}

func (ch *channel) Read(b []byte) (int, error) { return ch.data.read(b) }

func (ch *channel) Write(b []byte) (int, error) { return ch.write(frameData, b) }

func (ch *channel) Stderr() io.ReadWriter { return stderr{ch} }

type stderr struct{ ch *channel }

func (s stderr) Read(b []byte) (int, error)  { return s.ch.ext.read(b) }
func (s stderr) Write(b []byte) (int, error) { return s.ch.write(frameExtended, b) }

// write sends b as frames of at most dataChunk bytes.
func (ch *channel) write(typ byte, b []byte) (int, error) {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	if ch.isClosed() {
		return 0, ErrClosed
	}
	if ch.wbuf == nil {
		ch.wbuf = make([]byte, headerBytes+dataChunk)
	}
	n := 0
	for n < len(b) {
		k := min(len(b)-n, dataChunk)
		putHeader(ch.wbuf, typ, k)
		copy(ch.wbuf[headerBytes:], b[n:n+k])
		if _, err := ch.st.Write(ch.wbuf[:headerBytes+k]); err != nil {
			return n, ErrClosed
		}
		n += k
	}
	return n, nil
}

// writeControl sends one frame that is not data.
func (ch *channel) writeControl(typ byte, payload []byte) error {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	if ch.isClosed() {
		return ErrClosed
	}
	if err := writeFrame(ch.st, typ, payload); err != nil {
		return ErrClosed
	}
	return nil
}

func (ch *channel) isClosed() bool {
	select {
	case <-ch.closed:
		return true
	case <-ch.gone:
		return true
	default:
		return false
	}
}

func (ch *channel) CloseWrite() error { return ch.writeControl(frameEOF, nil) }

func (ch *channel) SendRequest(name string, wantReply bool, payload []byte) (bool, error) {
	if wantReply {
		ch.reqMu.Lock()
		defer ch.reqMu.Unlock()
	}
	if err := ch.writeControl(frameRequest, requestPayload(wantReply, name, payload)); err != nil {
		return false, err
	}
	if !wantReply {
		return false, nil
	}
	select {
	case ok := <-ch.replies:
		return ok, nil
	case <-ch.gone:
		// An answer may have come just before the end.
		select {
		case ok := <-ch.replies:
			return ok, nil
		default:
			return false, ErrClosed
		}
	case <-ch.closed:
		return false, ErrClosed
	}
}

// Close ends the channel: local reads return io.EOF, writes fail, the
// peer reads the end after what was sent. Idempotent.
func (ch *channel) Close() error {
	ch.closeOnce.Do(func() {
		close(ch.closed)
		ch.data.discard()
		ch.ext.discard()
		// Take the write lock so the close follows a frame being written.
		ch.wmu.Lock()
		_ = ch.st.Close()
		ch.wmu.Unlock()
	})
	return nil
}

// buffer is one stream's received data: chunks in order, at most
// bufferedBytes of them, then EOF.
type buffer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	head   int // bytes of chunks[0] already read
	size   int
	eof    bool
}

func newBuffer() *buffer {
	b := &buffer{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// put appends p, waiting while the buffer is full; false if the channel
// was closed meanwhile. After EOF the data is dropped.
func (b *buffer) put(p []byte, closed <-chan struct{}) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.size >= bufferedBytes && !b.eof {
		b.cond.Wait()
	}
	select {
	case <-closed:
		return false
	default:
	}
	if b.eof || len(p) == 0 {
		return true
	}
	b.chunks = append(b.chunks, p)
	b.size += len(p)
	b.cond.Broadcast()
	return true
}

// add appends p without waiting: in V4 the channel's window bounds what
// arrives. After EOF the data is dropped.
func (b *buffer) add(p []byte) {
	b.mu.Lock()
	if !b.eof && len(p) > 0 {
		b.chunks = append(b.chunks, p)
		b.size += len(p)
		b.cond.Broadcast()
	}
	b.mu.Unlock()
}

// end marks EOF: readers get what is buffered, then io.EOF.
func (b *buffer) end() {
	b.mu.Lock()
	b.eof = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

// discard drops what is buffered and marks EOF.
func (b *buffer) discard() {
	b.mu.Lock()
	b.chunks, b.head, b.size, b.eof = nil, 0, 0, true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *buffer) read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.chunks) == 0 && !b.eof {
		b.cond.Wait()
	}
	if len(b.chunks) == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && len(b.chunks) > 0 {
		c := b.chunks[0]
		k := copy(p[n:], c[b.head:])
		n += k
		b.head += k
		if b.head == len(c) {
			putPayload(c)
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
			b.head = 0
		}
	}
	b.size -= n
	b.cond.Broadcast()
	return n, nil
}

// payloadPools keep V4 data payloads of the two sizes that carry bulk
// data (a 32 KiB frame's, a 256 KiB spliced frame's) for reuse once a
// reader has consumed them: at 100 MiB/s a fresh allocation per frame is
// most of the host's garbage.
var payloadPools = [...]struct {
	size int
	pool sync.Pool
}{{size: 32 << 10}, {size: 256 << 10}}

// getPayload returns a slice of n bytes, from a pool when one holds
// payloads of at least n bytes (the contents are not zeroed).
func getPayload(n int) []byte {
	for i := range payloadPools {
		pp := &payloadPools[i]
		if n <= pp.size {
			if b, ok := pp.pool.Get().(*[]byte); ok {
				return (*b)[:n]
			}
			return make([]byte, n, pp.size)
		}
	}
	return make([]byte, n)
}

// putPayload gives back a payload that getPayload returned, once nothing
// refers to it; other slices are left to the collector.
func putPayload(b []byte) {
	for i := range payloadPools {
		pp := &payloadPools[i]
		if cap(b) == pp.size {
			b = b[:0]
			pp.pool.Put(&b)
			return
		}
	}
}
