package tether

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/vchproject/vch/internal/agent/wire"
)

// marks encodes ns as a ChannelArchivePutDisk channel's marks, then the
// channel data after an ArchiveDiskRest mark, if any.
func marks(ns []uint64, rest []byte) []byte {
	var b []byte
	for _, n := range ns {
		b = binary.BigEndian.AppendUint64(b, n)
	}
	return append(b, rest...)
}

// TestDiskStream: a stream read with O_DIRECT from a file up to the host's
// marks comes back whole, for marks around the alignment and the chunk,
// unaligned and repeated, with garbage past the last mark, and with the
// rest of the stream on the channel after ArchiveDiskRest; marks that end
// without ArchiveDiskEnd (an upload the host gave up), a mark that goes
// back, a cut mark and a mark past the file's end fail.
func TestDiskStream(t *testing.T) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	os.WriteFile(probe, make([]byte, transferAlign), 0o600)
	if d, err := openDirect(probe, nil); err != nil {
		t.Skipf("no O_DIRECT on %s: %v", dir, err)
	} else {
		d.Close()
	}
	r := rand.New(rand.NewPCG(5, 6))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return b
	}
	const a, c, end = transferAlign, transferChunk, wire.ArchiveDiskEnd
	for _, tc := range []struct {
		name  string
		marks []uint64
		rest  int // bytes of the stream on the channel after the marks
	}{
		{"none", []uint64{end}, 0},
		{"zero", []uint64{0, end}, 0},
		{"one byte", []uint64{1, end}, 0},
		{"around the alignment", []uint64{a - 1, a, a + 1, 2*a + 7, end}, 0},
		{"repeated", []uint64{5, 5, 5, a + 3, a + 3, end}, 0},
		{"around the chunk", []uint64{c - 1, c, c + 1, end}, 0},
		{"one big mark", []uint64{3*c + 17, end}, 0},
		{"many small marks", []uint64{100, 200, 4000, 4100, 9000, c + 5000, 2*c + 1, end}, 0},
		{"rest on the channel", []uint64{a + 9, wire.ArchiveDiskRest}, 3*a + 1},
		{"rest only", []uint64{wire.ArchiveDiskRest}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var onDisk uint64
			var ms []uint64
			for _, m := range tc.marks {
				if m != wire.ArchiveDiskRest && m != end {
					onDisk = m
				}
				ms = append(ms, m)
			}
			want := random(int(onDisk) + tc.rest)
			// Past the last mark: bytes the host has not marked yet.
			img := append(append([]byte(nil), want[:onDisk]...), random(3*a)...)
			path := filepath.Join(t.TempDir(), "disk")
			if err := os.WriteFile(path, img, 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := openDirect(path, bytes.NewReader(marks(ms, want[onDisk:])))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := iotest.TestReader(d, want); err != nil {
				t.Error(err)
			}
		})
	}
	path := filepath.Join(dir, "bad")
	os.WriteFile(path, random(2*a), 0o600)
	for _, tc := range []struct {
		name, want string
		marks      []byte
	}{
		{"no end", "before its end", marks([]uint64{20, a}, nil)},
		{"no marks", "before its end", nil},
		{"mark goes back", "mark 10 after 20", marks([]uint64{20, 10}, nil)},
		{"cut mark", "read mark", marks([]uint64{20}, []byte{0, 0, 1})},
		{"past the file's end", "read transfer disk", marks([]uint64{3 * a, wire.ArchiveDiskEnd}, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := openDirect(path, bytes.NewReader(tc.marks))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if _, err := io.ReadAll(d); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}
