package docker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/dockertest"
	"github.com/vchproject/vch/internal/portlayer"
)

// progressFirstImages reports progress after the first bytes of an import
// or load body, before it reads the rest, as the real store does.
type progressFirstImages struct {
	dockertest.ImagesAPI
}

func readWithEarlyProgress(r io.Reader, progress portlayer.ProgressFunc) ([]byte, error) {
	first := make([]byte, 1)
	if _, err := io.ReadFull(r, first); err != nil {
		return nil, err
	}
	progress(portlayer.Progress{Status: "Importing", Current: 1})
	rest, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read after progress: %w", err)
	}
	return append(first, rest...), nil
}

func (p progressFirstImages) Import(ctx context.Context, r io.Reader, ref string, opts portlayer.ImportOptions, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	data, err := readWithEarlyProgress(r, progress)
	if err != nil {
		return portlayer.Image{}, err
	}
	sum := sha256.Sum256(data)
	return portlayer.Image{ID: "sha256:" + hex.EncodeToString(sum[:])}, nil
}

func (p progressFirstImages) Load(ctx context.Context, r io.Reader, progress portlayer.ProgressFunc) ([]portlayer.Image, error) {
	data, err := readWithEarlyProgress(r, progress)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	return []portlayer.Image{{ID: "sha256:" + hex.EncodeToString(sum[:])}}, nil
}

// TestImageBodyReadAfterProgress checks that import and load can keep
// reading the request body after their first progress line went out (an
// HTTP/1 server closes the unread body at the first write unless the
// handler asks for full duplex).
func TestImageBodyReadAfterProgress(t *testing.T) {
	f := dockertest.New()
	srv := docker.New(docker.Config{}, docker.Backend{Compute: f, Interaction: f, Images: progressFirstImages{f.Images()}, System: f},
		slog.New(slog.DiscardHandler))
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	cli := newClient(t, sock)

	for _, size := range []int{10, 300 << 10, 3 << 20} {
		body := bytes.Repeat([]byte("x"), size)
		sum := sha256.Sum256(body)
		wantID := "sha256:" + hex.EncodeToString(sum[:])
		tests := []struct {
			name string
			run  func() (io.ReadCloser, error)
		}{
			{name: "import", run: func() (io.ReadCloser, error) {
				return cli.ImageImport(t.Context(), client.ImageImportSource{Source: bytes.NewReader(body), SourceName: "-"}, "", client.ImageImportOptions{})
			}},
			{name: "load", run: func() (io.ReadCloser, error) {
				return cli.ImageLoad(t.Context(), bytes.NewReader(body), client.ImageLoadWithQuiet(false))
			}},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s %d bytes", tt.name, size), func(t *testing.T) {
				rc, err := tt.run()
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				out, _ := io.ReadAll(rc)
				if strings.Contains(string(out), "error") || !strings.Contains(string(out), wantID) {
					t.Fatalf("output (want ID %s):\n%s", wantID, out)
				}
			})
		}
	}
}
