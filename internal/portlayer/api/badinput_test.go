package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
)

// jsonRoute is a route that decodes a JSON body: a body it takes, and
// one with a field of the wrong type.
type jsonRoute struct {
	method, path string
	good         string
	wrongType    string
	goodCode     int
}

// jsonRoutes are every route with a JSON body, on the container "bad"
// (running) and the network "ngood" (which the good networks body
// creates).
var jsonRoutes = []jsonRoute{
	{"POST", "/v1/containers", `{"Image":"` + testImage + `","Args":["sleep"]}`, `{"Image":5,"Args":["sleep"]}`, 201},
	{"POST", "/v1/volumes", `{"Name":"vgood"}`, `{"Name":["vgood"]}`, 201},
	{"POST", "/v1/networks", `{"Name":"ngood"}`, `{"Name":"n2","Subnet":"300.1.1.0/24"}`, 201},
	{"POST", "/v1/containers/bad/execs", `{"Args":["echo","hi"]}`, `{"Args":"echo hi"}`, 201},
	{"POST", "/v1/containers/bad/update", `{}`, `{"CPUs":"two"}`, 200},
	// Compute answers a good connect not_implemented (no networking
	// configured); what matters here is that a bad body never reaches it.
	{"POST", "/v1/containers/bad/connect", `{"Network":"ngood"}`, `{"Network":"ngood","IPv4":"1.2.3"}`, 501},
	{"POST", "/v1/events", `{"Type":"container","Action":"probe","ID":"x"}`, `{"Type":"container","Action":"probe","Time":"yesterday"}`, 204},
}

// badRequest is a request that must be refused with the Error body.
type badRequest struct {
	method, path string
	header       http.Header
	body         string
	code         int
	class        portlayer.ErrorClass
}

