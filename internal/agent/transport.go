package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/crypto/ssh"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
)

// transport is what Client needs of a connection to tether: package link's
// (wire protocol v3) or an SSH connection's (v1 and v2 guests, booted by
// an older daemon). Opens and requests are bounded by ctx; a rejected open
// is a *link.OpenChannelError.
type transport interface {
	SendRequest(ctx context.Context, name string, wantReply bool, payload []byte) (bool, []byte, error)
	OpenChannel(ctx context.Context, kind string, extra []byte) (link.Channel, <-chan *link.Request, error)
	Close() error
	Wait() error
}

// handshake starts a session on c: it writes wire.Hello and reads the
// guest's first line. A v4 tether answers wire.Hello4 (then link.V4), a
// v3 tether wire.Hello (then link.V3); an older one, an SSH server, skips
// the line and sends its SSH version string (then SSH, that line given
// back to the SSH client). It returns the transport and the protocol
// version spoken ("v4", "v3", or "v2" for SSH).
func handshake(c net.Conn, h Handlers) (transport, string, error) {
	if _, err := c.Write([]byte(wire.Hello)); err != nil {
		return nil, "", fmt.Errorf("write hello: %w", err)
	}
	var line []byte
	b := make([]byte, 1)
	for len(line) < wire.MaxHelloBytes && (len(line) == 0 || line[len(line)-1] != '\n') {
		if _, err := c.Read(b); err != nil {
			return nil, "", fmt.Errorf("read hello: %w", err)
		}
		line = append(line, b[0])
	}
	switch {
	case string(line) == wire.Hello4 || string(line) == wire.Hello:
		v, name := link.V4, wire.Version4
		if string(line) == wire.Hello {
			v, name = link.V3, wire.Version3
		}
		lc, chans, reqs, err := link.Client(c, v)
		if err != nil {
			return nil, "", err
		}
		go serveRequests(reqs, h)
		go rejectChannels(chans)
		return lc, name, nil
	case bytes.HasPrefix(line, []byte("SSH-")):
		t, err := dialSSH(&replayConn{Conn: c, pre: line}, h)
		return t, wire.Version2, err
	default:
		return nil, "", fmt.Errorf("the guest answered %q, neither %q, %q nor an SSH version string", line, wire.Hello4, wire.Hello)
	}
}

// rejectChannels refuses every channel the guest asks to open.
func rejectChannels(chans <-chan link.NewChannel) {
	for nc := range chans {
		_ = nc.Reject(link.Prohibited, "no channels from the guest")
	}
}

// replayConn reads pre before the connection's own bytes.
type replayConn struct {
	net.Conn
	pre []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// keyExchanges are the key exchanges offered to an SSH guest: X25519
// alone. x/crypto/ssh prefers the ML-KEM-768 hybrid, whose code a guest
// under TCG translates and runs for every handshake; the channel never
// leaves the host, so the post-quantum half protects nothing here.
var keyExchanges = []string{ssh.KeyExchangeCurve25519}

// dialSSH is the SSH client handshake (protocol v1 and v2 guests). The
// guest's per-boot host key is not verified: the port is reachable only
// through the VMM.
func dialSSH(c net.Conn, h Handlers) (transport, error) {
	cfg := &ssh.ClientConfig{User: "vch", HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Config: ssh.Config{KeyExchanges: keyExchanges}}
	sc, chans, reqs, err := ssh.NewClientConn(c, "guest", cfg)
	if err != nil {
		return nil, err
	}
	lreqs := make(chan *link.Request)
	go func() {
		defer close(lreqs)
		for r := range reqs {
			lreqs <- fromSSH(r)
		}
	}()
	go serveRequests(lreqs, h)
	go func() {
		for nc := range chans {
			_ = nc.Reject(ssh.Prohibited, "no channels from the guest")
		}
	}()
	return sshTransport{sc}, nil
}

// fromSSH is an SSH request as a link request.
func fromSSH(r *ssh.Request) *link.Request {
	return link.NewRequest(r.Type, r.WantReply, r.Payload, r.Reply)
}

// sshTransport is an SSH connection as a transport.
type sshTransport struct{ conn ssh.Conn }

func (t sshTransport) Close() error { return t.conn.Close() }
func (t sshTransport) Wait() error  { return t.conn.Wait() }

func (t sshTransport) SendRequest(ctx context.Context, name string, wantReply bool, payload []byte) (bool, []byte, error) {
	type result struct {
		ok   bool
		resp []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ok, resp, err := t.conn.SendRequest(name, wantReply, payload)
		done <- result{ok, resp, err}
	}()
	select {
	case r := <-done:
		return r.ok, r.resp, r.err
	case <-ctx.Done():
		return false, nil, ctx.Err()
	}
}

func (t sshTransport) OpenChannel(ctx context.Context, kind string, extra []byte) (link.Channel, <-chan *link.Request, error) {
	type result struct {
		ch   ssh.Channel
		reqs <-chan *ssh.Request
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ch, reqs, err := t.conn.OpenChannel(kind, extra)
		done <- result{ch, reqs, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		// A channel opened after all is closed, so nothing leaks.
		go func() {
			if r := <-done; r.ch != nil {
				r.ch.Close()
			}
		}()
		return nil, nil, ctx.Err()
	}
	if r.err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(r.err, &oce) {
			return nil, nil, &link.OpenChannelError{Reason: link.RejectionReason(oce.Reason), Message: oce.Message}
		}
		return nil, nil, r.err
	}
	reqs := make(chan *link.Request)
	go func() {
		defer close(reqs)
		for req := range r.reqs {
			reqs <- fromSSH(req)
		}
	}()
	return r.ch, reqs, nil
}
