package build

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

type tarEntry struct {
	name, body string
	dir        bool
}

func makeTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(100, 0)}
		if e.dir {
			h.Typeflag, h.Size, h.Mode = tar.TypeDir, 0, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

// changesArchives serves ChangesLayer from a settable tar.
type changesArchives struct {
	portlayer.Archives
	changes []byte
}

func (a *changesArchives) ChangesLayer(context.Context, string) (portlayer.Container, io.ReadCloser, error) {
	return portlayer.Container{}, io.NopCloser(bytes.NewReader(a.changes)), nil
}

// A step's layer is what changed since the last snapshot: changed and new
// entries, whiteouts the guest reported, and whiteouts for paths gone
// (only the topmost of a gone directory).
func TestDelta(t *testing.T) {
	arch := &changesArchives{}
	root := t.TempDir()
	os.Mkdir(root+"/tmp", 0o700)
	b := &builder{rt: &Router{root: root, be: Backend{Archives: arch}}}
	sess := &session{id: "c"}
	arch.changes = makeTar(t,
		tarEntry{name: "etc/", dir: true},
		tarEntry{name: "a.txt", body: "1"},
		tarEntry{name: "d/", dir: true},
		tarEntry{name: "d/x", body: "x"},
		tarEntry{name: "keep", body: "k"},
	)
	if err := b.snapshot(t.Context(), sess); err != nil {
		t.Fatal(err)
	}
	arch.changes = makeTar(t,
		tarEntry{name: "etc/", dir: true},
		tarEntry{name: "a.txt", body: "2"},
		tarEntry{name: "b.txt", body: "b"},
		tarEntry{name: ".wh.base.txt"},
		tarEntry{name: "keep", body: "k"},
	)
	var out bytes.Buffer
	if err := b.delta(t.Context(), sess, &out); err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if want := []string{"a.txt", "b.txt", ".wh.base.txt", ".wh.d"}; !slices.Equal(names, want) {
		t.Errorf("delta %q, want %q", names, want)
	}
	os.Remove(sess.snap)
}
