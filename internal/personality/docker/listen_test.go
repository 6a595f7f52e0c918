package docker_test

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker"
)

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	notSock := filepath.Join(dir, "file")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		hosts []string
		tls   *tls.Config
		want  func(error) bool
	}{
		{name: "no hosts", want: errdefs.IsInvalidArgument},
		{name: "unknown scheme", hosts: []string{"http://127.0.0.1:1"}, want: errdefs.IsInvalidArgument},
		{name: "relative socket", hosts: []string{"unix://x.sock"}, want: errdefs.IsInvalidArgument},
		{name: "tcp without port", hosts: []string{"tcp://127.0.0.1"}, want: errdefs.IsInvalidArgument},
		{name: "all addresses without TLS", hosts: []string{"tcp://0.0.0.0:0"}, want: errdefs.IsInvalidArgument},
		{name: "empty host without TLS", hosts: []string{"tcp://:0"}, want: errdefs.IsInvalidArgument},
		{name: "socket path is a file", hosts: []string{"unix://" + notSock}, want: errdefs.IsInvalidArgument},
		{name: "second host bad", hosts: []string{"unix://" + filepath.Join(dir, "ok.sock"), "tcp://0.0.0.0:0"}, want: errdefs.IsInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, cleanup, err := docker.Listen(tc.hosts, tc.tls, nil)
			if err == nil {
				cleanup()
				t.Fatalf("Listen(%v) = %v, want an error", tc.hosts, l.Addr())
			}
			if !tc.want(err) {
				t.Errorf("error %v has the wrong class", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "ok.sock")); !os.IsNotExist(err) {
		t.Errorf("a failed Listen left its socket behind: %v", err)
	}
}

func TestListenSocketAndTCP(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sub", "docker.sock")
	l, cleanup, err := docker.Listen([]string{"unix://" + sock, "tcp://127.0.0.1:0"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != docker.UnixSocketMode {
		t.Errorf("socket mode %v, want %v", st.Mode().Perm(), docker.UnixSocketMode)
	}
	if _, _, err := docker.Listen([]string{"unix://" + sock}, nil, nil); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second daemon on the socket: %v, want FailedPrecondition", err)
	}
	// Both listeners feed the one Accept; an echo proves each connection.
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	tcpAddr := findTCP(t, l)
	for _, target := range [][2]string{{"unix", sock}, {"tcp", tcpAddr}} {
		c, err := net.Dial(target[0], target[1])
		if err != nil {
			t.Fatalf("dial %s: %v", target[1], err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Errorf("%s echo: %q %v", target[0], buf, err)
		}
		c.Close()
	}
	cleanup()
	cleanup()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("cleanup left the socket: %v", err)
	}
	if _, err := l.Accept(); err == nil {
		t.Error("Accept after cleanup succeeded")
	}
}

// findTCP returns the TCP address among the listener's, from its String.
func findTCP(t *testing.T, l net.Listener) string {
	t.Helper()
	s := l.(interface{ String() string }).String()
	for _, a := range strings.Split(s, ",") {
		if _, _, err := net.SplitHostPort(a); err == nil {
			return a
		}
	}
	t.Fatalf("no TCP address in %q", s)
	return ""
}

func TestListenStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// A listener closed without unlinking leaves the file, as after kill -9.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, cleanup, err := docker.Listen([]string{"unix://" + sock}, nil, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer cleanup()
	_ = l2
}
