package tether

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"syscall"
	"testing"
)

// TestPortSplicer: writes and frames of any size reach the other end
// whole and in order through the pipe. A Unix socket stands in for the
// port (splice(2) to a socket is the same path as to a virtio port: the
// pipe's pages handed over, not copied by us).
func TestPortSplicer(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	port, peer := os.NewFile(uintptr(fds[0]), "port"), os.NewFile(uintptr(fds[1]), "peer")
	defer port.Close()
	defer peer.Close()
	sp, err := newPortSplicer(port)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	var want bytes.Buffer
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	for _, n := range []int{1, 9, 4096, 32 << 10, spliceBytes - 9, spliceBytes, spliceBytes + 1, 3 * spliceBytes} {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		if k, err := sp.write(b); err != nil || k != n {
			t.Fatalf("write %d: %d %v", n, k, err)
		}
		want.Write(b)
		h := []byte{byte(n), 1, 2, 3, 4, 5, 6, 7, 8}
		if err := sp.writeFrame(h, b); err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
		want.Write(h)
		want.Write(b)
	}
	if sp.off {
		t.Fatal("the splicer fell back to write(2)")
	}
	port.Close()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("read %d bytes, want %d, the same", len(b), want.Len())
	}
}
