package tether

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// pollReader reads a process's output (the read end of its pipe, or a
// descriptor of its pty master) with poll(2) and read(2) on a descriptor
// of its own that Go's netpoller never sees.
//
// A descriptor in the netpoller (os.Pipe's, os.OpenFile's of a tty) is
// registered with epoll for its life, so every write of the process
// wakes the runtime's poller, even while the copier sleeps to let output
// gather: under TCG a wake-up costs ~100 µs of the guest's one vCPU, and
// a shell printing 20,000 short lines took 3.3 s through a pipe and
// 5.5 s through a pty, against 0.6 s to /dev/null. Waiting in poll(2)
// only while there is nothing to read leaves the writer alone between
// reads.
//
// Read returns io.EOF at the pipe's EOF and os.ErrClosed once Close was
// called; the descriptor is never closed under a Read in progress. One
// reader at a time.
type pollReader struct {
	fd      int
	stopped atomic.Bool

	mu      sync.Mutex
	reading bool // a Read is in progress
	closed  bool // fd is closed
}

// pollTimeoutMS bounds how long a Read waits before it looks at Close.
const pollTimeoutMS = 100

// newPollPipe makes a pipe whose write end, an *os.File, goes to the
// process and whose read end is a pollReader.
func newPollPipe() (*pollReader, *os.File, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, nil, err
	}
	// The write end is the process's: blocking, as a program expects.
	if err := unix.SetNonblock(fds[1], false); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, err
	}
	return &pollReader{fd: fds[0]}, os.NewFile(uintptr(fds[1]), "|1"), nil
}

// newPollReaderDup reads what fd reads, through a duplicate of it (so
// the caller may close fd whenever it likes); fd must not be in the
// netpoller (an *os.File made by os.NewFile of a blocking descriptor).
func newPollReaderDup(fd int) (*pollReader, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &pollReader{fd: d}, nil
}

// Read implements io.Reader.
func (p *pollReader) Read(b []byte) (int, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, os.ErrClosed
	}
	p.reading = true
	p.mu.Unlock()
	n, err := p.read(b)
	p.mu.Lock()
	p.reading = false
	if err != nil || p.stopped.Load() {
		p.closeLocked()
	}
	p.mu.Unlock()
	if n == 0 && err == nil {
		err = os.ErrClosed
	}
	return n, err
}

// read waits in poll(2) until there is something to read (data, EOF
// or an error), then reads; (0, nil) when Close was called. It never
// reads before poll(2) says so, so a blocking descriptor (a pty
// master's) never holds it past pollTimeoutMS after Close.
func (p *pollReader) read(b []byte) (int, error) {
	for !p.stopped.Load() {
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, pollTimeoutMS)
		if errors.Is(err, unix.EINTR) || err == nil && n == 0 {
			continue
		}
		if err != nil {
			return 0, err
		}
		k, err := unix.Read(p.fd, b)
		switch {
		case k > 0:
			return k, nil
		case err == nil:
			return 0, io.EOF
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue
		default:
			return 0, err
		}
	}
	return 0, nil
}

// closeLocked closes the descriptor once. Caller holds p.mu.
func (p *pollReader) closeLocked() {
	if !p.closed {
		p.closed = true
		unix.Close(p.fd)
	}
}

// Close makes a Read in progress return os.ErrClosed (within
// pollTimeoutMS), which then closes the descriptor; with no Read in
// progress it closes it at once. Safe from any goroutine, more than once.
func (p *pollReader) Close() error {
	p.stopped.Store(true)
	p.mu.Lock()
	if !p.reading {
		p.closeLocked()
	}
	p.mu.Unlock()
	return nil
}
