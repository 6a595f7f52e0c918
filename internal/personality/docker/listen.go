package docker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// UnixSocketMode is the mode of the API's unix socket: read and write for
// root and root's group only. An Engine API socket is root on the host.
const UnixSocketMode os.FileMode = 0o660

// Listen opens the Engine API listeners for hosts, dockerd's -H values:
// "unix:///PATH.sock" or "tcp://HOST:PORT". tlsCfg (nil for plain HTTP)
// applies to TCP listeners only, as in dockerd; unix sockets are created
// UnixSocketMode, owned by root:root when the daemon runs as root, after
// removing a stale one.
//
// TCP without TLS is refused on any address but loopback (127.0.0.0/8,
// ::1, localhost): unlike dockerd, which still lets an operator opt in with
// --tls=false, vch never serves an unauthenticated API to a network.
// TLS without client verification (--tls --tlsverify=false) is allowed
// everywhere, with dockerd's warning.
//
// The returned listener accepts from all of them; its Addr is the first
// host's. cleanup closes them and removes the unix sockets; it is
// idempotent. InvalidArgument for a malformed or refused host;
// FailedPrecondition if another daemon already listens on a socket.
func Listen(hosts []string, tlsCfg *tls.Config, logger *slog.Logger) (net.Listener, func(), error) {
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("docker: no -H listen address: %w", errdefs.ErrInvalidArgument)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var ls []net.Listener
	var socks []string
	cleanup := func() {
		for _, l := range ls {
			l.Close()
		}
		for _, p := range socks {
			os.Remove(p)
		}
	}
	for _, h := range hosts {
		u, err := ParseHost(h)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		var l net.Listener
		if u.Scheme == "unix" {
			l, err = listenUnix(h, u.Path)
			if err == nil {
				socks = append(socks, u.Path)
			}
		} else {
			l, err = listenTCP(h, u.Host, tlsCfg, logger)
		}
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		ls = append(ls, l)
	}
	var once sync.Once
	ml := newMultiListener(ls)
	return ml, func() { once.Do(func() { ml.Close(); cleanup() }) }, nil
}

// ParseHost parses one -H value, "unix:///ABS/PATH" or "tcp://HOST:PORT".
// InvalidArgument otherwise.
func ParseHost(host string) (*url.URL, error) {
	u, err := url.Parse(host)
	if err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") {
		return nil, fmt.Errorf("docker: -H %q: want unix:///PATH.sock or tcp://HOST:PORT: %w", host, errdefs.ErrInvalidArgument)
	}
	if u.Scheme == "unix" {
		if u.Path == "" || !filepath.IsAbs(u.Path) || u.Host != "" {
			return nil, fmt.Errorf("docker: -H %q: want an absolute socket path, unix:///PATH.sock: %w", host, errdefs.ErrInvalidArgument)
		}
		return u, nil
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return nil, fmt.Errorf("docker: -H %q: want tcp://HOST:PORT: %w", host, errdefs.ErrInvalidArgument)
	}
	return u, nil
}

// IsLoopback reports whether a TCP listen host ("127.0.0.1", "::1",
// "localhost") is a loopback address; "" and "0.0.0.0" are not.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func listenUnix(host, path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("docker: -H %s: %s exists and is not a socket: %w", host, path, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("docker: socket dir: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("docker: -H %s: another daemon is listening there: %w", host, errdefs.ErrFailedPrecondition)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("docker: listen %s: %w", host, err)
	}
	if err := os.Chmod(path, UnixSocketMode); err != nil {
		l.Close()
		return nil, fmt.Errorf("docker: chmod %s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		// Root's group, whatever group the daemon was started with.
		if err := os.Chown(path, 0, 0); err != nil {
			l.Close()
			return nil, fmt.Errorf("docker: chown %s: %w", path, err)
		}
	}
	return l, nil
}

func listenTCP(host, addr string, tlsCfg *tls.Config, logger *slog.Logger) (net.Listener, error) {
	h, _, _ := net.SplitHostPort(addr)
	switch {
	case tlsCfg == nil && !IsLoopback(h):
		return nil, fmt.Errorf("docker: -H %s: without TLS vch listens on loopback addresses only (127.0.0.1, ::1); use --tlsverify with --tlscacert, --tlscert and --tlskey: %w", host, errdefs.ErrInvalidArgument)
	case tlsCfg == nil:
		logger.Warn("Binding to an IP address without --tlsverify gives root access on this machine to every local user and to scripts run in a browser; only loopback is allowed", "host", host)
	case tlsCfg.ClientAuth != tls.RequireAndVerifyClientCert:
		logger.Warn("Binding to IP address without --tlsverify is insecure and gives root access on this machine to everyone who has access to your network.", "host", host)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("docker: listen %s: %w", host, err)
	}
	if tlsCfg != nil {
		l = tls.NewListener(l, tlsCfg)
	}
	return l, nil
}

// multiListener accepts connections from several listeners.
type multiListener struct {
	ls    []net.Listener
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newMultiListener(ls []net.Listener) *multiListener {
	m := &multiListener{ls: ls, conns: make(chan net.Conn), errs: make(chan error, len(ls)), done: make(chan struct{})}
	for _, l := range ls {
		m.wg.Add(1)
		go m.accept(l)
	}
	return m
}

func (m *multiListener) accept(l net.Listener) {
	defer m.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case m.errs <- err:
			case <-m.done:
			}
			return
		}
		select {
		case m.conns <- c:
		case <-m.done:
			c.Close()
			return
		}
	}
}

// Accept returns the next connection from any listener, or the first
// listener's error (net.ErrClosed after Close).
func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

// Close closes every listener and waits for the accept loops; idempotent.
func (m *multiListener) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
				err = cerr
			}
		}
		m.wg.Wait()
	})
	return err
}

// Addr is the first listener's address.
func (m *multiListener) Addr() net.Addr { return m.ls[0].Addr() }

// String lists the addresses, for logs.
func (m *multiListener) String() string {
	var s []string
	for _, l := range m.ls {
		s = append(s, l.Addr().String())
	}
	return strings.Join(s, ",")
}
