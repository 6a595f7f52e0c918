package storage

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vchproject/vch/internal/portlayer"
)

func TestRegistryMatch(t *testing.T) {
	entries := []string{"reg.example.com:5000", "mirror.example.org", "*.corp.example", "192.0.2.0/24", "docker.io"}
	tests := []struct {
		domain string
		want   bool
	}{
		{"reg.example.com:5000", true},
		{"REG.example.com:5000", true},
		{"reg.example.com", false},
		{"reg.example.com:5001", false},
		{"mirror.example.org", true},
		{"mirror.example.org:443", true},
		{"a.b.corp.example", true},
		{"corp.example", false},
		{"evilcorp.example", false},
		{"192.0.2.7:5000", true},
		{"192.0.3.7", false},
		{"index.docker.io", true},
		{"registry-1.docker.io", true},
		{"quay.io", false},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			if got := matchRegistry(entries, tc.domain); got != tc.want {
				t.Errorf("match %s = %v, want %v", tc.domain, got, tc.want)
			}
		})
	}
}

func TestRegistriesValidate(t *testing.T) {
	tests := []struct {
		name    string
		r       Registries
		wantErr bool
	}{
		{name: "zero"},
		{name: "all forms", r: Registries{Insecure: []string{"h", "h:1", "*.d.example", "10.0.0.0/8", "[::1]:5000"}, Allowed: []string{"docker.io"}}},
		{name: "url", r: Registries{Insecure: []string{"https://reg.example.com"}}, wantErr: true},
		{name: "path", r: Registries{Allowed: []string{"reg.example.com/library"}}, wantErr: true},
		{name: "empty", r: Registries{Allowed: []string{" "}}, wantErr: true},
		{name: "bare wildcard", r: Registries{Allowed: []string{"*"}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Validate: %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("class of %v", err)
			}
		})
	}
	if _, err := New(Config{Root: t.TempDir(), Registries: Registries{Allowed: []string{"a://b"}}}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("New with a bad registry: %v", err)
	}
}

func TestPullWhitelist(t *testing.T) {
	host := testRegistry(t)
	push(t, host+"/img:1", mustRandom(t))
	s, err := New(Config{Root: t.TempDir(), Registries: Registries{Allowed: []string{"reg.example.com"}}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Pull(t.Context(), host+"/img:1", portlayer.RegistryAuth{}, nil)
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "access denied to registry "+host) {
		t.Fatalf("pull outside the whitelist: %v, want PermissionDenied", err)
	}
	s2, err := New(Config{Root: t.TempDir(), Registries: Registries{Allowed: []string{host}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Pull(t.Context(), host+"/img:1", portlayer.RegistryAuth{}, nil); err != nil {
		t.Fatalf("pull from a whitelisted registry: %v", err)
	}
}

// TestPullInsecureRegistry: a registry with a self-signed certificate is
// refused until it is listed as insecure, as with dockerd.
func TestPullInsecureRegistry(t *testing.T) {
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	ref, err := name.ParseReference(host + "/img:1")
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	if err := remote.Write(ref, mustRandom(t), remote.WithTransport(tr), remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	plain := newStore(t, t.TempDir())
	if _, err := plain.Pull(t.Context(), host+"/img:1", portlayer.RegistryAuth{}, nil); err == nil {
		t.Fatal("pull from a self-signed registry not listed as insecure succeeded")
	}
	s, err := New(Config{Root: t.TempDir(), Registries: Registries{Insecure: []string{host}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Pull(t.Context(), host+"/img:1", portlayer.RegistryAuth{}, nil); err != nil {
		t.Fatalf("pull from an insecure registry: %v", err)
	}
}

func mustRandom(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPullRegistryCA: a registry whose certificate is signed by a private
// CA is refused until that CA is given (--registry-ca), then trusted for
// pull and push without turning verification off.
func TestPullRegistryCA(t *testing.T) {
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	ref, err := name.ParseReference(host + "/img:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, mustRandom(t), remote.WithTransport(srv.Client().Transport), remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := newStore(t, t.TempDir())
	if _, err := plain.Pull(t.Context(), host+"/img:1", portlayer.RegistryAuth{}, nil); err == nil {
		t.Fatal("pull without the registry CA succeeded")
	}
	s, err := New(Config{Root: t.TempDir(), Registries: Registries{CAFiles: []string{caFile}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Pull(t.Context(), host+"/img:1", portlayer.RegistryAuth{}, nil); err != nil {
		t.Fatalf("pull with the registry CA: %v", err)
	}
	if err := s.Tag(t.Context(), host+"/img:1", host+"/img2:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Push(t.Context(), host+"/img2:1", portlayer.RegistryAuth{}, nil); err != nil {
		t.Fatalf("push with the registry CA: %v", err)
	}
	if _, err := plain.Pull(t.Context(), host+"/img2:1", portlayer.RegistryAuth{}, nil); err == nil {
		t.Fatal("pull without the registry CA succeeded")
	}

	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Root: t.TempDir(), Registries: Registries{CAFiles: []string{bad}}}, nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("New with a bad CA file: %v, want InvalidArgument", err)
	}
}

// TestPullQuota: a pull is refused before anything is stored when
// Config.Reserve says the declared size does not fit.
func TestPullQuota(t *testing.T) {
	host := testRegistry(t)
	push(t, host+"/q:1", mustRandom(t))
	var asked int64
	s, err := New(Config{Root: t.TempDir(), Reserve: func(what string, size int64) error {
		asked = size
		return fmt.Errorf("storage quota of 1KiB exceeded: 0B used, %s needs %d more: %w", what, size, errdefs.ErrResourceExhausted)
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Pull(t.Context(), host+"/q:1", portlayer.RegistryAuth{}, nil)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "pull of "+host+"/q:1") || asked < 256 {
		t.Fatalf("pull over quota: %v (declared %d)", err, asked)
	}
	if imgs, _ := s.List(t.Context()); len(imgs) != 0 {
		t.Fatalf("a refused pull stored %d images", len(imgs))
	}
}
