package httputils

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moby/moby/api/pkg/stdcopy"

	"github.com/vchproject/vch/internal/portlayer"
)

func TestRouteMatch(t *testing.T) {
	tests := []struct {
		tmpl, path string
		ok         bool
		name       string
	}{
		{"/containers/{name}/json", "/containers/abc/json", true, "abc"},
		{"/containers/{name}/json", "/containers/a/b/json", false, ""},
		{"/images/{name:.*}/json", "/images/127.0.0.1:5000/busybox/json", true, "127.0.0.1:5000/busybox"},
		{"/images/{name:.*}", "/images/library/busybox:1.36", true, "library/busybox:1.36"},
		{"/images/json", "/images/json", true, ""},
		{"/images/json", "/images/jsonx", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			vars, ok := NewRoute("GET", tt.tmpl, nil).Match(tt.path)
			if ok != tt.ok || vars["name"] != tt.name {
				t.Errorf("Match(%q) on %q = %v, %v", tt.path, tt.tmpl, vars, ok)
			}
		})
	}
}

func TestStdWriterFraming(t *testing.T) {
	var buf bytes.Buffer
	mux := NewMux(&buf)
	mux.Writer(StreamStdout).Write([]byte("out\n"))
	mux.Writer(StreamStderr).Write([]byte("err\n"))
	mux.Writer(StreamStdout).Write(nil) // no empty frames
	if got := buf.Bytes()[:8]; !bytes.Equal(got, []byte{1, 0, 0, 0, 0, 0, 0, 4}) {
		t.Errorf("header % x", got)
	}
	var o, e bytes.Buffer
	if _, err := stdcopy.StdCopy(&o, &e, &buf); err != nil {
		t.Fatal(err)
	}
	if o.String() != "out\n" || e.String() != "err\n" {
		t.Errorf("demuxed %q %q", o.String(), e.String())
	}
}

func TestBoolValueAndFilters(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "no": false, "false": false, "none": false, "1": true, "true": true, "yes": true} {
		r := httptest.NewRequest("GET", "/?x="+v, nil)
		if got := BoolValue(r, "x"); got != want {
			t.Errorf("BoolValue(%q) = %v", v, got)
		}
	}
	for _, s := range []string{`{"status":{"exited":true}}`, `{"status":["exited"]}`} {
		f, err := ParseFilters(s, "status")
		if err != nil || len(f.Values("status")) != 1 || f.Values("status")[0] != "exited" {
			t.Errorf("ParseFilters(%s) = %v, %v", s, f, err)
		}
	}
	if _, err := ParseFilters(`{"x":{"1":true}}`, "status"); err == nil || err.Error() != "invalid filter 'x'" {
		t.Errorf("unknown filter: %v", err)
	}
}

// TestPortLayerText: an untyped error's text is shown as it is, never
// parsed; a typed one without a dockerd text gives its message and cause,
// not the wrapping around it.
func TestPortLayerText(t *testing.T) {
	typed := portlayer.Errorf(portlayer.ClassInvalidArgument, "bind mount root %q: %w", "rel", errors.New("not absolute"))
	tests := []struct {
		name string
		in   error
		want string
	}{
		{"untyped", errors.New("compute: Container abc is not running: conflict"), "compute: Container abc is not running: conflict"},
		{"plain", errors.New("No such image: x:latest"), "No such image: x:latest"},
		{"typed", typed, `bind mount root "rel": not absolute`},
		{"typed wrapped", fmt.Errorf("compute: create: %w", typed), `bind mount root "rel": not absolute`},
		{"typed with dockerd text", fmt.Errorf("compute: %w", portlayer.NoSuchContainer("web")), "No such container: web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PortLayerText(tt.in); got != tt.want {
				t.Errorf("PortLayerText(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMatchAll(t *testing.T) {
	f := Filters{"label": {"a=1": true, "b": true}}
	has := func(labels map[string]string) func(string) bool {
		return func(v string) bool {
			k, val, hasVal := strings.Cut(v, "=")
			got, ok := labels[k]
			return ok && (!hasVal || got == val)
		}
	}
	if !f.MatchAll("label", has(map[string]string{"a": "1", "b": "x"})) {
		t.Error("both labels present: no match")
	}
	if f.MatchAll("label", has(map[string]string{"a": "1"})) {
		t.Error("one label missing: matched")
	}
	if !f.MatchAll("other", has(nil)) {
		t.Error("absent filter must match")
	}
}

// TestStdWriterReusesBuffer: frames of up to a 256 KiB chunk of output
// (what compute hands on at once) are built in the Mux's own buffer,
// not a new one each.
func TestStdWriterReusesBuffer(t *testing.T) {
	w := NewMux(io.Discard).Writer(StreamStdout)
	p := make([]byte, 256<<10)
	if n := testing.AllocsPerRun(50, func() { _, _ = w.Write(p) }); n != 0 {
		t.Errorf("%v allocations per 256 KiB frame, want 0", n)
	}
}
