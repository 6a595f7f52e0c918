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
//
// The bytes are kept in a ring: acknowledging drops bytes from the front
// without moving the rest, and a write lands after them, wrapping at the
// ring's end. (A linear buffer compacted when it reached its end moved up
// to three quarters of the limit for every quarter written when the host
// acknowledged a full spool a quarter at a time: under TCG, most of a
// main process's output cost in the guest.)
type Spool struct {
	limit int

	mu      sync.Mutex
	ring    []byte // grows up to limit bytes, never shrinks
	head    int    // index in ring of the byte at offset start
	size    int    // bytes held, from head on, wrapping
	start   int64  // offset of the first byte held: everything before is acknowledged
	eof     bool   // the writer has finished
	aborted bool   // writers fail at once
	changed chan struct{}
}

// minRing is the smallest ring a spool allocates (bytes): a short
// output (a line, an error message) needs no more.
const minRing = 4 << 10

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

// growLocked makes the ring hold at least n bytes (n <= limit): twice as
// large, at most limit, the held bytes moved to its front. Caller holds
// mu.
func (s *Spool) growLocked(n int) {
	if n <= len(s.ring) {
		return
	}
	ring := make([]byte, min(s.limit, max(n, 2*len(s.ring), minRing)))
	s.copyOutLocked(ring, 0, s.size)
	s.ring, s.head = ring, 0
}

// copyOutLocked copies n held bytes from the i-th on into p. Caller holds
// mu.
func (s *Spool) copyOutLocked(p []byte, i, n int) int {
	pos := s.head + i
	if pos >= len(s.ring) {
		pos -= len(s.ring)
	}
	k := copy(p[:n], s.ring[pos:])
	if k < n {
		k += copy(p[k:n], s.ring)
	}
	return k
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
		room := s.limit - s.size
		if room <= 0 {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			continue
		}
		k := min(room, len(p)-n)
		s.growLocked(s.size + k)
		tail := s.head + s.size
		if tail >= len(s.ring) {
			tail -= len(s.ring)
		}
		c := copy(s.ring[tail:], p[n:n+k])
		copy(s.ring, p[n+c:n+k])
		s.size += k
		n += k
		s.notifyLocked()
		s.mu.Unlock()
	}
	return n, nil
}

// Space waits for room in the spool and returns where the next bytes
// of the stream go: at most most bytes of the ring, contiguous, for one
// writer to fill (a read of the process's pipe straight into the ring,
// without a copy through a buffer of its own) and then Commit. A ring
// below its limit grows (its held bytes moved to the front) when its
// room in one piece is under most; a ring at its limit may return less
// than most, the room up to its end, and the rest after it. Between
// Space and Commit no other write may happen. ErrClosed after CloseWrite
// or Abort.
func (s *Spool) Space(most int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.eof || s.aborted {
			return nil, ErrClosed
		}
		if s.size < s.limit {
			break
		}
		ch := s.changed
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
	want := min(most, s.limit-s.size)
	switch {
	case s.size+want > len(s.ring):
		s.growLocked(s.size + want)
	case s.contiguousLocked() < want && len(s.ring) < s.limit:
		s.growLocked(len(s.ring) + 1) // twice as large, the room then in one piece
	}
	tail := s.head + s.size
	if tail >= len(s.ring) {
		tail -= len(s.ring)
	}
	return s.ring[tail : tail+min(want, s.contiguousLocked())], nil
}

// contiguousLocked is the free room after the held bytes up to the
// ring's end or its head, whichever comes first. Caller holds mu.
func (s *Spool) contiguousLocked() int {
	tail := s.head + s.size
	if tail >= len(s.ring) {
		return s.head - (tail - len(s.ring))
	}
	return len(s.ring) - tail
}

// Commit adds the first n bytes of the room Space returned to the
// stream. After CloseWrite or Abort it drops them (ErrClosed).
func (s *Spool) Commit(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eof || s.aborted {
		return ErrClosed
	}
	if n > 0 {
		s.size += n
		s.notifyLocked()
	}
	return nil
}

// Full reports whether a writer would wait now.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size >= s.limit && !s.eof && !s.aborted
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
	end := s.start + int64(s.size)
	off = min(max(off, s.start), end)
	if off == s.start {
		return
	}
	d := int(off - s.start)
	s.head += d
	if s.head >= len(s.ring) {
		s.head -= len(s.ring)
	}
	// The head moves on even when nothing is left: a writer may be
	// filling the room after the tail it was given (Space).
	s.size -= d
	s.start = off
	s.notifyLocked()
}

// Bounds returns the first byte still held and the end of the stream so
// far (bytes written since the process started).
func (s *Spool) Bounds() (start, end int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start, s.start + int64(s.size)
}

// Peek returns held bytes from offset off, or from the first byte still
// held if off was acknowledged already (the caller learns of the gap from
// the offset at), at most most of them, contiguous in the ring, for the
// caller to send without a copy. It waits for data while the stream is
// open; after the end it returns nil and eof true. It gives up when
// cancel is closed (nil, false). The bytes stay as they are until acknowledged —
// writes only fill the room after them, and a ring that grows is a new
// array — so the slice may be used until the caller's own Ack of them
// (or, for a stream the host acknowledges, until the host has them).
func (s *Spool) Peek(off int64, most int, cancel <-chan struct{}) (p []byte, at int64, eof bool) {
	for {
		s.mu.Lock()
		end := s.start + int64(s.size)
		at = min(max(off, s.start), end)
		if at < end {
			pos := s.head + int(at-s.start)
			if pos >= len(s.ring) {
				pos -= len(s.ring)
			}
			n := min(most, int(end-at), len(s.ring)-pos)
			p = s.ring[pos : pos+n : pos+n]
			s.mu.Unlock()
			return p, at, false
		}
		if s.eof {
			s.mu.Unlock()
			return nil, at, true
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-cancel:
			return nil, at, false
		}
	}
}
