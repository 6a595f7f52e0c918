// Package certs makes and loads the TLS material of a VCH's Engine API
// endpoint: a certificate authority, a server certificate and a client
// certificate, all ECDSA P-256 keys signed with SHA-256, made with the
// standard library's crypto/x509.
//
// It owns the file names and their modes in one directory:
//
//	DIR/ca.pem              the CA certificate (0644)
//	DIR/ca-key.pem          the CA key: never handed out (0600)
//	DIR/server-cert.pem     the daemon's certificate (0644)
//	DIR/server-key.pem      the daemon's key (0600)
//	DIR/client/ca.pem       \
//	DIR/client/cert.pem      } what a docker CLI user gets: the directory
//	DIR/client/key.pem      /  DOCKER_CERT_PATH names (key 0600)
//
// Its verbs are [Generate] (write a fresh set), [Load] (read an existing
// set back, e.g. one an operator supplied) and [ServerTLS] (the daemon's
// tls.Config, as dockerd builds it from --tlsverify, --tlscacert,
// --tlscert and --tlskey). It does not decide where a VCH keeps the
// directory (package deploy does) or which addresses may be served
// without TLS (package docker's Listen does).
//
// The server certificate's subject alternative names follow Docker's
// "Protect the Docker daemon socket" guide: the names clients dial
// (localhost, 127.0.0.1, ::1, the host name, the listen address and the
// --tls-cname values). The client certificate carries
// ExtKeyUsageClientAuth, which Go's TLS server requires of client
// certificates it verifies.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/tlsfiles"
)

// File names, as the docker CLI expects them in DOCKER_CERT_PATH (CA,
// Cert, Key) and as Docker's TLS guide names the server's.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server-cert.pem"
	ServerKeyFile  = "server-key.pem"
	CertFile       = "cert.pem"
	KeyFile        = "key.pem"
	// ClientDir is the sub-directory holding the client bundle.
	ClientDir = "client"
)

// Validity periods, each with its reason.
const (
	// CAValidity: the CA outlives several server and client rotations.
	CAValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity: about three years, like docker-machine's certificates;
	// long enough that a VCH handed to a team does not expire mid-project.
	LeafValidity = 3 * 365 * 24 * time.Hour
	// clockSkew back-dates NotBefore so a client whose clock is a little
	// behind still accepts a fresh certificate.
	clockSkew = 5 * time.Minute
)

