package storage

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/vchproject/vch/internal/portlayer"
)

// Registries is a VCH's registry policy for pulls: which registries may be
// used at all and which are spoken to without verified TLS. The zero value
// allows every registry and treats only loopback ones as insecure.
//
// An entry is one of:
//   - "host:port": that registry exactly;
//   - "host": that host on any port;
//   - "*.example.com" (optionally ":port"): any host under example.com;
//   - a CIDR such as "192.0.2.0/24": any registry at an IP address in it.
//
// Hosts compare case-insensitively. Docker Hub may be named "docker.io",
// "index.docker.io" or "registry-1.docker.io"; each matches the others.
type Registries struct {
	// Insecure lists registries spoken to without a verified
	// certificate: HTTPS without verifying the certificate, falling back
	// to plain HTTP.
	Insecure []string `toml:"insecure" json:"insecure,omitempty"`
	// Allowed, when non-empty, is the whitelist: a pull from any registry
	// not matching an entry is refused (PermissionDenied), before any
	// connection is made (vic-machine's --whitelist-registry).
	Allowed []string `toml:"allowed" json:"allowed,omitempty"`
	// CAFiles are PEM files of extra CA certificates trusted, besides the
	// system pool, for every TLS registry on pull and push (as a
	// certs.d/<host>/ca.crt file would, but for all hosts at once).
	CAFiles []string `toml:"ca_files" json:"ca_files,omitempty"`
}

// Validate checks every entry's syntax. InvalidArgument names the first
// bad one.
func (r Registries) Validate() error {
	for _, list := range [][]string{r.Insecure, r.Allowed} {
		for _, e := range list {
			if _, err := parseRegistryEntry(e); err != nil {
				return err
			}
		}
	}
	if _, err := r.rootCAs(); err != nil {
		return err
	}
	return nil
}

// rootCAs returns the system pool plus every certificate in CAFiles, or
// nil (the system pool) when CAFiles is empty. InvalidArgument for a file
// that cannot be read or holds no PEM certificate.
func (r Registries) rootCAs() (*x509.CertPool, error) {
	if len(r.CAFiles) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range r.CAFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "registry CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "registry CA %s: no PEM certificate in it", f)
		}
	}
	return pool, nil
}

// allow returns nil if a pull from domain (a reference's registry,
// "docker.io" for Docker Hub) is allowed, PermissionDenied otherwise.
func (r Registries) allow(domain string) error {
	if len(r.Allowed) == 0 || matchRegistry(r.Allowed, domain) {
		return nil
	}
	return portlayer.Errorf(portlayer.ClassPermissionDenied, "access denied to registry %s: this VCH pulls only from %s", domain, strings.Join(r.Allowed, ", "))
}

// insecure reports whether domain is spoken to without verified TLS.
func (r Registries) insecure(domain string) bool {
	return matchRegistry(r.Insecure, domain)
}

// transport returns the registry transport for domain: certificate
// checks are skipped for insecure registries; others trust the system
// pool plus CAFiles (checked by Validate, so a read error here, a file
// changed since, falls back to the system pool and fails the handshake).
func (r Registries) transport(domain string) http.RoundTripper {
	t := registryTransport().(*http.Transport)
	if r.insecure(domain) {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator listed it with --insecure-registry
	} else if pool, _ := r.rootCAs(); pool != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t
}

// registryEntry is one parsed entry.
type registryEntry struct {
	cidr     *net.IPNet
	host     string // lower case; "*.x" keeps the "*."
	port     string // "" matches any port
	wildcard bool
}

func parseRegistryEntry(e string) (registryEntry, error) {
	bad := func() (registryEntry, error) {
		return registryEntry{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "registry %q: want host, host:port, *.domain or a CIDR", e)
	}
	e = strings.TrimSpace(e)
	if e == "" || strings.Contains(e, "://") {
		return bad()
	}
	if _, n, err := net.ParseCIDR(e); err == nil {
		return registryEntry{cidr: n}, nil
	}
	if strings.Contains(e, "/") {
		return bad()
	}
	host, port := e, ""
	if h, p, err := net.SplitHostPort(e); err == nil {
		host, port = h, p
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	ent := registryEntry{host: host, port: port}
	if strings.HasPrefix(host, "*.") {
		ent.wildcard = true
		host = host[2:]
	}
	if host == "" || strings.ContainsAny(host, " *") {
		return bad()
	}
	return ent, nil
}

// dockerHub names Docker Hub's registry, however it is spelled.
var dockerHub = map[string]bool{"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true}

func matchRegistry(entries []string, domain string) bool {
	host, port := strings.ToLower(domain), ""
	if h, p, err := net.SplitHostPort(domain); err == nil {
		host, port = strings.ToLower(h), p
	}
	host = strings.Trim(host, "[]")
	ip := net.ParseIP(host)
	for _, raw := range entries {
		e, err := parseRegistryEntry(raw)
		if err != nil {
			continue
		}
		switch {
		case e.cidr != nil:
			if ip != nil && e.cidr.Contains(ip) {
				return true
			}
		case e.port != "" && e.port != port:
		case e.wildcard:
			if strings.HasSuffix(host, e.host[1:]) {
				return true
			}
		case e.host == host, dockerHub[e.host] && dockerHub[host]:
			return true
		}
	}
	return false
}
