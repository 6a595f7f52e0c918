package storage

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vchproject/vch/internal/portlayer"
)

// blobPath is where the OCI layout keeps the blob with digest h.
func (s *Store) blobPath(h v1.Hash) string {
	return s.path("oci", "blobs", h.Algorithm, h.Hex)
}

func (s *Store) hasBlob(h v1.Hash) bool {
	_, err := os.Stat(s.blobPath(h))
	return err == nil
}

// commitBlob moves the finished temp file tmp into the blob store as h. If
// the blob is already there tmp is dropped: blobs are content-addressed.
func (s *Store) commitBlob(tmp string, h v1.Hash) error {
	if h.Algorithm != "sha256" || !fullHex.MatchString(h.Hex) {
		os.Remove(tmp)
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "unsupported digest %q", h)
	}
	if err := os.MkdirAll(s.path("oci", "blobs", "sha256"), 0o700); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("storage: blob dir: %w", err)
	}
	if s.hasBlob(h) {
		os.Remove(tmp)
		return nil
	}
	if err := os.Rename(tmp, s.blobPath(h)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("storage: store blob %s: %w", h, err)
	}
	return nil
}

// writeBlobBytes stores data and returns its digest.
func (s *Store) writeBlobBytes(data []byte) (v1.Hash, error) {
	sum := sha256.Sum256(data)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if s.hasBlob(h) {
		return h, nil
	}
	f, err := os.CreateTemp(s.path("tmp"), "blob-")
	if err != nil {
		return h, fmt.Errorf("storage: temp blob: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return h, fmt.Errorf("storage: write blob: %w", err)
	}
	if err := syncClose(f); err != nil {
		os.Remove(f.Name())
		return h, fmt.Errorf("storage: write blob: %w", err)
	}
	return h, s.commitBlob(f.Name(), h)
}

func syncClose(f *os.File) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// storedLayer describes a layer blob in the store.
type storedLayer struct {
	Digest    v1.Hash // of the blob as stored (compressed)
	Size      int64   // blob bytes
	MediaType types.MediaType
	DiffID    v1.Hash // of the uncompressed tar
	USize     int64   // uncompressed bytes
}

// writeLayerUncompressed gzips the uncompressed layer tar r into the store,
// computing both digests in one pass. onBytes, if set, is told the number
// of uncompressed bytes read so far.
func (s *Store) writeLayerUncompressed(ctx context.Context, r io.Reader, onBytes func(int64)) (storedLayer, error) {
	f, err := os.CreateTemp(s.path("tmp"), "layer-")
	if err != nil {
		return storedLayer{}, fmt.Errorf("storage: temp layer: %w", err)
	}
	defer os.Remove(f.Name())
	ch := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, ch)}
	gz, _ := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	dh := sha256.New()
	// A parallel tar reader checks that the stream is a well-formed tar, so
	// a broken layer fails here rather than when a container starts.
	pr, pw := io.Pipe()
	tarErr := make(chan error, 1)
	go func() { tarErr <- checkTar(pr) }()
	n, err := io.Copy(io.MultiWriter(gz, dh, pw), &progressReader{ctx: ctx, r: r, fn: onBytes})
	pw.CloseWithError(err)
	terr := <-tarErr
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return storedLayer{}, ctxErr(ctx)
		}
		return storedLayer{}, fmt.Errorf("storage: write layer: %w", err)
	}
	if terr != nil {
		f.Close()
		return storedLayer{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid layer: %w", terr)
	}
	if err := syncClose(f); err != nil {
		return storedLayer{}, fmt.Errorf("storage: write layer: %w", err)
	}
	l := storedLayer{
		Digest:    hashOf(ch),
		Size:      cw.n,
		MediaType: types.OCILayer,
		DiffID:    hashOf(dh),
		USize:     n,
	}
	if err := s.commitBlob(f.Name(), l.Digest); err != nil {
		return storedLayer{}, err
	}
	return l, nil
}

// writeBlobVerified stores the blob read from r, which must have digest want
// and (if size >= 0) size bytes. InvalidArgument on a mismatch.
func (s *Store) writeBlobVerified(ctx context.Context, r io.Reader, want v1.Hash, size int64, onBytes func(int64)) error {
	f, err := os.CreateTemp(s.path("tmp"), "blob-")
	if err != nil {
		return fmt.Errorf("storage: temp blob: %w", err)
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), &progressReader{ctx: ctx, r: r, fn: onBytes})
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		return fmt.Errorf("storage: download %s: %w", want, err)
	}
	if err := syncClose(f); err != nil {
		return fmt.Errorf("storage: write blob: %w", err)
	}
	if got := hashOf(h); got != want || (size >= 0 && n != size) {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "blob %s: got digest %s, %d bytes (want %d)", want, got, n, size)
	}
	return s.commitBlob(f.Name(), want)
}

// openUncompressed opens a stored layer blob as an uncompressed tar stream,
// by media type or, failing that, by its magic bytes.
func (s *Store) openUncompressed(h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(s.blobPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, portlayer.Errorf(portlayer.ClassNotFound, "layer %s missing", h)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open layer %s: %w", h, err)
	}
	return decompress(f)
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progressReader stops on context end and reports bytes read.
type progressReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
	fn  func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.fn != nil && n > 0 {
		p.fn(p.n)
	}
	return n, err
}

// checkTar reads a tar stream to its end, reporting the first format error
// or entry that would land outside the root filesystem (a name, or a hard
// link target, climbing above "/" with ".."), which would write outside
// the tree a layer is applied to; it always drains r so the writer never
// blocks.
// Absolute names and symlink targets are fine: they resolve inside the root.
func checkTar(r io.Reader) error {
	defer io.Copy(io.Discard, r)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if climbsOut(hdr.Name) {
			return fmt.Errorf("entry %q is outside the root filesystem", hdr.Name)
		}
		if hdr.Typeflag == tar.TypeLink && climbsOut(hdr.Linkname) {
			return fmt.Errorf("hard link %q points outside the root filesystem (%q)", hdr.Name, hdr.Linkname)
		}
	}
}

// climbsOut reports whether a tar entry name, taken relative to the root
// (leading slashes dropped), climbs above it.
func climbsOut(name string) bool {
	p := path.Clean(strings.TrimLeft(name, "/"))
	return p == ".." || strings.HasPrefix(p, "../")
}
