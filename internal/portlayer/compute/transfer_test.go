package compute

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestSpool: an archive below the minimum stays in memory; one between
// the bounds is spooled whole to a file; a longer one is spooled up to
// the maximum and marked incomplete; a spool that cannot be written
// leaves the archive to the channel; a client's read error fails. In
// every case rest gives back the whole stream in order.
func TestSpool(t *testing.T) {
	const lo, hi = 1000, 5000
	data := make([]byte, 8000)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.UintN(256))
	}
	for _, tc := range []struct {
		name           string
		size           int
		dir            func(t *testing.T) string
		file, complete bool
	}{
		{"empty", 0, nil, false, true},
		{"small", lo - 1, nil, false, true},
		{"at the minimum", lo, nil, true, true},
		{"between", 3000, nil, true, true},
		{"at the maximum", hi, nil, true, true},
		{"beyond the maximum", hi + 1, nil, true, false},
		{"much beyond", 8000, nil, true, false},
		{"no spool directory", 3000, func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "file")
			os.WriteFile(f, nil, 0o600)
			return filepath.Join(f, "sub") // under a file: cannot be made
		}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "transfers")
			if tc.dir != nil {
				dir = tc.dir(t)
			}
			src := bytes.NewReader(data[:tc.size])
			sp, err := spool(dir, src, lo, hi)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.remove()
			if (sp.file != nil) != tc.file || sp.complete != tc.complete {
				t.Fatalf("file %v complete %v, want %v %v", sp.file != nil, sp.complete, tc.file, tc.complete)
			}
			if sp.file != nil && sp.size != int64(min(tc.size, hi)) {
				t.Errorf("spooled %d bytes, want %d", sp.size, min(tc.size, hi))
			}
			got, err := io.ReadAll(sp.rest(src))
			if err != nil || !bytes.Equal(got, data[:tc.size]) {
				t.Fatalf("rest: %d bytes (%v), want the %d of the stream", len(got), err, tc.size)
			}
			if sp.file != nil {
				name := sp.file.Name()
				sp.remove()
				if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("spool file left after remove: %v", err)
				}
			}
		})
	}
	t.Run("client error", func(t *testing.T) {
		boom := errors.New("client gone")
		for _, n := range []int{10, 3000} {
			sp, err := spool(t.TempDir(), io.MultiReader(bytes.NewReader(data[:n]), errReader{boom}), lo, hi)
			if !errors.Is(err, boom) {
				t.Errorf("after %d bytes: err %v, want the client's", n, err)
			}
			sp.remove()
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
