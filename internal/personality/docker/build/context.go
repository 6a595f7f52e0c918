package build

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/vchproject/vch/internal/archive"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
)

// maxDockerfileBytes bounds the Dockerfile read into memory (the context
// itself streams to disk, whatever its size).
const maxDockerfileBytes = 8 << 20

// buildContext is a build's context unpacked under the router's root.
type buildContext struct {
	dir     string // the context's root
	release func()
}

// unpackContext streams the body (a tar, plain, gzip or bzip2) into a new
// directory under root/tmp with archive.Unpack's safety rules: nothing
// is held in memory beyond a buffer, and nothing is written outside that
// directory. A body that is not a tar fails with the tar reader's text
// (500, as dockerd answers).
func (rt *Router) unpackContext(ctx context.Context, body io.Reader) (*buildContext, error) {
	work, err := os.MkdirTemp(filepath.Join(rt.root, "tmp"), "context-")
	if err != nil {
		return nil, fmt.Errorf("build: context directory: %w", err)
	}
	release := func() { _ = os.RemoveAll(work) }
	dir := filepath.Join(work, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		release()
		return nil, fmt.Errorf("build: context directory: %w", err)
	}
	r, err := decompress(body)
	if err != nil {
		release()
		return nil, err
	}
	if err := archive.Unpack(ctx, r, dir); err != nil {
		release()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("unexpected EOF")
		}
		return nil, fmt.Errorf("build context: %w", err)
	}
	return &buildContext{dir: dir, release: release}, nil
}

// decompress detects gzip and bzip2 by their magic numbers; anything else
// is read as a plain tar.
func decompress(body io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(body, 64<<10)
	head, _ := br.Peek(3)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, httputils.InvalidArgument("build context: %v", err)
		}
		return zr, nil
	case bytes.HasPrefix(head, []byte("BZh")):
		return bzip2.NewReader(br), nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z'}):
		return nil, httputils.InvalidArgument("build context: xz compression is not supported: send a plain or gzip tar")
	}
	return br, nil
}

// dockerfile reads the named Dockerfile from the context; for the default
// name a missing "Dockerfile" falls back to "dockerfile". Dockerd's 500
// "Cannot locate specified Dockerfile: <name>" when there is none.
func (c *buildContext) dockerfile(name string) ([]byte, error) {
	names := []string{name}
	if name == defaultDockerfile {
		names = append(names, strings.ToLower(name))
	}
	for _, n := range names {
		p, err := securejoin.SecureJoin(c.dir, n)
		if err != nil {
			continue
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("build: Dockerfile: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxDockerfileBytes+1))
		if err != nil {
			return nil, fmt.Errorf("build: Dockerfile: %w", err)
		}
		if len(b) > maxDockerfileBytes {
			return nil, httputils.InvalidArgument("the Dockerfile (%s) is larger than %d bytes", n, maxDockerfileBytes)
		}
		return b, nil
	}
	return nil, errdefs.ErrUnknown.WithMessage("Cannot locate specified Dockerfile: " + name)
}
