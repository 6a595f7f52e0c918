package vsphere

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/serialauth"
)

// Hello protocol words (package serialauth).
const (
	helloMagic  = serialauth.Magic
	secretBytes = serialauth.SecretBytes
	nonceBytes  = serialauth.NonceBytes
)

// GuestMAC is the MAC a guest named name sends for nonce in its hello
// (serialauth.GuestMAC).
func GuestMAC(secret []byte, name, nonce string) string {
	return serialauth.GuestMAC(secret, name, nonce)
}

// ServerMAC is the MAC the driver answers a good hello with
// (serialauth.ServerMAC).
func ServerMAC(secret []byte, name, nonce string) string {
	return serialauth.ServerMAC(secret, name, nonce)
}

// ExitMark is the value a guest named name sets guestinfo.vch.exit to
// before it powers itself off (serialauth.ExitMark).
func ExitMark(secret []byte, name string) string {
	return serialauth.ExitMark(secret, name)
}

// waiter is a Start waiting for the hello of the VM it started.
type waiter struct {
	name   string
	secret []byte
	tls    bool          // TLS after the hello (serialauth.ServerTLS)
	conn   chan net.Conn // receives the authenticated connection, once
}

// listen opens the channel listener and starts accepting.
func (d *Driver) listen() error {
	ln, err := net.Listen("tcp", d.cfg.ChannelListen)
	if err != nil {
		return fmt.Errorf("vsphere: listen for guest channels on %s: %w: %w", d.cfg.ChannelListen, err, errdefs.ErrUnavailable)
	}
	addr := d.cfg.ChannelAddress
	if addr == "" {
		ta := ln.Addr().(*net.TCPAddr)
		if ta.IP.IsUnspecified() {
			ln.Close()
			return fmt.Errorf("vsphere: channel listener %s is a wildcard address: give the address VMs reach it by (ChannelAddress): %w", ln.Addr(), errdefs.ErrInvalidArgument)
		}
		addr = ta.String()
	}
	d.ln = ln
	d.channel = "tcp://" + addr
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.accept()
	return nil
}

// ChannelURI is the service URI of the VMs' serial ports
// ("tcp://HOST:PORT").
func (d *Driver) ChannelURI() string { return d.channel }

func (d *Driver) accept() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			if d.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			d.logger.Warn("accept guest channel", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-d.ctx.Done():
				return
			}
			continue
		}
		select {
		case d.hellos <- struct{}{}:
		default:
			d.logger.Warn("guest channel refused: too many handshakes at once", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer func() { <-d.hellos }()
			d.hello(c)
		}()
	}
}

// errHello is why a hello was refused.
type errHello string

func (e errHello) Error() string { return string(e) }

// hello authenticates c and hands it to its waiter, or closes it.
func (d *Driver) hello(c net.Conn) {
	name, err := d.handshake(c)
	if err != nil {
		d.logger.Warn("guest channel refused", "remote", c.RemoteAddr().String(), "vm", name, "reason", err.Error())
		c.Close()
	}
}

