package storage

import (
	"context"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/vchproject/vch/internal/portlayer"
)

var _ portlayer.RegistryLogin = (*Store)(nil)

// Login implements portlayer.RegistryLogin: it asks the registry's /v2/
// endpoint (OCI distribution-spec "API version check") with the
// credentials, after the registry's own challenge (basic, or a bearer
// token fetched from its token service, as go-containerregistry's
// transport does). Plain HTTP for loopback and --insecure-registry hosts,
// as pull and push. Errors: Unauthenticated when the registry refuses the
// credentials (text "login attempt to … failed with status: 401
// Unauthorized"); InvalidArgument for a bad server address; Unavailable
// when the registry cannot be reached; PermissionDenied too for a registry
// the whitelist leaves out.
func (s *Store) Login(ctx context.Context, server string, auth portlayer.RegistryAuth) error {
	domain := loginDomain(server)
	if err := s.cfg.Registries.allow(domain); err != nil {
		return err
	}
	var opts []name.Option
	if isLoopback(domain) || s.cfg.Registries.insecure(domain) {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(domain, opts...)
	if err != nil {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "login: %w", err)
	}
	url := reg.Scheme() + "://" + reg.RegistryStr() + "/v2/"
	tr, err := transport.NewWithContext(ctx, reg, authenticator(auth), s.cfg.Registries.transport(domain), nil)
	if err != nil {
		if te, ok := err.(*transport.Error); ok && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
			return &portlayer.Error{Class: portlayer.ClassUnauthenticated, Op: "login", Kind: portlayer.KindRegistry, ID: url, Reason: portlayer.ReasonDenied, Message: "storage: login to " + url + ": the registry refused the credentials", Err: err}
		}
		return portlayer.Errorf(portlayer.ClassUnavailable, "login to %s: %w", domain, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "login: %w", err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return portlayer.Errorf(portlayer.ClassUnavailable, "login to %s: %w", domain, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		s.log.Info("registry login", "registry", domain, "user", auth.Username)
		return nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return &portlayer.Error{Class: portlayer.ClassUnauthenticated, Op: "login", Kind: portlayer.KindRegistry, ID: url, Value: resp.Status, Message: "storage: login to " + url + ": status " + resp.Status}
	default:
		return portlayer.Errorf(portlayer.ClassUnavailable, "login to %s: %s", url, resp.Status)
	}
}

// loginDomain turns a login server address ("https://index.docker.io/v1/",
// "localhost:5000", empty) into a registry host[:port].
func loginDomain(server string) string {
	s := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	if s == "" || s == "docker.io" || s == "index.docker.io" {
		return "index.docker.io"
	}
	return s
}
