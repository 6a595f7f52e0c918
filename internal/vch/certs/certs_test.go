package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/vch/certs"
)

func generate(t *testing.T, hosts ...string) certs.Set {
	t.Helper()
	s, err := certs.Generate(filepath.Join(t.TempDir(), "certs"), certs.Options{Name: "team1", Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGenerateChains(t *testing.T) {
	s := generate(t, "vch.example.com", "192.0.2.10", "0.0.0.0", "127.0.0.1")
	if !s.CA.IsCA || s.CA.MaxPathLen != 0 || !s.CA.MaxPathLenZero {
		t.Errorf("CA: IsCA=%v MaxPathLen=%d", s.CA.IsCA, s.CA.MaxPathLen)
	}
	for _, c := range []*x509.Certificate{s.CA, s.Server, s.Client} {
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", c.Subject.CommonName, c.PublicKey)
		}
		if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("%s: signature %v", c.Subject.CommonName, c.SignatureAlgorithm)
		}
	}
	tests := []struct {
		name    string
		leaf    *x509.Certificate
		usage   x509.ExtKeyUsage
		wantErr bool
	}{
		{name: "server for server auth", leaf: s.Server, usage: x509.ExtKeyUsageServerAuth},
		{name: "client for client auth", leaf: s.Client, usage: x509.ExtKeyUsageClientAuth},
		{name: "client is no server", leaf: s.Client, usage: x509.ExtKeyUsageServerAuth, wantErr: true},
		{name: "server is no client", leaf: s.Server, usage: x509.ExtKeyUsageClientAuth, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := certs.Verify(s.CA, tc.leaf, tc.usage)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Verify: %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("error class: %v", err)
			}
		})
	}
	// Another VCH's CA does not vouch for this one's certificates.
	other := generate(t)
	if err := certs.Verify(other.CA, s.Client, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("client verified against a foreign CA")
	}
	wantDNS := []string{"localhost", "vch.example.com"}
	if strings.Join(s.Server.DNSNames, ",") != strings.Join(wantDNS, ",") {
		t.Errorf("DNS SANs %v, want %v", s.Server.DNSNames, wantDNS)
	}
	var ips []string
	for _, ip := range s.Server.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got, want := strings.Join(ips, ","), "127.0.0.1,::1,192.0.2.10"; got != want {
		t.Errorf("IP SANs %s, want %s", got, want)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "vch.example.com", "192.0.2.10"} {
		if err := s.Server.VerifyHostname(host); err != nil {
			t.Errorf("server cert for %s: %v", host, err)
		}
	}
}

func TestGenerateFiles(t *testing.T) {
	s := generate(t)
	modes := map[string]os.FileMode{
		certs.CAFile: 0o644, certs.CAKeyFile: 0o600, certs.ServerCertFile: 0o644, certs.ServerKeyFile: 0o600,
		"client/" + certs.CAFile: 0o644, "client/" + certs.CertFile: 0o644, "client/" + certs.KeyFile: 0o600,
	}
	for name, want := range modes {
		st, err := os.Stat(s.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
	ents, _ := os.ReadDir(s.ClientPath())
	if len(ents) != 3 {
		t.Errorf("client bundle holds %d files, want ca.pem, cert.pem, key.pem only", len(ents))
	}
	if _, err := certs.Generate(s.Dir, certs.Options{Name: "again"}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Generate in the same dir: %v, want AlreadyExists", err)
	}
	if _, err := certs.Generate(t.TempDir(), certs.Options{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Generate without a name: %v, want InvalidArgument", err)
	}
}

func TestLoad(t *testing.T) {
	s := generate(t, "vch.example.com")
	got, err := certs.Load(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Server.Equal(s.Server) || !got.CA.Equal(s.CA) || got.Client == nil || !got.Client.Equal(s.Client) {
		t.Error("Load returned other certificates than Generate wrote")
	}

	t.Run("missing server cert", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, s.Path(certs.CAFile), filepath.Join(dir, certs.CAFile))
		if _, err := certs.Load(dir); !errdefs.IsNotFound(err) {
			t.Errorf("Load: %v, want NotFound", err)
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		other := generate(t)
		dir := t.TempDir()
		copyFile(t, other.Path(certs.CAFile), filepath.Join(dir, certs.CAFile))
		copyFile(t, s.Path(certs.ServerCertFile), filepath.Join(dir, certs.ServerCertFile))
		copyFile(t, s.Path(certs.ServerKeyFile), filepath.Join(dir, certs.ServerKeyFile))
		if _, err := certs.Load(dir); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Load: %v, want InvalidArgument", err)
		}
	})
	t.Run("key does not match", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, s.Path(certs.CAFile), filepath.Join(dir, certs.CAFile))
		copyFile(t, s.Path(certs.ServerCertFile), filepath.Join(dir, certs.ServerCertFile))
		copyFile(t, s.Path(certs.CAKeyFile), filepath.Join(dir, certs.ServerKeyFile))
		if _, err := certs.Load(dir); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Load: %v, want InvalidArgument", err)
		}
	})
}

