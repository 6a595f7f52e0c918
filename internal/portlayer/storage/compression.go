package storage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/vchproject/vch/internal/portlayer"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress wraps rc so that reading yields the uncompressed stream:
// gzip and zstd (the OCI image-spec layer media types) are recognised by
// their magic bytes, anything else is passed through. Closing the result
// closes rc.
func decompress(rc io.ReadCloser) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rc, 64<<10)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "gzip: %w", err)
		}
		return &stackCloser{Reader: zr, closers: []io.Closer{zr, rc}}, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "zstd: %w", err)
		}
		return &stackCloser{Reader: zr, closers: []io.Closer{closerFunc(zr.Close), rc}}, nil
	}
	return &stackCloser{Reader: br, closers: []io.Closer{rc}}, nil
}

type stackCloser struct {
	io.Reader
	closers []io.Closer
}

func (s *stackCloser) Close() error {
	var first error
	for _, c := range s.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }
