package tether

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// TestDiskStream: the first n bytes of a file read with O_DIRECT come
// back whole, for lengths around the alignment and the chunk, on a file
// with zeros behind the stream and on one that ends unaligned right
// after it; a file shorter than the stream fails instead of ending early.
func TestDiskStream(t *testing.T) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	os.WriteFile(probe, make([]byte, transferAlign), 0o600)
	if d, err := openDirect(probe, 1); err != nil {
		t.Skipf("no O_DIRECT on %s: %v", dir, err)
	} else {
		d.Close()
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int64{0, 1, transferAlign - 1, transferAlign, transferAlign + 1, transferChunk - 1, transferChunk, transferChunk + 1, 3*transferChunk + 17} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.UintN(256))
		}
		for _, tail := range []int64{0, 5, transferChunk} {
			path := filepath.Join(dir, "disk")
			if err := os.WriteFile(path, append(append([]byte(nil), data...), make([]byte, tail)...), 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := openDirect(path, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := iotest.TestReader(d, data); err != nil {
				t.Errorf("%d bytes, %d behind: %v", n, tail, err)
			}
			d.Close()
		}
	}
	path := filepath.Join(dir, "short")
	os.WriteFile(path, make([]byte, 100), 0o600)
	d, err := openDirect(path, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got, err := io.ReadAll(d)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, make([]byte, 100)) {
		t.Errorf("a file shorter than the stream: %d bytes, %v; want 100 and an unexpected EOF", len(got), err)
	}
}