// handshake runs the hello on c; on success c went to its waiter.
// Returns the name claimed, if any, with the error.
func (d *Driver) handshake(c net.Conn) (string, error) {
	// A VM's serial port connects at power-on, long before its guest
	// reads it: the first line may wait for the whole boot.
	_ = c.SetDeadline(time.Now().Add(d.cfg.ConnectTimeout))
	nb := make([]byte, nonceBytes)
	if _, err := rand.Read(nb); err != nil {
		return "", err
	}
	nonce := hex.EncodeToString(nb)
	hello := fmt.Sprintf("%s %s\n", helloMagic, nonce)
	if _, err := io.WriteString(c, hello); err != nil {
		return "", errHello("write nonce: " + err.Error())
	}
	// An empty line is the guest's nudge (its UART cut or lost the
	// first copy): the same line again. Our own line coming back is an
	// echo from a terminal not yet raw, whole or with bytes lost at its
	// start, end or middle by a UART starting up, so any subsequence of
	// it: skipped. Both at most serialauth.MaxNudges times.
	//
	// Other bytes are leftovers, skipped up to maxLeftovers: a guest
	// whose last session's host died writes what that session still had
	// to say (output, a TLS alert for the new listener's line, which its
	// TLS layer read as a record) until it reads this line, then nudges
	// or says its hello, so binary lines come first, the last of them
	// glued to the nudge's or the hello's newline. Leftovers get no
	// answer of their own (the guest nudges again after a second of
	// silence): an answer to each would send the guest more copies of
	// the line than it skips. A line that starts as a hello, after any
	// leftovers, is the guest's hello, or refused.
	var line string
	leftovers := maxLeftovers
	for skipped := 0; ; {
		var err error
		if line, err = readLine(c, maxHello+leftovers); err != nil {
			return "", err
		}
		_ = c.SetDeadline(time.Now().Add(helloTimeout))
		e := strings.TrimSuffix(line, "\r")
		if i := strings.LastIndex(e, helloMagic+" "); i > 0 {
			e = e[i:]
		}
		echo := e != "" && subsequence(e, hello)
		if strings.HasPrefix(e, helloMagic+" ") && !echo {
			if len(e) > maxHello {
				return "", errHello(fmt.Sprintf("hello longer than %d bytes", maxHello))
			}
			line = e
			break
		}
		if e != "" && !echo {
			if leftovers -= len(line) + 1; leftovers < 0 {
				return "", errHello(fmt.Sprintf("more than %d bytes before the hello", maxLeftovers))
			}
			continue
		}
		if skipped++; skipped > serialauth.MaxNudges {
			return "", errHello("too many nudges or echoes")
		}
		if echo {
			continue
		}
		if _, err := io.WriteString(c, hello); err != nil {
			return "", errHello("write nonce: " + err.Error())
		}
	}
	f := strings.Split(line, " ")
	if len(f) != 4 || f[0]+" "+f[1] != helloMagic || f[2] == "" || len(f[3]) != 2*sha256.Size {
		return "", errHello(fmt.Sprintf("malformed hello %.100q", line))
	}
	name, got := f[2], f[3]
	d.mu.Lock()
	w := d.waiting[name]
	d.mu.Unlock()
	if w == nil {
		return name, errHello("no VM of that name waits for its channel")
	}
	if !hmac.Equal([]byte(got), []byte(GuestMAC(w.secret, name, nonce))) {
		return name, errHello("wrong MAC: the peer does not hold the VM's secret")
	}
	if _, err := fmt.Fprintf(c, "ok %s\n", ServerMAC(w.secret, name, nonce)); err != nil {
		return name, errHello("write ok: " + err.Error())
	}
	if w.tls {
		// The hello's deadline bounds the handshake too: the guest starts
		// it as soon as it has read the ok.
		tc, err := serialauth.ServerHandshake(c, name, w.secret)
		if err != nil {
			return name, errHello(err.Error())
		}
		c = tc
	}
	_ = c.SetDeadline(time.Time{})
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.waiting[name] != w {
		return name, errHello("another connection won the VM's channel")
	}
	delete(d.waiting, name)
	w.conn <- c // buffered, and sent once
	return name, nil
}

// subsequence reports whether s is t with some bytes left out.
func subsequence(s, t string) bool {
	i := 0
	for j := 0; i < len(s) && j < len(t); j++ {
		if s[i] == t[j] {
			i++
		}
	}
	return i == len(s)
}

// readLine reads up to and without '\n', at most max bytes, one byte at
// a time so that nothing after the line is consumed.
func readLine(c net.Conn, max int) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) <= max {
		if _, err := c.Read(one); err != nil {
			return "", errHello("read hello: " + err.Error())
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", errHello(fmt.Sprintf("hello longer than %d bytes", max))
}

// expect registers a Start waiting for name's hello with a fresh secret.
// AlreadyExists if a VM of that name runs or is being started.
func (d *Driver) expect(name string) (*waiter, error) {
	secret := make([]byte, secretBytes)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("vsphere: channel secret: %w", err)
	}
	return d.expectSecret(name, secret, true)
}

// expectSecret registers a wait for name's hello with secret (an adopted
// VM's, read back from its configuration), with TLS after it if useTLS.
// AlreadyExists as expect.
func (d *Driver) expectSecret(name string, secret []byte, useTLS bool) (*waiter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.waiting[name] != nil || d.vms[name] != nil {
		return nil, fmt.Errorf("vsphere: a VM named %s already runs: %w", name, errdefs.ErrAlreadyExists)
	}
	w := &waiter{name: name, secret: secret, tls: useTLS, conn: make(chan net.Conn, 1)}
	d.waiting[name] = w
	return w, nil
}

// unexpect ends w's wait; a connection it got and nobody took is closed.
func (d *Driver) unexpect(w *waiter) {
	d.mu.Lock()
	if d.waiting[w.name] == w {
		delete(d.waiting, w.name)
	}
	d.mu.Unlock()
	select {
	case c := <-w.conn:
		c.Close()
	default:
	}
}