// badQueries are requests with bad query parameters or headers, or to
// routes that do not exist, on the container "bad".
var badQueries = []badRequest{
	{"POST", "/v1/containers/bad/kill?signal=abc", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/kill?signal=-1", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/kill?signal=65", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/kill?signal=99999999999999999999", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/wait?condition=never", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/logs?since=yesterday", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/logs?until=1", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/logs?tail=all", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/logs?follow=maybe", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/logs?stdout=2", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/stop?timeout=soon", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/stop?timeout=1.5", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/stop?timeout=18446744074", nil, "", 400, portlayer.ClassInvalidArgument}, // would wrap to 0.29 s
	{"POST", "/v1/containers/bad/restart?timeout=-9300000000", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/restart?signal=TERM", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/restart?timeout=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/rename", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/rename?name=", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/rename?name=a%2Fb", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/resize?rows=0&cols=10", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/resize?rows=x&cols=10", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/resize?rows=10", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/resize?rows=70000&cols=10", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/resize?rows=-5&cols=10", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/execs/nosuch/resize?rows=x&cols=1", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/execs/nosuch/start?rows=-1", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/execs/nosuch/start?cols=wide", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/execs/nosuch/start", nil, "", 404, portlayer.ClassNotFound},
	{"DELETE", "/v1/containers/bad?force=perhaps", nil, "", 400, portlayer.ClassInvalidArgument},
	{"DELETE", "/v1/volumes/vgood?force=2", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/events?since=yesterday", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/events?live=sometimes", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/disconnect", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/disconnect?network=ngood&force=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/archive/stat", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/archive", nil, "", 400, portlayer.ClassInvalidArgument},
	{"PUT", "/v1/containers/bad/archive", nil, "", 400, portlayer.ClassInvalidArgument},
	{"PUT", "/v1/containers/bad/archive?path=/&noOverwriteDirNonDir=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"PUT", "/v1/containers/bad/archive?path=/&copyUIDGID=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/attach?stdin=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad/attach?stream=true", nil, "", 400, portlayer.ClassInvalidArgument}, // no upgrade
	{"POST", "/v1/containers/nosuch/attach?stream=true", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/v1/images/resolve", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/pull", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/pull?ref=busybox", http.Header{"X-Registry-Auth": {"!!!"}}, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/pull?ref=busybox", http.Header{"X-Registry-Auth": {"bm90IGpzb24"}}, "", 400, portlayer.ClassInvalidArgument}, // "not json"
	{"POST", "/v1/images/push", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/import?options=%7B", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/images/save", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/tag?source=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/tag?target=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"DELETE", "/v1/images", nil, "", 400, portlayer.ClassInvalidArgument},
	{"DELETE", "/v1/images?ref=x&force=x", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/commit", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/commit?options=%7B", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/commit?options=" + url.QueryEscape(`{"Comment":"c"}x`), nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/commit?options=" + url.QueryEscape(`{"Comment":5}`), nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/commit?options=" + url.QueryEscape(`{"Container":"bad"}`), nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/import?options=" + url.QueryEscape(`{"Nope":1}`), nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/images/import?options=" + url.QueryEscape(`{} {}`), nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/registries/login", http.Header{"X-Registry-Auth": {"e30=x"}}, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/nosuch", nil, "", 404, portlayer.ClassNotFound},

	// Versions and paths that do not exist.
	{"GET", "/v2/containers", nil, "", 404, portlayer.ClassNotFound},
	{"POST", "/v2/containers", nil, `{"Image":"` + testImage + `","Args":["sleep"]}`, 404, portlayer.ClassNotFound},
	{"GET", "/v0/containers", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/v10/containers", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/V1/containers", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/containers", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/v1", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/v1/", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/v1/containers/bad/nosuch", nil, "", 404, portlayer.ClassNotFound},
	{"GET", "/v1/openapi.yaml", nil, "", 404, portlayer.ClassNotFound},

	// Methods a route does not take: invalid_argument (the Handler's
	// documented class), its status StatusOf's.
	{"PUT", "/v1/containers", nil, "", 400, portlayer.ClassInvalidArgument},
	{"PATCH", "/v1/volumes", nil, "", 400, portlayer.ClassInvalidArgument},
	{"DELETE", "/v1/openapi.json", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/containers/bad/start", nil, "", 400, portlayer.ClassInvalidArgument},
	{"POST", "/v1/containers/bad", nil, "", 400, portlayer.ClassInvalidArgument},
	{"GET", "/v1/events/x", nil, "", 404, portlayer.ClassNotFound},
}

// TestBadInput: over a real server, every route that takes a body or
// query parameters refuses malformed ones — bad JSON, unknown fields,
// wrong types, a second value or garbage after the body, a body over
// the limit — with a 4xx and the Error body, and nothing is created by a
// refused request; unknown versions and paths are not_found, wrong
// methods invalid_argument. The server keeps serving throughout: every
// route's good request succeeds afterwards on the same connections.
func TestBadInput(t *testing.T) {
	b, svc := fullBackend(t)
	h, err := api.Handler(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := serveUnix(t, h)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	ctx := t.Context()
	if _, err := svc.Create(ctx, portlayer.ContainerSpec{Name: "bad", Image: testImage, Args: []string{"sleep"}}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx, "bad"); err != nil {
		t.Fatal(err)
	}

	do := func(method, path string, header http.Header, body string) (int, http.Header, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "http://portlayer"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: read the answer: %v", method, path, err)
		}
		return resp.StatusCode, resp.Header, out
	}
	expect := func(method, path string, header http.Header, body string, code int, class portlayer.ErrorClass) portlayer.Error {
		t.Helper()
		got, hdr, out := do(method, path, header, body)
		shown := body
		if len(shown) > 80 {
			shown = shown[:80] + "…"
		}
		e, err := checkErrorBody(got, hdr, out)
		if got != code || err != nil || e.Class != class {
			t.Errorf("%s %s %q: %d %.300s (%v); want %d %s", method, path, shown, got, out, err, code, class)
		}
		return e
	}

	countContainers := func() int {
		cs, err := svc.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(cs)
	}
	before := countContainers()
	for _, rt := range jsonRoutes {
		for _, body := range []string{
			"",                                    // no body
			"{",                                   // cut short
			"not json",                            // not JSON
			`{"Nope":1}`,                          // unknown field
			`{"name":"x","Name":"y","NOPE":true}`, // unknown field after known ones
			"[]",                                  // not an object
			`"a string"`,                          // not an object
			"5",                                   // not an object
			rt.wrongType,                          // a field of the wrong type
			rt.good + "x",                         // garbage after the value
			rt.good + " {}",                       // a second value
			rt.good + "\n]",                       // a stray delimiter
			rt.good + "\x00",                      // a NUL
			"\xff\xfe" + rt.good,                  // not UTF-8 before the value
		} {
			expect(rt.method, rt.path, nil, body, 400, portlayer.ClassInvalidArgument)
		}
	}
	if n := countContainers(); n != before {
		t.Errorf("refused creates left %d containers, want %d", n, before)
	}
	if _, err := b.Volumes.InspectVolume(ctx, "vgood"); portlayer.ClassOf(err) != portlayer.ClassNotFound {
		t.Errorf("a refused volume create made the volume: %v", err)
	}
	if _, err := b.Networks.InspectNetwork(ctx, "ngood"); portlayer.ClassOf(err) != portlayer.ClassNotFound {
		t.Errorf("a refused network create made the network: %v", err)
	}
	if logged, _ := b.Events.Subscribe(ctx, time.Unix(1, 0), false); hasAction(logged, "probe") {
		t.Errorf("a refused publish logged its event: %+v", logged)
	}

	for _, q := range badQueries {
		expect(q.method, q.path, q.header, q.body, q.code, q.class)
	}
	if n := countContainers(); n != before {
		t.Errorf("refused requests left %d containers, want %d", n, before)
	}

	// The wrong method's answer names the methods the route takes.
	if _, hdr, _ := do("PUT", "/v1/containers", nil, ""); hdr.Get("Allow") != "GET, HEAD, POST" {
		t.Errorf("PUT /v1/containers: Allow %q, want GET, HEAD, POST", hdr.Get("Allow"))
	}

	// Every route still takes its good request.
	for _, rt := range jsonRoutes {
		if code, _, out := do(rt.method, rt.path, nil, rt.good); code != rt.goodCode {
			t.Errorf("%s %s %s after the bad requests: %d %s, want %d", rt.method, rt.path, rt.good, code, out, rt.goodCode)
		}
	}
	if code, _, out := do("GET", "/v1/containers/bad", nil, ""); code != 200 || !strings.Contains(string(out), `"Name":"bad"`) {
		t.Errorf("inspect after the bad requests: %d %.200s", code, out)
	}
}

// hasAction reports whether an event with that action is among es.
func hasAction(es []portlayer.Event, action string) bool {
	for _, e := range es {
		if e.Action == action {
			return true
		}
	}
	return false
}

// TestOversizedBody: a JSON body over the 4 MiB limit is refused on
// every JSON route with invalid_argument and a message naming the limit
// (not a JSON decoder's "unexpected EOF"), however the extra bytes come
// (inside a string, or as whitespace after a complete value); a body
// just under the limit is decoded. The server answers while the client
// is still sending and keeps serving.
func TestOversizedBody(t *testing.T) {
	b, svc := fullBackend(t)
	h, err := api.Handler(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := serveUnix(t, h)
	ctx := t.Context()
	if _, err := svc.Create(ctx, portlayer.ContainerSpec{Name: "bad", Image: testImage, Args: []string{"sleep"}}); err != nil {
		t.Fatal(err)
	}
	const limit = 4 << 20
	for _, rt := range jsonRoutes {
		for name, body := range map[string]string{
			"long string":       `{"Name":"` + strings.Repeat("a", limit+1024) + `"}`,
			"trailing spaces":   rt.good + strings.Repeat(" ", limit),
			"long unknown name": `{"` + strings.Repeat("N", limit+1) + `":1}`,
		} {
			code, hdr, out := rawRequest(t, sock, rt.method, rt.path, body)
			e, err := checkErrorBody(code, hdr, out)
			if code != 400 || err != nil || e.Class != portlayer.ClassInvalidArgument || !strings.Contains(e.Message, "4 MiB") {
				t.Errorf("%s %s, %s body of %d bytes: %d %.300s (%v); want 400 invalid_argument naming the 4 MiB limit", rt.method, rt.path, name, len(body), code, out, err)
			}
		}
	}
	// Exactly at the limit (white space after the value): decoded.
	at := `{"Image":"` + testImage + `","Args":["sleep"]}`
	at += strings.Repeat(" ", limit-len(at))
	if code, _, out := rawRequest(t, sock, "POST", "/v1/containers", at); code != 201 {
		t.Errorf("a create of %d bytes: %d %.300s, want 201", len(at), code, out)
	}
	if code, _, out := rawRequest(t, sock, "GET", "/v1/containers/bad", ""); code != 200 {
		t.Errorf("inspect after the oversized bodies: %d %.200s", code, out)
	}
}

// rawRequest sends one request on a new connection to sock, writing the
// body while it reads the answer (a server may answer and close before
// it has read the whole body), and returns the answer.
func rawRequest(t *testing.T, sock, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "%s %s HTTP/1.1\r\nHost: portlayer\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", method, path, len(body))
		_, _ = io.Copy(w, strings.NewReader(body))
		_ = w.Flush() // fails once the server has closed: it answered already
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, out
}

// TestErrorBodyShape: the Error body's JSON is what the document's Error
// schema says (class and message always present, the message never
// empty), for typed and untyped errors alike, with or without text.
func TestErrorBodyShape(t *testing.T) {
	for _, err := range []error{
		&portlayer.Error{Class: portlayer.ClassNotFound, Kind: portlayer.KindContainer, ID: "x", Message: "no such container"},
		fmt.Errorf("wrapped: %w", &portlayer.Error{Class: portlayer.ClassConflict, Message: "busy", Err: io.ErrUnexpectedEOF}),
		io.ErrUnexpectedEOF,
		context.DeadlineExceeded,
		errors.New(""), // a guest's refusal without text
		&portlayer.Error{Class: portlayer.ClassInternal, Err: io.EOF},
	} {
		b, jerr := json.Marshal(api.ErrorBody(err))
		if jerr != nil {
			t.Fatal(jerr)
		}
		var m map[string]any
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(&m); err != nil {
			t.Fatal(err)
		}
		class, _ := m["class"].(string)
		msg, _ := m["message"].(string)
		if !knownClasses[portlayer.ErrorClass(class)] || msg == "" {
			t.Errorf("ErrorBody(%v) = %s: want a known class and a message", err, b)
		}
	}
	if e := api.ErrorBody(fmt.Errorf("wrapped: %w", &portlayer.Error{Class: portlayer.ClassConflict, Message: "busy", Err: io.ErrUnexpectedEOF})); e.Cause != io.ErrUnexpectedEOF.Error() || e.Err != nil {
		t.Errorf("ErrorBody of a wrapped error with a cause: %+v", e)
	}
}

// TestErrorBodyErrorf: an Errorf error and a StartFailed one cross the
// API with their text (message, then cause) and fields as they are, so
// the client's error reads as the server's did.
func TestErrorBodyErrorf(t *testing.T) {
	for _, e := range []*portlayer.Error{
		portlayer.Errorf(portlayer.ClassInvalidArgument, "bind mount root %q: %w", "rel", errors.New("not absolute")).WithOp("create"),
		portlayer.StartFailed(portlayer.KindExec, "e1", `exec: "x": executable file not found in $PATH`, 127),
	} {
		b, err := json.Marshal(api.ErrorBody(fmt.Errorf("compute: %w", e)))
		if err != nil {
			t.Fatal(err)
		}
		var got portlayer.Error
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Error() != e.Error() || got.Class != e.Class || got.Op != e.Op || got.Reason != e.Reason || got.Value != e.Value {
			t.Errorf("%v crossed as %+v", e, got)
		}
	}
	if _, code, ok := portlayer.StartFailure(&portlayer.Error{Class: portlayer.ClassInvalidArgument, Reason: portlayer.ReasonStartFailed, Value: "127"}); !ok || code != 127 {
		t.Errorf("StartFailure of a decoded body = %d, %v", code, ok)
	}
}
