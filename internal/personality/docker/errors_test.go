package docker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/dockertest"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
)

func TestStatusCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"not found", fmt.Errorf("compute: inspect x: %w", errdefs.ErrNotFound), 404},
		{"invalid argument", fmt.Errorf("bad: %w", errdefs.ErrInvalidArgument), 400},
		{"conflict", fmt.Errorf("busy: %w", errdefs.ErrConflict), 409},
		{"already exists", fmt.Errorf("name taken: %w", errdefs.ErrAlreadyExists), 409},
		{"not implemented", errdefs.ErrNotImplemented, 501},
		{"unavailable", fmt.Errorf("guest silent: %w", errdefs.ErrUnavailable), 503},
		{"not modified", errdefs.ErrNotModified, 304},
		{"failed precondition", errdefs.ErrFailedPrecondition, 400},
		{"permission denied", errdefs.ErrPermissionDenied, 403},
		{"internal", fmt.Errorf("disk: %w", errdefs.ErrInternal), 500},
		{"unclassified", errors.New("boom"), 500},
		{"nil", nil, 500},
		{"outermost class wins", httputils.Classify(errdefs.ErrConflict, fmt.Errorf("x: %w", errdefs.ErrNotFound), "x"), 409},
		{"classified keeps text", httputils.Classify(errdefs.ErrNotFound, errors.New("cause"), "No such container: x"), 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := docker.StatusCode(tt.err); got != tt.want {
				t.Errorf("StatusCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// newHandler returns the server's handler over a fresh fake.
func newHandler(t *testing.T) (*dockertest.Fake, http.Handler) {
	t.Helper()
	f := dockertest.New()
	srv := docker.New(docker.Config{Version: "0.0.0-test"}, docker.Backend{Compute: f, Interaction: f, Images: f.Images(), System: f}, nil)
	return f, srv.Handler()
}

func do(t *testing.T, h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func message(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var m struct{ Message string }
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("error body %q: %v", rec.Body.String(), err)
	}
	return m.Message
}

// TestErrorResponses checks each backend error class end to end: status
// code and Docker's JSON text.
func TestErrorResponses(t *testing.T) {
	tests := []struct {
		name     string
		failOn   string
		err      error
		method   string
		target   string
		body     string
		wantCode int
		wantMsg  string
	}{
		{name: "container not found", method: "GET", target: "/containers/x/json", wantCode: 404, wantMsg: "No such container: x"},
		{name: "image not found", method: "GET", target: "/images/nosuch/json", wantCode: 404, wantMsg: "No such image: nosuch"},
		{name: "create missing image", method: "POST", target: "/containers/create", body: `{"Image":"nosuchimage"}`, wantCode: 404, wantMsg: "No such image: nosuchimage:latest"},
		{name: "invalid name", method: "POST", target: "/containers/create?name=a!", body: `{"Image":"busybox"}`, wantCode: 400, wantMsg: "Invalid container name (a!), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"},
		{name: "malformed JSON", method: "POST", target: "/containers/create", body: `{"Image":`, wantCode: 400, wantMsg: "invalid JSON: unexpected EOF"},
		{name: "empty config", method: "POST", target: "/containers/create", wantCode: 400, wantMsg: "config cannot be empty in order to create a container"},
		{name: "backend unavailable", failOn: "List", err: fmt.Errorf("vm silent: %w", errdefs.ErrUnavailable), method: "GET", target: "/containers/json", wantCode: 503, wantMsg: "list containers: vm silent: unavailable"},
		{name: "backend unclassified", failOn: "List", err: errors.New("disk on fire"), method: "GET", target: "/containers/json", wantCode: 500, wantMsg: "list containers: disk on fire"},
		// The port layer's InvalidArgument on a lookup is an ambiguous prefix.
		{name: "ambiguous prefix inspect", failOn: "Inspect", err: fmt.Errorf("ambiguous: %w", errdefs.ErrInvalidArgument), method: "GET", target: "/containers/ab/json", wantCode: 400, wantMsg: "multiple IDs found with provided prefix: ab"},
		{name: "ambiguous prefix wait", failOn: "Inspect", err: fmt.Errorf("ambiguous: %w", errdefs.ErrInvalidArgument), method: "POST", target: "/containers/ab/wait", wantCode: 400, wantMsg: "multiple IDs found with provided prefix: ab"},
		{name: "ambiguous prefix kill", failOn: "Inspect", err: fmt.Errorf("ambiguous: %w", errdefs.ErrInvalidArgument), method: "POST", target: "/containers/ab/kill", wantCode: 400, wantMsg: "multiple IDs found with provided prefix: ab"},
		{name: "ambiguous prefix logs", failOn: "Inspect", err: fmt.Errorf("ambiguous: %w", errdefs.ErrInvalidArgument), method: "GET", target: "/containers/ab/logs?stdout=1", wantCode: 400, wantMsg: "multiple IDs found with provided prefix: ab"},
		{name: "wait not found", method: "POST", target: "/containers/nosuch/wait", wantCode: 404, wantMsg: "No such container: nosuch"},
		{name: "not implemented endpoint", method: "GET", target: "/containers/x/top", wantCode: 501, wantMsg: "top is not implemented by vch yet"},
		{name: "unknown route", method: "GET", target: "/nope", wantCode: 404, wantMsg: "page not found"},
		{name: "wrong method", method: "PUT", target: "/containers/json", wantCode: 404, wantMsg: "page not found"},
		{name: "bad signal", method: "POST", target: "/containers/x/kill?signal=FOO", wantCode: 400, wantMsg: "Invalid signal: FOO"},
		{name: "bad wait condition", method: "POST", target: "/containers/x/wait?condition=never", wantCode: 400, wantMsg: `invalid condition: "never"`},
		{name: "logs without streams", method: "GET", target: "/containers/x/logs", wantCode: 400, wantMsg: "Bad parameters: you must choose at least one stream"},
		{name: "bad filter", method: "GET", target: `/containers/json?filters={"bogus":{"x":true}}`, wantCode: 400, wantMsg: "invalid filter 'bogus'"},
		{name: "image mount before API 1.48", method: "POST", target: "/v1.47/containers/create",
			body: `{"Image":"busybox","HostConfig":{"Mounts":[{"Type":"image","Source":"busybox","Target":"/img"}]}}`, wantCode: 400, wantMsg: `Mount type "Image" needs API v1.48 or newer`},
		{name: "image mount of a missing image", method: "POST", target: "/v1.48/containers/create",
			body: `{"Image":"busybox","HostConfig":{"Mounts":[{"Type":"image","Source":"nosuch","Target":"/img"}]}}`, wantCode: 404, wantMsg: "No such image: nosuch:latest"},
		{name: "pull of unknown image", method: "POST", target: "/images/create?fromImage=nosuch&tag=latest", wantCode: 404, wantMsg: "manifest for nosuch:latest not found: manifest unknown: not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := newHandler(t)
			if tt.failOn != "" {
				f.FailOn(tt.failOn, tt.err)
			}
			rec := do(t, h, tt.method, tt.target, tt.body)
			if rec.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d (body %s)", rec.Code, tt.wantCode, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := message(t, rec); got != tt.wantMsg {
				t.Errorf("message = %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

func TestVersionNegotiation(t *testing.T) {
	tests := []struct {
		target   string
		wantCode int
		wantMsg  string
	}{
		{"/_ping", 200, ""},
		{"/v1.50/_ping", 200, ""},
		{"/v1.24/_ping", 200, ""},
		{"/v1.41/version", 200, ""},
		{"/v1.51/version", 400, "client version 1.51 is too new. Maximum supported API version is 1.50"},
		{"/v1.23/version", 400, "client version 1.23 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"},
		{"/v1.9/info", 400, "client version 1.9 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"},
		{"/v1.50/nope", 404, "page not found"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			_, h := newHandler(t)
			rec := do(t, h, "GET", tt.target, "")
			if rec.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d: %s", rec.Code, tt.wantCode, rec.Body)
			}
			for k, v := range map[string]string{"Api-Version": "1.50", "Ostype": "linux", "Docker-Experimental": "false", "Server": "Docker/0.0.0-test (linux)"} {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.wantMsg != "" {
				if got := message(t, rec); got != tt.wantMsg {
					t.Errorf("message = %q, want %q", got, tt.wantMsg)
				}
			}
		})
	}
}

func TestPing(t *testing.T) {
	_, h := newHandler(t)
	for _, m := range []string{"GET", "HEAD"} {
		rec := do(t, h, m, "/_ping", "")
		if rec.Code != 200 {
			t.Fatalf("%s: code %d", m, rec.Code)
		}
		want := "OK"
		if m == "HEAD" {
			want = ""
		}
		if rec.Body.String() != want {
			t.Errorf("%s: body %q, want %q", m, rec.Body, want)
		}
		if rec.Header().Get("Cache-Control") != "no-cache, no-store, must-revalidate" || rec.Header().Get("Builder-Version") == "" {
			t.Errorf("%s: headers %v", m, rec.Header())
		}
	}
}

// TestAttachDetachKeys checks that invalid detach keys are a 400 with
// dockerd's text before anything else, with or without stdin.
func TestAttachDetachKeys(t *testing.T) {
	_, h := newHandler(t)
	if rec := do(t, h, "POST", "/v1.50/containers/create?name=att", `{"Image":"busybox","Cmd":["sleep"]}`); rec.Code != 201 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	tests := []struct {
		name, query, want string
	}{
		{name: "foo with stdin", query: "stdin=1&stdout=1&stream=1&detachKeys=foo", want: "Invalid detach keys (foo) provided"},
		{name: "foo without stdin", query: "stdout=1&stream=1&detachKeys=foo", want: "Invalid detach keys (foo) provided"},
		{name: "ctrl- alone", query: "stdout=1&stream=1&detachKeys=ctrl-", want: "Invalid detach keys (ctrl-) provided"},
		{name: "missing container", query: "stdout=1&detachKeys=ctrl-1", want: "Invalid detach keys (ctrl-1) provided"},
		// Valid keys get past the check (a recorder cannot be hijacked).
		{name: "valid", query: "stdout=1&stream=1&detachKeys=ctrl-a,b", want: "error attaching to container att, hijack connection missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := "/v1.50/containers/att/attach?" + tt.query
			if tt.name == "missing container" {
				target = "/v1.50/containers/nosuch/attach?" + tt.query
			}
			rec := do(t, h, "POST", target, "")
			if rec.Code != 400 || message(t, rec) != tt.want {
				t.Fatalf("%d %s, want 400 %q", rec.Code, rec.Body, tt.want)
			}
		})
	}
}
