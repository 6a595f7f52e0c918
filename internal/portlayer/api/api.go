// Package api is the port layer's network API, version 1: an HTTP/JSON
// server over the port layer's Go interfaces, described by the OpenAPI 3
// document openapi.yaml (served as JSON at GET /v1/openapi.json).
// Package client is its Go client. See docs/portlayer.md.
package api

import (
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/vchproject/vch/internal/portlayer"
)

// Prefix is the path prefix of every route of this version.
const Prefix = "/v1"

//go:embed openapi.yaml
var documentYAML []byte

// Document is the OpenAPI document, parsed and validated. It fails only
// if the embedded document is broken, which the package's tests catch.
func Document() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(documentYAML)
	if err != nil {
		return nil, fmt.Errorf("api: openapi.yaml: %w", err)
	}
	if err := doc.Validate(openapi3.NewLoader().Context); err != nil {
		return nil, fmt.Errorf("api: openapi.yaml: %w", err)
	}
	return doc, nil
}

// StatusOf is the HTTP status for an error class, as the document's
// Error response lists them.
func StatusOf(c portlayer.ErrorClass) int {
	switch c {
	case portlayer.ClassNotFound:
		return http.StatusNotFound
	case portlayer.ClassAlreadyExists, portlayer.ClassConflict:
		return http.StatusConflict
	case portlayer.ClassNotModified:
		// Not 304, whose answer has no body: the Error body says what
		// was left unchanged and why.
		return http.StatusConflict
	case portlayer.ClassInvalidArgument, portlayer.ClassFailedPrecondition:
		return http.StatusBadRequest
	case portlayer.ClassUnavailable, portlayer.ClassResourceExhausted:
		return http.StatusServiceUnavailable
	case portlayer.ClassNotImplemented:
		return http.StatusNotImplemented
	case portlayer.ClassPermissionDenied:
		return http.StatusForbidden
	case portlayer.ClassUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// ErrorBody is err as the API's Error body: its *portlayer.Error's
// fields, or for an untyped error its class and text. The message is
// never empty: an error without text says which class it is.
func ErrorBody(err error) portlayer.Error {
	var body portlayer.Error
	if pe := portlayer.AsError(err); pe != nil {
		body = *pe
		body.Cause = pe.CauseText()
		body.Err = nil
	} else {
		body = portlayer.Error{Class: portlayer.ClassOf(err), Message: err.Error()}
	}
	if body.Message == "" {
		body.Message = "port layer error of class " + string(body.Class) + ", without a message"
	}
	return body
}

// writeJSON answers code with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Listen opens the API's listener at addr: "unix:///PATH.sock", a socket
// only its owner (root, for a daemon) may connect to (mode 0600), a
// stale socket file at PATH replaced; or "tcp://HOST:PORT", served only
// with mutual TLS: tlsCfg must require and verify client certificates
// (a daemon's --tlsverify). InvalidArgument for any other form, or TCP
// without mutual TLS.
func Listen(addr string, tlsCfg *tls.Config) (net.Listener, error) {
	if hostPort, ok := strings.CutPrefix(addr, "tcp://"); ok {
		if tlsCfg == nil || tlsCfg.ClientAuth != tls.RequireAndVerifyClientCert {
			return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument,
				Message: fmt.Sprintf("port layer address %q: TCP is served only with mutual TLS (the daemon's --tlsverify and its certificates)", addr)}
		}
		l, err := net.Listen("tcp", hostPort)
		if err != nil {
			return nil, fmt.Errorf("api: listen on %s: %w", addr, err)
		}
		return tls.NewListener(l, tlsCfg), nil
	}
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok || path == "" || !filepath.IsAbs(path) {
		return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument,
			Message: fmt.Sprintf("port layer address %q: want unix:///ABSOLUTE/PATH.sock or tcp://HOST:PORT", addr)}
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, &portlayer.Error{Class: portlayer.ClassAlreadyExists, Message: "port layer address " + addr + ": a server already listens there"}
		}
		_ = os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", addr, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	return l, nil
}

// Serve serves h on l until ctx ends, then shuts down, giving requests
// in flight up to 5 s. It returns nil after a shutdown by ctx.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// decodeBase64URL decodes base64url with or without padding: clients
// send the X-Registry-Auth header either way.
func decodeBase64URL(s string) ([]byte, error) {
	if b, err := base64.URLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// contextWithoutCancel keeps ctx's values but not its end: a stream's
// request context ends when its connection is taken over.
func contextWithoutCancel(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
