package serialauth

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// handshakePair runs a TLS handshake over a pipe with the two configs and
// returns both sides' errors, and, when both succeeded, what the guest
// read of a line the server wrote.
func handshakePair(t *testing.T, server, guest *tls.Config) (serr, gerr error, got string) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_ = a.SetDeadline(time.Now().Add(10 * time.Second))
	_ = b.SetDeadline(time.Now().Add(10 * time.Second))
	s, g := tls.Server(a, server), tls.Client(b, guest)
	done := make(chan error, 1)
	go func() {
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte("secret words\n"))
		}
		if err != nil {
			a.Close() // the guest's side then fails too
		}
		done <- err
	}()
	gerr = g.Handshake()
	if gerr == nil {
		buf := make([]byte, 13)
		if _, err := io.ReadFull(g, buf); err != nil {
			gerr = err
		}
		got = string(buf)
	} else {
		b.Close()
	}
	serr = <-done
	return serr, gerr, got
}

// TestTLS: the two ends of one VM's channel complete TLS 1.3 with keys
// from its secret and carry data; a guest holding another secret or
// claiming another name, a guest without a certificate, and a listener
// holding another secret are each refused.
func TestTLS(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, SecretBytes)
	other := bytes.Repeat([]byte{8}, SecretBytes)
	mustServer := func(secret []byte, name string) *tls.Config {
		c, err := ServerTLS(secret, name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mustGuest := func(secret []byte, name string) *tls.Config {
		c, err := GuestTLS(secret, name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	serr, gerr, got := handshakePair(t, mustServer(secret, "vm1"), mustGuest(secret, "vm1"))
	if serr != nil || gerr != nil || got != "secret words\n" {
		t.Fatalf("same secret: server %v, guest %v, read %q", serr, gerr, got)
	}

	// refuser is the side that must report ErrWrongPeerKey ("" when
	// the refusal is TLS's own: no certificate at all).
	for _, tc := range []struct {
		name          string
		server, guest *tls.Config
		refuser       string
	}{
		{"guest_other_secret", mustServer(secret, "vm1"), mustGuest(other, "vm1"), "guest"},
		{"guest_other_name", mustServer(secret, "vm1"), mustGuest(secret, "vm2"), "guest"},
		{"server_other_secret", mustServer(other, "vm1"), mustGuest(secret, "vm1"), "guest"},
		{"guest_key_from_other_secret", mustServer(secret, "vm1"), func() *tls.Config {
			c := mustGuest(other, "vm1") // its own key wrong, its check of the server right
			c.VerifyPeerCertificate = peerKey(secret, roleServer, "vm1")
			return c
		}(), "server"},
		{"guest_without_certificate", mustServer(secret, "vm1"), func() *tls.Config {
			c := mustGuest(secret, "vm1")
			c.Certificates = nil
			return c
		}(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serr, gerr, _ := handshakePair(t, tc.server, tc.guest)
			if serr == nil || gerr == nil {
				t.Fatalf("handshake: server %v, guest %v; want both to fail", serr, gerr)
			}
			switch {
			case tc.refuser == "guest" && !errors.Is(gerr, ErrWrongPeerKey):
				t.Errorf("guest: %v, want ErrWrongPeerKey", gerr)
			case tc.refuser == "server" && !errors.Is(serr, ErrWrongPeerKey):
				t.Errorf("server: %v, want ErrWrongPeerKey", serr)
			}
		})
	}
}