// TestMutualTLS serves HTTPS with ServerTLS and dials it as the docker CLI
// would: with the client bundle it gets through; without a certificate,
// with a foreign one, or without trusting the CA it is refused.
func TestMutualTLS(t *testing.T) {
	s := generate(t)
	other := generate(t)
	srvCfg, err := certs.ServerTLS(s.Path(certs.CAFile), s.Path(certs.ServerCertFile), s.Path(certs.ServerKeyFile), true)
	if err != nil {
		t.Fatal(err)
	}
	if srvCfg.ClientAuth != tls.RequireAndVerifyClientCert || srvCfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("ClientAuth %v MinVersion %x", srvCfg.ClientAuth, srvCfg.MinVersion)
	}
	url := serveTLS(t, srvCfg)
	good, err := certs.ClientTLS(s.ClientPath())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := certs.ClientTLS(other.ClientPath())
	if err != nil {
		t.Fatal(err)
	}
	// foreignCert trusts this VCH's CA but presents another VCH's client cert.
	foreignCert := good.Clone()
	foreignCert.Certificates = foreign.Certificates
	noCert := good.Clone()
	noCert.Certificates = nil

	tests := []struct {
		name   string
		cfg    *tls.Config
		wantOK bool
	}{
		{name: "client bundle", cfg: good, wantOK: true},
		{name: "no client certificate", cfg: noCert},
		{name: "client certificate of another VCH", cfg: foreignCert},
		{name: "server not trusted", cfg: foreign},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := get(t, url, tc.cfg)
			if tc.wantOK && err != nil {
				t.Fatalf("GET: %v", err)
			}
			if !tc.wantOK && err == nil {
				t.Fatal("GET succeeded, want refused")
			}
		})
	}

	t.Run("no verify asks for no certificate", func(t *testing.T) {
		cfg, err := certs.ServerTLS("", s.Path(certs.ServerCertFile), s.Path(certs.ServerKeyFile), false)
		if err != nil {
			t.Fatal(err)
		}
		if err := get(t, serveTLS(t, cfg), noCert); err != nil {
			t.Errorf("GET without a client cert: %v", err)
		}
	})
	t.Run("bad files", func(t *testing.T) {
		_, err := certs.ServerTLS(s.Path(certs.CAFile), s.Path(certs.ServerCertFile), s.Path(certs.CAKeyFile), true)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("mismatched key: %v, want InvalidArgument", err)
		}
		_, err = certs.ServerTLS(filepath.Join(t.TempDir(), "none.pem"), s.Path(certs.ServerCertFile), s.Path(certs.ServerKeyFile), true)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("missing CA: %v, want InvalidArgument", err)
		}
	})
}

func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") }),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.Serve(tls.NewListener(l, cfg))
	t.Cleanup(func() { srv.Close() })
	return "https://" + l.Addr().String() + "/_ping"
}

func get(t *testing.T, url string, cfg *tls.Config) error {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		// TLS 1.3: a refused client certificate surfaces on the first read.
		return err
	}
	if string(b) != "OK" {
		return errors.New("unexpected body " + string(b))
	}
	return nil
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
