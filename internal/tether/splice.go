package tether

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceBytes is the most one write to the port carries through the
// splicer (256 KiB): a write of the link's (a frame, header included)
// becomes one virtqueue buffer of up to 64 pages.
const spliceBytes = 256 << 10

// portSplicer writes to the virtio-serial port through a pipe with
// splice(2). A write(2) on a port takes at most 32 KiB, each a virtqueue
// buffer, a notification of the VMM and an interrupt back; a splice from
// a pipe hands the port the pipe's pages as one buffer
// (port_fops_splice_write in Linux drivers/char/virtio_console.c, which
// takes the pages of an anonymous pipe without copying them), so 256 KiB
// costs what 32 KiB did. Not safe for concurrent use: the link writes one
// frame at a time.
type portSplicer struct {
	r, w int // the pipe
	port syscall.RawConn
	size int // the pipe's capacity
	off  bool
}

// newPortSplicer makes a splicer for port: nil, and an error saying why,
// if the pipe cannot be made or sized.
func newPortSplicer(port *os.File) (*portSplicer, error) {
	rc, err := port.SyscallConn()
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	s := &portSplicer{r: p[0], w: p[1], port: rc}
	n, err := unix.FcntlInt(uintptr(s.w), unix.F_SETPIPE_SZ, spliceBytes)
	if err != nil || n < spliceBytes {
		s.close()
		return nil, fmt.Errorf("pipe of %d bytes: %d, %v", spliceBytes, n, err)
	}
	s.size = n
	return s, nil
}

// write writes b to the port, at most the pipe's capacity at a time. On a
// port that takes no splice (EINVAL) it falls back to write(2), for this
// write and the ones after it.
func (s *portSplicer) write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		chunk := b[done:min(len(b), done+s.size)]
		if s.off {
			n, err := s.writeDirect(chunk)
			done += n
			if err != nil {
				return done, err
			}
			continue
		}
		// The pipe is empty: a write of at most its capacity does not
		// block.
		for k := 0; k < len(chunk); {
			n, err := unix.Write(s.w, chunk[k:])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return done, fmt.Errorf("splice pipe: %w", err)
			}
			k += n
		}
		moved, err := s.move(len(chunk))
		if errors.Is(err, unix.EINVAL) && moved == 0 {
			// Take the bytes back out of the pipe and write them.
			s.off = true
			_, _ = unix.Read(s.r, make([]byte, len(chunk)))
			continue
		}
		done += moved
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writeFrame writes header and payload to the port as one write: both go
// into the pipe with one writev(2), then to the port with splice(2).
// Larger than the pipe, or on a port that takes no splice, they are
// joined and written as write does.
func (s *portSplicer) writeFrame(header, payload []byte) error {
	n := len(header) + len(payload)
	if s.off || n > s.size {
		_, err := s.write(append(append(make([]byte, 0, n), header...), payload...))
		return err
	}
	iov := [][]byte{header, payload}
	for k := 0; k < n; {
		w, err := unix.Writev(s.w, iov)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("splice pipe: %w", err)
		}
		k += w
		iov = advance(iov, w)
	}
	moved, err := s.move(n)
	if errors.Is(err, unix.EINVAL) && moved == 0 {
		s.off = true
		buf := make([]byte, n)
		_, _ = unix.Read(s.r, buf)
		_, err = s.writeDirect(buf)
	}
	return err
}

// advance drops the first n bytes of iov.
func advance(iov [][]byte, n int) [][]byte {
	for n > 0 && len(iov) > 0 {
		k := min(n, len(iov[0]))
		iov[0] = iov[0][k:]
		n -= k
		if len(iov[0]) == 0 {
			iov = iov[1:]
		}
	}
	return iov
}

// move splices n bytes from the pipe to the port, waiting (in Go's
// poller, so the port's deadline applies) while the port's queue is full.
func (s *portSplicer) move(n int) (int, error) {
	moved := 0
	var serr error
	err := s.port.Write(func(fd uintptr) bool {
		for moved < n {
			k, err := unix.Splice(s.r, nil, int(fd), nil, n-moved, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case err == unix.EAGAIN:
				return false
			case err == unix.EINTR:
				continue
			case err != nil:
				serr = err
				return true
			}
			moved += int(k)
		}
		return true
	})
	if err == nil {
		err = serr
	}
	return moved, err
}

func (s *portSplicer) writeDirect(b []byte) (int, error) {
	n := 0
	var werr error
	err := s.port.Write(func(fd uintptr) bool {
		for n < len(b) {
			k, err := unix.Write(int(fd), b[n:])
			switch {
			case err == unix.EAGAIN:
				return false
			case err == unix.EINTR:
				continue
			case err != nil:
				werr = err
				return true
			}
			n += k
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return n, err
}

func (s *portSplicer) close() {
	_ = unix.Close(s.r)
	_ = unix.Close(s.w)
}
