package serialauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// TLS on the channel. After the hello both sides run TLS 1.3 over the
// same stream (the listener as the server), so what crosses the network
// between the VM's host and the VCH — a container's input and output,
// files, the environment of its processes — is encrypted, and bound to
// the two ends that hold the VM's secret: each presents a self-signed
// certificate whose Ed25519 key is derived from the secret (a seed of
// HMAC-SHA256(secret, "vch-channel v1 tls ROLE NAME"), RFC 8032 section
// 5.1.5 for the key), and each accepts only the peer's derived key. No
// certificate authority, no fingerprint to distribute: a restarted
// daemon that reads the secret back derives the same keys. The hello
// before it stays as it is: it names the VM (so the listener knows whose
// keys to expect) and survives a UART's lost bytes, which a TLS
// handshake would not.

// TLS roles, in the key derivation's label.
const (
	roleServer = "server"
	roleGuest  = "guest"
)

// ServerTLS is the listener's TLS configuration for the VM named name
// holding secret: TLS 1.3 only, its certificate from the secret, and the
// guest's certificate required and checked against the guest's derived
// key. Errors only if a certificate cannot be made.
func ServerTLS(secret []byte, name string) (*tls.Config, error) {
	cert, err := certificate(secret, roleServer, name)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: peerKey(secret, roleGuest, name),
		// No resumption: a resumed session skips VerifyPeerCertificate,
		// and a ticket is bytes the serial line carries for nothing.
		SessionTicketsDisabled: true,
	}, nil
}

// GuestTLS is the guest's TLS configuration for the VM named name
// holding secret: TLS 1.3 only, its certificate from the secret, and the
// listener's certificate checked against the listener's derived key (in
// place of a certificate chain: InsecureSkipVerify only skips the chain
// and host name checks, VerifyPeerCertificate still runs). Errors only if
// a certificate cannot be made.
func GuestTLS(secret []byte, name string) (*tls.Config, error) {
	cert, err := certificate(secret, roleGuest, name)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		InsecureSkipVerify:     true,
		VerifyPeerCertificate:  peerKey(secret, roleServer, name),
		SessionTicketsDisabled: true,
	}, nil
}

// derivedKey is role's Ed25519 key for the VM named name.
func derivedKey(secret []byte, role, name string) ed25519.PrivateKey {
	seed := macBytes(secret, Magic+" tls "+role+" "+name)
	return ed25519.NewKeyFromSeed(seed)
}

// certificate is a self-signed certificate for role's derived key.
func certificate(secret []byte, role, name string) (tls.Certificate, error) {
	key := derivedKey(secret, role, name)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serialauth: channel certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ErrWrongPeerKey is why a TLS handshake was refused: the peer's
// certificate does not carry the key derived from the VM's secret.
var ErrWrongPeerKey = errors.New("serialauth: the channel's peer does not hold the VM's secret")

// peerKey checks that the peer's certificate carries role's derived key.
func peerKey(secret []byte, role, name string) func([][]byte, [][]*x509.Certificate) error {
	want := derivedKey(secret, role, name).Public().(ed25519.PublicKey)
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return ErrWrongPeerKey
		}
		c, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("%w: %w", ErrWrongPeerKey, err)
		}
		got, ok := c.PublicKey.(ed25519.PublicKey)
		if !ok || !got.Equal(want) {
			return ErrWrongPeerKey
		}
		return nil
	}
}

// GuestHandshake runs the guest's side of the channel's TLS on c, right
// after a successful [Guest] hello, and returns the encrypted stream the
// agent protocol then runs on. c's deadlines bound it. Errors: c's, the
// handshake's, or ErrWrongPeerKey wrapped by TLS's alert error.
func GuestHandshake(c net.Conn, name string, secret []byte) (*tls.Conn, error) {
	cfg, err := GuestTLS(secret, name)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("serialauth: channel TLS: %w", err)
	}
	return tc, nil
}

// ServerHandshake is the listener's side of [GuestHandshake], after it
// sent its ok; c's deadlines bound it.
func ServerHandshake(c net.Conn, name string, secret []byte) (*tls.Conn, error) {
	cfg, err := ServerTLS(secret, name)
	if err != nil {
		return nil, err
	}
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("serialauth: channel TLS: %w", err)
	}
	return tc, nil
}
