// Package spool holds one stream of a guest process's output (its stdout
// or its stderr) until the host has it, so that the process can outlive
// the host's connection: the daemon may restart, reconnect, and read on
// from where its own log ends, without losing or repeating a byte.
//
// A Spool numbers the bytes of its stream from 0 (offsets are int64 byte
// counts since the process started). The process side writes; any number
// of readers read from an offset of their choice; the host acknowledges
// an offset once it has stored everything before it, and only then are
// those bytes dropped. At most Limit unacknowledged bytes are kept: a
// writer beyond that blocks, which stops tether reading the process's
// pipe, so the process itself blocks on its next write once the pipe's
// buffer is full (the same back-pressure a slow `docker logs -f` reader
// never causes with Docker, but a missing host does).
//
// It owns no goroutines and uses the standard library only. Safe for
// concurrent use.
package spool

import (
	"errors"
	"sync"
)

// DefaultLimit is the unacknowledged bytes a spool keeps before its writer
// blocks: a daemon restart takes a few seconds, during which a chatty
// process keeps running; 1 MiB per stream costs little of a guest's RAM.
const DefaultLimit = 1 << 20

// ErrClosed is returned by Write after CloseWrite or Abort.
var ErrClosed = errors.New("spool: closed")

// Spool is one output stream's unacknowledged bytes. The zero value is
// not usable; call New.
type Spool struct {
	limit int

	mu      sync.Mutex
	buf     []byte // bytes from start on
	arr     []byte // the array buf was last compacted into (len 0)
	start   int64  // offset of buf[0]: everything before is acknowledged
	eof     bool   // the writer has finished
	aborted bool   // writers fail at once
	changed chan struct{}
}

// New returns an empty spool that keeps at most limit unacknowledged
// bytes (DefaultLimit if limit <= 0).
func New(limit int) *Spool {
	if limit <= 0 {
		limit = DefaultLimit
	}
	return &Spool{limit: limit, changed: make(chan struct{})}
}

// notifyLocked wakes every waiter. Caller holds mu.
func (s *Spool) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Write appends p, waiting while the spool holds its limit of
// unacknowledged bytes. It returns len(p) once all of p is in, or the
// count written and ErrClosed after CloseWrite or Abort.
func (s *Spool) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		s.mu.Lock()
		if s.eof || s.aborted {
			s.mu.Unlock()
			return n, ErrClosed
		}
		room := s.limit - len(s.buf)
		if room <= 0 {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			continue
		}
		k := min(room, len(p)-n)
		if len(s.buf)+k > cap(s.buf) && len(s.buf)+k <= cap(s.arr) {
			// Move what is held to the front of the array instead of
			// into a new one: the same memory stays warm (under TCG a
			// page the guest has not touched lately costs a software
			// TLB refill) and nothing is allocated.
			s.buf = s.arr[:copy(s.arr[:cap(s.arr)], s.buf)]
		}
		s.buf = append(s.buf, p[n:n+k]...)
		if cap(s.buf) > cap(s.arr) {
			s.arr = s.buf[:0]
		}
		n += k
		s.notifyLocked()
		s.mu.Unlock()
	}
	return n, nil
}

// Full reports whether a writer would wait now.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf) >= s.limit && !s.eof && !s.aborted
}

// CloseWrite marks the end of the stream: readers get EOF once they have
// read everything. Idempotent.
func (s *Spool) CloseWrite() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.eof {
		s.eof = true
		s.notifyLocked()
	}
}

// Abort ends the stream and makes blocked and later writers fail; what
// was written stays readable. Idempotent.
func (s *Spool) Abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aborted, s.eof = true, true
	s.notifyLocked()
}

// Ack drops the bytes before off: the host has stored them. Offsets
// outside what the spool holds are clamped (acknowledging an old offset
// again, or one past the end, is harmless).
func (s *Spool) Ack(off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := s.start + int64(len(s.buf))
	off = min(max(off, s.start), end)
	if off == s.start {
		return
	}
	// Dropping the front reslices rather than copies: the next append
	// that outgrows the array moves only the bytes still held, so each
	// byte is copied a bounded number of times however small the acks
	// (a non-resumable stream is acknowledged at every write).
	s.buf = s.buf[off-s.start:]
	if len(s.buf) == 0 {
		s.buf = s.arr[:0]
	}
	s.start = off
	s.notifyLocked()
}

// Bounds returns the first byte still held and the end of the stream so
// far (bytes written since the process started).
func (s *Spool) Bounds() (start, end int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start, s.start + int64(len(s.buf))
}

// Read copies bytes from offset off into p and returns their count and
// the offset they start at: off, or the first byte still held if off was
// acknowledged already (the caller learns of the gap from the offset).
// It waits for data while the stream is open; after the end it returns
// 0 and eof true. It gives up when cancel is closed (0, false).
func (s *Spool) Read(off int64, p []byte, cancel <-chan struct{}) (n int, at int64, eof bool) {
	for {
		s.mu.Lock()
		end := s.start + int64(len(s.buf))
		at = min(max(off, s.start), end)
		if at < end {
			n = copy(p, s.buf[at-s.start:])
			s.mu.Unlock()
			return n, at, false
		}
		if s.eof {
			s.mu.Unlock()
			return 0, at, true
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-cancel:
			return 0, at, false
		}
	}
}