// Options shape a generated set.
type Options struct {
	// Name names the VCH in the certificates' subjects ("vch NAME CA").
	Name string
	// Hosts are the server certificate's extra names: IP addresses become
	// IP SANs, anything else DNS SANs. localhost, 127.0.0.1 and ::1 are
	// always included; duplicates are dropped.
	Hosts []string
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Set is a loaded or generated set of certificates.
type Set struct {
	// Dir is the directory the files live in (absolute).
	Dir string
	// CA, Server and Client are the parsed certificates; Client is nil
	// when the directory holds no client bundle.
	CA, Server, Client *x509.Certificate
}

// Path returns the path of a file of the set, e.g. Path(CAFile).
func (s Set) Path(name string) string { return filepath.Join(s.Dir, name) }

// ClientPath is the client bundle directory, the DOCKER_CERT_PATH value.
func (s Set) ClientPath() string { return filepath.Join(s.Dir, ClientDir) }

// Generate writes a fresh CA, server and client certificate into dir
// (created 0700 if missing) and returns them parsed. It refuses
// (AlreadyExists) to overwrite an existing ca.pem or server-cert.pem.
// InvalidArgument for an empty Name.
func Generate(dir string, opts Options) (Set, error) {
	if opts.Name == "" {
		return Set{}, fmt.Errorf("certs: a name is required: %w", errdefs.ErrInvalidArgument)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Set{}, fmt.Errorf("certs: %w", err)
	}
	for _, f := range []string{CAFile, ServerCertFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return Set{}, fmt.Errorf("certs: %s already exists; not overwriting it: %w", filepath.Join(dir, f), errdefs.ErrAlreadyExists)
		}
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	caKey, err := newKey()
	if err != nil {
		return Set{}, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "vch " + opts.Name + " CA", Organization: []string{"vch"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	ca, caDER, err := sign(caTmpl, caKey, nil, caKey)
	if err != nil {
		return Set{}, err
	}
	srvKey, err := newKey()
	if err != nil {
		return Set{}, err
	}
	dns, ips := SANs(opts.Hosts)
	srvTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "vch " + opts.Name + " server", Organization: []string{"vch"}},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(LeafValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dns,
		IPAddresses: ips,
	}
	srv, srvDER, err := sign(srvTmpl, srvKey, ca, caKey)
	if err != nil {
		return Set{}, err
	}
	cliKey, err := newKey()
	if err != nil {
		return Set{}, err
	}
	cliTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "vch " + opts.Name + " client", Organization: []string{"vch"}},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(LeafValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cli, cliDER, err := sign(cliTmpl, cliKey, ca, caKey)
	if err != nil {
		return Set{}, err
	}
	clientDir := filepath.Join(dir, ClientDir)
	if err := os.MkdirAll(clientDir, 0o700); err != nil {
		return Set{}, fmt.Errorf("certs: %w", err)
	}
	files := []struct {
		path string
		pem  []byte
		mode os.FileMode
	}{
		{filepath.Join(dir, CAKeyFile), keyPEM(caKey), 0o600},
		{filepath.Join(dir, ServerKeyFile), keyPEM(srvKey), 0o600},
		{filepath.Join(dir, ServerCertFile), certPEM(srvDER), 0o644},
		{filepath.Join(clientDir, KeyFile), keyPEM(cliKey), 0o600},
		{filepath.Join(clientDir, CertFile), certPEM(cliDER), 0o644},
		{filepath.Join(clientDir, CAFile), certPEM(caDER), 0o644},
		// ca.pem last: its presence marks a complete set.
		{filepath.Join(dir, CAFile), certPEM(caDER), 0o644},
	}
	for _, f := range files {
		if f.pem == nil {
			return Set{}, fmt.Errorf("certs: encode %s: %w", f.path, errdefs.ErrInternal)
		}
		if err := writeFile(f.path, f.pem, f.mode); err != nil {
			return Set{}, err
		}
	}
	return Set{Dir: dir, CA: ca, Server: srv, Client: cli}, nil
}

// SANs splits hosts into the server certificate's DNS names and IP
// addresses, always including localhost, 127.0.0.1 and ::1, without
// duplicates, in first-seen order. Empty strings and the unspecified
// addresses (0.0.0.0, ::) are skipped: no client dials them.
func SANs(hosts []string) ([]string, []net.IP) {
	var dns []string
	var ips []net.IP
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip.IsUnspecified() || slices.ContainsFunc(ips, ip.Equal) {
				continue
			}
			ips = append(ips, ip)
			continue
		}
		h = strings.ToLower(h)
		if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// Load reads the set in dir: ca.pem, server-cert.pem and server-key.pem
// must exist and the server certificate must chain to the CA; the client
// bundle is optional. NotFound if a required file is missing;
// InvalidArgument if a file does not parse or the chain does not verify.
func Load(dir string) (Set, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Set{}, fmt.Errorf("certs: %w", err)
	}
	s := Set{Dir: dir}
	if s.CA, err = readCert(filepath.Join(dir, CAFile)); err != nil {
		return Set{}, err
	}
	if s.Server, err = readCert(filepath.Join(dir, ServerCertFile)); err != nil {
		return Set{}, err
	}
	if _, err := tls.LoadX509KeyPair(s.Path(ServerCertFile), s.Path(ServerKeyFile)); err != nil {
		return Set{}, fmt.Errorf("certs: server key pair in %s: %w: %w", dir, err, errdefs.ErrInvalidArgument)
	}
	if err := Verify(s.CA, s.Server, x509.ExtKeyUsageServerAuth); err != nil {
		return Set{}, err
	}
	if c, err := readCert(filepath.Join(dir, ClientDir, CertFile)); err == nil {
		s.Client = c
	} else if !errdefs.IsNotFound(err) {
		return Set{}, err
	}
	return s, nil
}

// Verify checks that leaf chains to ca for usage at the current time.
// InvalidArgument (with x509's reason) if it does not.
func Verify(ca, leaf *x509.Certificate, usage x509.ExtKeyUsage) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("certs: %q does not verify against CA %q: %w: %w", leaf.Subject.CommonName, ca.Subject.CommonName, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ServerTLS returns the daemon's TLS configuration, as dockerd builds it:
// certFile and keyFile are the server's key pair; with verify, clients
// must present a certificate that chains to the CA in caFile
// (tls.RequireAndVerifyClientCert); without it no client certificate is
// asked for and caFile may be empty. TLS 1.2 is the minimum, as in
// dockerd. InvalidArgument if a file cannot be read or parsed.
func ServerTLS(caFile, certFile, keyFile string, verify bool) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: could not load X509 key pair (cert: %q, key: %q): %w: %w", certFile, keyFile, err, errdefs.ErrInvalidArgument)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.NoClientCert,
	}
	if verify {
		pool, err := caPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLS returns a client configuration from a DOCKER_CERT_PATH-style
// directory (ca.pem, cert.pem, key.pem), verifying the server against
// ca.pem, as the docker CLI does with DOCKER_TLS_VERIFY=1.
// InvalidArgument if a file cannot be read or parsed.
func ClientTLS(certPath string) (*tls.Config, error) {
	return tlsfiles.Client(filepath.Join(certPath, CAFile), filepath.Join(certPath, CertFile), filepath.Join(certPath, KeyFile))
}

func caPool(caFile string) (*x509.CertPool, error) { return tlsfiles.CAPool(caFile) }

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate key: %w", err)
	}
	return k, nil
}

// sign issues tmpl (with a random 128-bit serial and a subject key ID)
// for key, signed by parent/parentKey, or self-signed when parent is nil.
func sign(tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parse %q: %w", tmpl.Subject.CommonName, err)
	}
	return c, der, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// keyPEM encodes key as PKCS #8 ("PRIVATE KEY"), which both Go's
// tls.X509KeyPair and OpenSSL read; nil if it cannot be marshalled.
func keyPEM(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// writeFile writes b to path with mode, refusing to follow or replace an
// existing file (O_EXCL), so a key is never written through a symlink.
func writeFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("certs: %s already exists; not overwriting it: %w", path, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("certs: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("certs: %s is missing: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certs: %s holds no PEM certificate: %w", path, errdefs.ErrInvalidArgument)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: parse %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return c, nil
}
