package tether

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPollReader: a pollReader reads what the writer wrote, then EOF once
// the write end closes; Close ends a Read that waits (on a non-blocking
// pipe, and on a blocking descriptor read through a duplicate, as a pty
// master is) within pollTimeoutMS and closes the descriptor.
func TestPollReader(t *testing.T) {
	r, w, err := newPollPipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = w.Write([]byte("one "))
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write([]byte("two"))
		w.Close()
	}()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "one two" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read after EOF: %v, want ErrClosed", err)
	}

	for _, blocking := range []bool{false, true} {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		var pr *pollReader
		if blocking {
			if pr, err = newPollReaderDup(fds[0]); err != nil {
				t.Fatal(err)
			}
			unix.Close(fds[0])
		} else {
			if err := unix.SetNonblock(fds[0], true); err != nil {
				t.Fatal(err)
			}
			pr = &pollReader{fd: fds[0]}
		}
		done := make(chan error, 1)
		go func() {
			_, err := pr.Read(make([]byte, 16))
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		pr.Close()
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("blocking %v: read ended with %v, want ErrClosed", blocking, err)
			}
			if d := time.Since(start); d > 5*pollTimeoutMS*time.Millisecond {
				t.Errorf("blocking %v: Close took %v to end the read", blocking, d)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("blocking %v: Close did not end the read", blocking)
		}
		// The reader's descriptor is closed: the write end sees no reader.
		if _, err := unix.Write(fds[1], []byte("x")); !errors.Is(err, unix.EPIPE) {
			t.Errorf("blocking %v: write after Close: %v, want EPIPE", blocking, err)
		}
		unix.Close(fds[1])
	}
}
