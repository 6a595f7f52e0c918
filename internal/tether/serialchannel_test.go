package tether

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/serialauth"
	"github.com/vchproject/vch/internal/agent/wire"
)

func TestParseChannel(t *testing.T) {
	gi := EncodeGuestinfo(map[string]string{guestinfoName: "c1", guestinfoSecret: "ab"})
	c, err := parseChannel("console=hvc0 vch.channel=serial quiet " + GuestinfoParam + "=" + gi)
	if err != nil {
		t.Fatal(err)
	}
	if !c.serial || c.device != "ttyS0" || c.guestinfo[guestinfoName] != "c1" || c.guestinfo[guestinfoSecret] != "ab" {
		t.Errorf("parseChannel = %+v", c)
	}
	if c, err := parseChannel("console=ttyS0 quiet"); err != nil || c.serial {
		t.Errorf("no channel words: %+v, %v; want the virtio port", c, err)
	}
	if c, _ := parseChannel("vch.channel=serial vch.channel.device=ttyS1"); c.device != "ttyS1" {
		t.Errorf("device = %q, want ttyS1", c.device)
	}
	for _, bad := range []string{"vch.channel=usb", "vch.channel.device=../sda", "vch.guestinfo=!!", "vch.guestinfo=" + EncodeGuestinfo(nil)[:2]} {
		if _, err := parseChannel(bad); err == nil {
			t.Errorf("parseChannel(%q) accepted", bad)
		}
	}
}

