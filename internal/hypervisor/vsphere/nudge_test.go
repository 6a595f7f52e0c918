package vsphere

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/agent/serialauth"
)

// TestHandshakeNudges: the guest's side of package serialauth against the
// driver's, over a connection whose first line the guest "lost": it
// nudges, the driver sends the same nonce line again, and the channel is
// handed to the waiting Start; an echo of the driver's line is skipped;
// a hello after a dying session's leftovers on its line is taken; a
// peer that only nudges is refused.
func TestHandshakeNudges(t *testing.T) {
	d := &Driver{cfg: Config{ConnectTimeout: 5 * time.Second}, waiting: map[string]*waiter{}, vms: map[string]*vm{}}
	w, err := d.expect("c1")
	if err != nil {
		t.Fatal(err)
	}
	host, guest := net.Pipe()
	res := make(chan error, 1)
	go func() {
		_, err := d.handshake(host)
		res <- err
	}()
	first, err := serialauth.ReadLine(guest)
	if err != nil || !strings.HasPrefix(first, helloMagic+" ") {
		t.Fatalf("first line %q, %v", first, err)
	}
	if err := serialauth.Guest(guest, "c1", w.secret); err != nil {
		// The guest saw no hello yet (the first went to the test):
		// it must have nudged and got the same line again.
		t.Fatalf("Guest after a lost first line: %v", err)
	}
	if _, err := serialauth.GuestHandshake(guest, "c1", w.secret); err != nil {
		t.Fatalf("TLS after the hello: %v", err)
	}
	if err := <-res; err != nil {
		t.Fatalf("handshake: %v", err)
	}
	select {
	case <-w.conn:
	default:
		t.Fatal("the channel was not handed to the waiting Start")
	}

	// A terminal not yet raw echoes the listener's line (its end, with
	// "\r\n"; and, from a UART starting up, with bytes lost at both
	// ends, as seen under QEMU): skipped, not refused.
	w3, _ := d.expect("c3")
	host, guest = net.Pipe()
	go func() {
		_, err := d.handshake(host)
		res <- err
	}()
	first, err = serialauth.ReadLine(guest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(guest, first[3:]+"\r\n"+first[4:45]+"\n"); err != nil {
		t.Fatal(err)
	}
	if err := serialauth.Guest(guest, "c3", w3.secret); err != nil {
		t.Fatalf("Guest after an echo: %v", err)
	}
	if _, err := serialauth.GuestHandshake(guest, "c3", w3.secret); err != nil {
		t.Fatalf("TLS after the hello: %v", err)
	}
	if err := <-res; err != nil {
		t.Fatalf("handshake after an echo: %v", err)
	}

	// What a guest's last session still wrote (a TLS alert, binary, no
	// newline of its own) glued to its hello: the hello is taken.
	w4, _ := d.expect("c4")
	host, guest = net.Pipe()
	go func() {
		_, err := d.handshake(host)
		res <- err
	}()
	first, err = serialauth.ReadLine(guest)
	if err != nil {
		t.Fatal(err)
	}
	nonce := strings.TrimPrefix(first, helloMagic+" ")
	if _, err := io.WriteString(guest, "\x17\x03\x03\x00\x13\xcc;\x9f"+helloMagic+" c4 "+GuestMAC(w4.secret, "c4", nonce)+"\n"); err != nil {
		t.Fatal(err)
	}
	if ok, err := serialauth.ReadLine(guest); err != nil || ok != "ok "+ServerMAC(w4.secret, "c4", nonce) {
		t.Fatalf("answer to a hello after leftovers: %q, %v", ok, err)
	}
	if _, err := serialauth.GuestHandshake(guest, "c4", w4.secret); err != nil {
		t.Fatalf("TLS after the hello: %v", err)
	}
	if err := <-res; err != nil {
		t.Fatalf("handshake after leftovers: %v", err)
	}

	w2, _ := d.expect("c2")
	host, guest = net.Pipe()
	go func() {
		_, err := d.handshake(host)
		res <- err
	}()
	go func() {
		for i := 0; i <= serialauth.MaxNudges+1; i++ {
			if _, err := serialauth.ReadLine(guest); err != nil {
				return
			}
			guest.Write([]byte("\n"))
		}
	}()
	var eh errHello
	if err := <-res; !errors.As(err, &eh) {
		t.Errorf("a peer that only nudges: handshake = %v, want refused", err)
	}
	guest.Close()
	d.unexpect(w2)
}
