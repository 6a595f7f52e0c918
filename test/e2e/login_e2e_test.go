//go:build e2e

package e2e

import (
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// TestLogin: docker login against a loopback registry that wants basic
// auth: wrong credentials fail with dockerd's text, right ones succeed,
// and the CLI's stored credentials then serve push and pull.
func TestLogin(t *testing.T) {
	t.Parallel()
	need(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "vch" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="vch-e2e"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	defer srv.Close()
	host := l.Addr().String()
	cfg := t.TempDir()
	cli := func(stdin string, args ...string) result {
		t.Helper()
		return dockerWith(t, []string{"DOCKER_CONFIG=" + cfg}, []byte(stdin), args...)
	}
	if r := cli("wrong\n", "login", "-u", "vch", "--password-stdin", host); r.code == 0 || !strings.Contains(r.stderr, "login attempt to http://"+host+"/v2/ failed with status: 401 Unauthorized") {
		t.Errorf("login with a wrong password: exit %d %q", r.code, r.stderr)
	}
	if r := cli("s3cret\n", "login", "-u", "vch", "--password-stdin", host); r.code != 0 || !strings.Contains(r.stdout, "Login Succeeded") {
		t.Fatalf("login: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	ref := host + "/e2e/login:" + strings.ToLower(uniqueName(t))
	ok(t, "tag", "busybox", ref)
	defer docker(t, "rmi", ref)
	if r := cli("", "push", ref); r.code != 0 {
		t.Fatalf("push with the stored credentials: exit %d %s", r.code, r.stderr)
	}
	ok(t, "rmi", ref)
	if r := cli("", "pull", ref); r.code != 0 {
		t.Fatalf("pull with the stored credentials: exit %d %s", r.code, r.stderr)
	}
	if r := cli("", "logout", host); r.code != 0 {
		t.Errorf("logout: exit %d %s", r.code, r.stderr)
	}
	if r := cli("", "pull", ref+"-missing"); r.code == 0 {
		t.Errorf("pull without credentials succeeded")
	}
}

// TestLoginBearer: a registry that answers with a Bearer challenge and a
// token service that wants basic auth (the Docker Hub scheme).
func TestLoginBearer(t *testing.T) {
	t.Parallel()
	need(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "vch" || p != "t0ken" {
			http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"token":"e2e-token","access_token":"e2e-token"}`)
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer e2e-token" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+host+`/token",service="vch-e2e"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()
	cfg := t.TempDir()
	login := func(password string) result {
		t.Helper()
		return dockerWith(t, []string{"DOCKER_CONFIG=" + cfg}, []byte(password+"\n"), "login", "-u", "vch", "--password-stdin", host)
	}
	if r := login("wrong"); r.code == 0 || !strings.Contains(r.stderr, "unauthorized: incorrect username or password") {
		t.Errorf("bearer login with a wrong password: exit %d %q", r.code, r.stderr)
	}
	if r := login("t0ken"); r.code != 0 || !strings.Contains(r.stdout, "Login Succeeded") {
		t.Errorf("bearer login: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}
