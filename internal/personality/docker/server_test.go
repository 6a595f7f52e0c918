package docker_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/dockertest"
)

// startServer serves a fake backend on a unix socket in t.TempDir() and
// returns the fake and the socket path.
func startServer(t *testing.T) (*dockertest.Fake, string) {
	t.Helper()
	f := dockertest.New()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	srv := docker.New(docker.Config{Version: "0.0.0-test"}, docker.Backend{
		Compute: f, Interaction: f, Images: f.Images(), System: f,
	}, logger)
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return f, sock
}
