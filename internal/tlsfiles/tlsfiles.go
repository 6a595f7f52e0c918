// Package tlsfiles builds TLS configurations from PEM files, for the
// clients and servers of vch's endpoints (the Docker endpoint's mutual
// TLS, the Port Layer API over TCP). TLS 1.2 is the minimum, as in
// dockerd.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
)

// CAPool reads the PEM certificates of caFile into a pool.
// InvalidArgument if it cannot be read or holds none.
func CAPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: could not read CA certificate %q: %w: %w", caFile, err, errdefs.ErrInvalidArgument)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: no certificate in CA file %q: %w", caFile, errdefs.ErrInvalidArgument)
	}
	return pool, nil
}

// Client is a client configuration that verifies the server against
// caFile and presents the key pair certFile/keyFile (mutual TLS).
// InvalidArgument if a file cannot be read or parsed.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := CAPool(caFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: client key pair (cert: %q, key: %q): %w: %w", certFile, keyFile, err, errdefs.ErrInvalidArgument)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}