// TestSerialChannel runs openSerialChannel on a pty standing in for the
// UART: raw mode (a '\n' arrives as itself, no echo) and the hello
// against the listener's side, written here from the package doc.
func TestSerialChannel(t *testing.T) {
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	name := strings.TrimPrefix(pts.Name(), "/dev/")
	defer pts.Close() // held, or the master reads EIO until the guest opens it
	secret := strings.Repeat("5a", serialauth.SecretBytes)
	key, _ := serialauth.ParseSecret(secret)
	nonce := strings.Repeat("01", serialauth.NonceBytes)
	c := channelChoice{serial: true, device: name, guestinfo: map[string]string{guestinfoName: "c9", guestinfoSecret: secret}}

	type opened struct {
		f   *os.File
		err error
	}
	res := make(chan opened, 1)
	go func() {
		f, err := openSerialChannel(c)
		res <- opened{f, err}
	}()
	// The guest nudges after a second of silence; then the line.
	got, err := serialauth.ReadLine(ptm)
	if err != nil || got != "" {
		t.Fatalf("want the guest's nudge, got %q, %v", got, err)
	}
	io.WriteString(ptm, serialauth.Magic+" "+nonce+"\n")
	got, err = serialauth.ReadLine(ptm)
	if want := serialauth.Magic + " c9 " + serialauth.GuestMAC(key, "c9", nonce); err != nil || got != want {
		t.Fatalf("guest's hello %q, %v; want %q (raw mode: no echo, no CR)", got, err, want)
	}
	io.WriteString(ptm, "ok "+serialauth.ServerMAC(key, "c9", nonce)+"\n")
	var o opened
	select {
	case o = <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("openSerialChannel did not return")
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	defer o.f.Close()
	tio, err := unix.IoctlGetTermios(int(o.f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&(unix.ECHO|unix.ICANON) != 0 || tio.Oflag&unix.OPOST != 0 || tio.Iflag&unix.IXON != 0 {
		t.Errorf("serial channel not raw: %+v", tio)
	}

	// A listener without the secret is refused.
	go func() {
		_, err := openSerialChannel(c)
		res <- opened{nil, err}
	}()
	serialauth.ReadLine(ptm)
	io.WriteString(ptm, serialauth.Magic+" "+nonce+"\n")
	serialauth.ReadLine(ptm)
	io.WriteString(ptm, "ok "+serialauth.ServerMAC(make([]byte, serialauth.SecretBytes), "c9", nonce)+"\n")
	if o := <-res; !errors.Is(o.err, serialauth.ErrRefused) {
		t.Errorf("openSerialChannel with a listener lacking the secret = %v, want ErrRefused", o.err)
	}
}

// listenerHello plays the listener's side of serialauth's hello on ptm:
// it waits for the guest's nudge, says its line, checks the guest's and
// accepts it. It fails the test if the guest says nothing within limit.
func listenerHello(t *testing.T, ptm *os.File, key []byte, name, nonce string, limit time.Duration) {
	t.Helper()
	type line struct {
		s   string
		err error
	}
	read := func() (string, error) {
		c := make(chan line, 1)
		go func() { s, err := serialauth.ReadLine(ptm); c <- line{s, err} }()
		select {
		case l := <-c:
			return l.s, l.err
		case <-time.After(limit):
			return "", errors.New("the guest said nothing")
		}
	}
	for {
		got, err := read()
		if err != nil {
			t.Fatalf("waiting for the guest's nudge: %v", err)
		}
		if got == "" {
			break
		}
	}
	io.WriteString(ptm, serialauth.Magic+" "+nonce+"\n")
	got, err := read()
	if want := serialauth.Magic + " " + name + " " + serialauth.GuestMAC(key, name, nonce); err != nil || got != want {
		t.Fatalf("guest's hello %q, %v; want %q", got, err, want)
	}
	io.WriteString(ptm, "ok "+serialauth.ServerMAC(key, name, nonce)+"\n")
}

// TestSerialSessionStall: a host that dies in the middle of a link frame
// on a serial channel (the line says nothing) costs the guest one
// frameStall: the session ends, the guest says its hello again, and the
// next host's session works. Without the bound the guest would read the
// next listener's line as the rest of the frame and never answer it.
func TestSerialSessionStall(t *testing.T) {
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	defer pts.Close()
	name := strings.TrimPrefix(pts.Name(), "/dev/")
	secret := strings.Repeat("5a", serialauth.SecretBytes)
	key, _ := serialauth.ParseSecret(secret)
	nonce := strings.Repeat("01", serialauth.NonceBytes)
	c := channelChoice{serial: true, device: name, guestinfo: map[string]string{guestinfoName: "c9", guestinfoSecret: secret}}

	if !serveSerial(t, c, ptm, key, "c9", nonce) {
		return
	}

	hostHello := func() {
		t.Helper()
		io.WriteString(ptm, wire.Hello)
		got, err := serialauth.ReadLine(ptm)
		if err != nil || got+"\r\n" != wire.Hello4 && got+"\n" != wire.Hello4 && got != wire.Hello4 {
			t.Fatalf("tether answered %q, %v; want %q", got, err, wire.Hello4)
		}
	}
	// The first host: hello, then a frame header declaring 1000 bytes and
	// 10 of them; then it dies.
	hostHello()
	partial := append([]byte{0x50, 0, 0, 0, 1, 0, 0, 0x03, 0xe8}, make([]byte, 10)...)
	if _, err := ptm.Write(partial); err != nil {
		t.Fatal(err)
	}
	// The next listener: the guest's hello comes back within the stall
	// bound and its nudge's second.
	listenerHello(t, ptm, key, "c9", nonce, 5*time.Second)
	hostHello()
	host, _, _, err := link.Client(ptm, link.V4)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if ok, _, err := host.SendRequest(ctx, wire.RequestProcesses, true, nil); err != nil || !ok {
		t.Fatalf("the next host's request: %v, %v", ok, err)
	}
}

// serveSerial opens c's serial channel, plays the listener's first hello
// on ptm and serves sessions on the channel (a 300 ms frame stall bound,
// TLS where c's guestinfo asks for it) until the test ends. False if the
// channel did not open (the test has failed).
func serveSerial(t *testing.T, c channelChoice, ptm *os.File, key []byte, name, nonce string) bool {
	t.Helper()
	port := make(chan *os.File, 1)
	go func() {
		f, err := openSerialChannel(c)
		if err != nil {
			t.Error(err)
		}
		port <- f
	}()
	listenerHello(t, ptm, key, name, nonce, 10*time.Second)
	f := <-port
	if f == nil {
		return false
	}
	t.Cleanup(func() { f.Close() })
	srv := newServer(slog.New(slog.DiscardHandler), nil)
	srv.rehello = c.hello
	srv.frameStall = 300 * time.Millisecond
	srv.channelTLS = c.channelTLS()
	go srv.serve(f)
	return true
}

// TestStallSessionClosed: once a session is closed (its reader stopped
// by a deadline in the past), the stall bound sets no new deadline that
// would let the reader block again.
func TestStallSessionClosed(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	s := stallSession{&sessionConn{port: r}, time.Second}
	if err := s.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.SetReadDeadline(time.Now().Add(time.Second)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetReadDeadline after Close: %v, want net.ErrClosed", err)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Close: %v, want the past deadline's error", err)
	}
}

// ptyConn is the host's end of a pty as the net.Conn crypto/tls takes;
// with cut set (> 0), a write longer than that sends only its first cut
// bytes (a host dying in the middle of a write).
type ptyConn struct {
	*os.File
	cut *atomic.Int32
}

func (c ptyConn) Write(b []byte) (int, error) {
	if c.cut != nil {
		if n := int(c.cut.Load()); n > 0 && n < len(b) {
			_, err := c.File.Write(b[:n])
			return len(b), err
		}
	}
	return c.File.Write(b)
}

// driverListener plays the vSphere driver's listener (its handshake in
// channel.go) on ptm: its line at once, a nudge answered with its line
// again, other lines that are no hello skipped, at most
// serialauth.MaxNudges lines in all, then the ok.
// It reports whether the guest said a good hello.
func driverListener(t *testing.T, ptm *os.File, key []byte, name, nonce string, limit time.Duration) bool {
	t.Helper()
	hello := serialauth.Magic + " " + nonce + "\n"
	io.WriteString(ptm, hello)
	for i := 0; i <= serialauth.MaxNudges; i++ {
		c := make(chan string, 1)
		go func() {
			s, err := serialauth.ReadLine(ptm)
			if err != nil {
				s = "read error: " + err.Error()
			}
			c <- s
		}()
		var got string
		select {
		case got = <-c:
		case <-time.After(limit):
			t.Logf("listener: nothing from the guest within %s", limit)
			return false
		}
		if i := strings.LastIndex(got, serialauth.Magic+" "); i > 0 {
			got = got[i:] // leftovers, then the hello (as channel.go takes it)
		}
		if strings.HasPrefix(got, serialauth.Magic+" ") {
			if got != serialauth.Magic+" "+name+" "+serialauth.GuestMAC(key, name, nonce) {
				t.Logf("listener: bad hello %q", got)
				return false
			}
			io.WriteString(ptm, "ok "+serialauth.ServerMAC(key, name, nonce)+"\n")
			return true
		}
		if got == "" {
			io.WriteString(ptm, hello) // a nudge; leftovers get no answer
		}
	}
	t.Log("listener: too many lines that are no hello")
	return false
}

func (ptyConn) LocalAddr() net.Addr  { return serialAddr{} }
func (ptyConn) RemoteAddr() net.Addr { return serialAddr{} }

// TestSerialSessionTLS: with guestinfo's TLS key set, each session on a
// serial channel runs TLS after the hello, the host's agent protocol
// inside it; the stall bound still works through TLS (a host that died
// mid-frame, inside TLS, is followed by the next listener's hello and a
// new TLS session that serves requests); a host dying between records
// or in the middle of one, with a listener that sends its line at once
// as the driver's does, is followed by the hello just the same.
func TestSerialSessionTLS(t *testing.T) {
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	defer pts.Close()
	name := strings.TrimPrefix(pts.Name(), "/dev/")
	secret := strings.Repeat("5b", serialauth.SecretBytes)
	key, _ := serialauth.ParseSecret(secret)
	nonce := strings.Repeat("02", serialauth.NonceBytes)
	c := channelChoice{serial: true, device: name, guestinfo: map[string]string{guestinfoName: "c10", guestinfoSecret: secret, guestinfoTLS: "1"}}
	if c.channelTLS() == nil {
		t.Fatal("channelTLS is nil with guestinfo's TLS key set")
	}
	if (channelChoice{serial: true, guestinfo: map[string]string{guestinfoName: "c10", guestinfoSecret: secret}}).channelTLS() != nil {
		t.Fatal("channelTLS is set without guestinfo's TLS key")
	}

	if !serveSerial(t, c, ptm, key, "c10", nonce) {
		return
	}

	cut := new(atomic.Int32)
	host := ptyConn{ptm, cut}
	hostSession := func() net.Conn {
		t.Helper()
		_ = ptm.SetReadDeadline(time.Now().Add(10 * time.Second))
		tc, err := serialauth.ServerHandshake(host, "c10", key)
		if err != nil {
			t.Fatalf("host's TLS: %v", err)
		}
		io.WriteString(tc, wire.Hello)
		got, err := serialauth.ReadLine(tc)
		_ = ptm.SetReadDeadline(time.Time{})
		if err != nil || strings.TrimRight(got, "\r") != strings.TrimRight(wire.Hello4, "\r\n") {
			t.Fatalf("tether answered %q, %v inside TLS; want %q", got, err, wire.Hello4)
		}
		return tc
	}
	// The first host: TLS, hello, a frame header declaring 1000 bytes and
	// 10 of them; then it dies.
	first := hostSession()
	partial := append([]byte{0x50, 0, 0, 0, 1, 0, 0, 0x03, 0xe8}, make([]byte, 10)...)
	if _, err := first.Write(partial); err != nil {
		t.Fatal(err)
	}
	// The next listener: the guest's hello again, then TLS anew.
	listenerHello(t, ptm, key, "c10", nonce, 5*time.Second)
	hostSession()

	// A host that dies between records, its next listener sending its
	// line at once (as the driver's does): the line lands in the live
	// TLS session, which ends; the guest's leftovers (an alert) and its
	// nudge are answered with the line again, and its hello follows.
	if !driverListener(t, ptm, key, "c10", nonce, 5*time.Second) {
		t.Fatal("after a host died between records: no hello to the next listener")
	}
	third := hostSession()

	// A host that dies in the middle of a TLS record (a 15,000-byte
	// frame, one record, cut after 100 bytes): the record's stall bound
	// ends the session, and the next listener gets the hello.
	cut.Store(100)
	third.Write(append([]byte{0x50, 0, 0, 0, 1, 0, 0, 0x3a, 0x98}, make([]byte, 15000)...))
	cut.Store(0)
	if !driverListener(t, ptm, key, "c10", nonce, 5*time.Second) {
		t.Fatal("after a host died mid-record: no hello to the next listener")
	}
	useLink(t, hostSession())
}

// useLink runs the host's side of the link on s and sends one request.
func useLink(t *testing.T, s net.Conn) {
	t.Helper()
	hostLink, _, _, err := link.Client(struct {
		io.Reader
		io.Writer
		io.Closer
	}{s, s, s}, link.V4)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if ok, _, err := hostLink.SendRequest(ctx, wire.RequestProcesses, true, nil); err != nil || !ok {
		t.Fatalf("request inside TLS: %v, %v", ok, err)
	}
}
