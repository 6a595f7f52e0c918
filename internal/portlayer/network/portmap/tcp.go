package portmap

import (
	"errors"
	"io"
	"net"
	"time"
)

// Bounds of the pause after a failed Accept or read on a host socket
// (EMFILE, ENFILE, ENOBUFS), so a descriptor shortage does not spin the
// loop.
const (
	retryPauseMin = 5 * time.Millisecond
	retryPauseMax = time.Second
)

// pause waits after a failed Accept or read on the host socket, doubling
// *backoff between retryPauseMin and retryPauseMax. It returns false if the
// proxy stopped meanwhile.
func (p *proxy) pause(backoff *time.Duration, op string, err error) bool {
	*backoff = min(max(2**backoff, retryPauseMin), retryPauseMax)
	p.log.Warn(op+" failed, retrying", "error", err, "retry_in", *backoff)
	t := time.NewTimer(*backoff)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serveTCP accepts connections until the listener is closed.
func (p *proxy) serveTCP() {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !p.pause(&backoff, "accept", err) {
				return
			}
			continue
		}
		backoff = 0
		if !p.track(c) {
			c.Close()
			continue // the listener is closed too: the next Accept fails
		}
		p.wg.Add(1)
		go p.forwardTCP(c)
	}
}

// forwardTCP connects client to the container and copies both ways until
// both directions have ended or one fails.
func (p *proxy) forwardTCP(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)

	backend, err := p.dialContainer("tcp")
	if err != nil {
		p.log.Debug("dial container failed, closing client", "client", remote(client), "error", err)
		return
	}
	if !p.track(backend) {
		backend.Close()
		return
	}
	defer p.untrack(backend)

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pipe(backend, client)
	}()
	p.pipe(client, backend)
	<-done
}

// pipe copies src to dst. At src's EOF it half-closes dst; on an error it
// closes both, which also ends the opposite pipe.
func (p *proxy) pipe(dst, src net.Conn) {
	// io.Copy uses splice(2) between two *net.TCPConn.
	if _, err := io.Copy(dst, src); err != nil {
		if !errors.Is(err, net.ErrClosed) {
			p.log.Debug("connection failed", "from", remote(src), "to", remote(dst), "error", err)
		}
		src.Close()
		dst.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.log.Debug("half-close failed", "from", remote(src), "to", remote(dst), "error", err)
			src.Close()
			dst.Close()
		}
	}
}

// remote is c's peer address for logs.
func remote(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
