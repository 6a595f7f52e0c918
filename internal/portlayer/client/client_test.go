package client_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/portlayer/compute"
	"github.com/vchproject/vch/internal/portlayer/computetest"
)

// testImage is the image ID the contract's containers use.
var testImage = computetest.Image

// newCompute is an in-process compute service on the fake hypervisor,
// its containers ended and the service closed when the test ends.
func newCompute(t *testing.T) *compute.Service {
	return computetest.NewService(t, compute.Config{}, nil)
}

// TestContractInProcess runs the compute contract on the in-process
// port layer.
func TestContractInProcess(t *testing.T) {
	computetest.Run(t, testImage, func(t *testing.T) computetest.Target { return newCompute(t) })
}

// TestContractOverAPI runs the same contract through the client and a
// real server on a unix socket, every request and response checked
// against the OpenAPI document.
func TestContractOverAPI(t *testing.T) {
	computetest.Run(t, testImage, func(t *testing.T) computetest.Target {
		svc := newCompute(t)
		c, err := client.New("unix://"+serve(t, api.Backend{Compute: svc, Pauser: svc}), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

// serve serves the API over b on a unix socket, validated against the
// document, and returns the socket's path.
func serve(t *testing.T, b api.Backend) string {
	t.Helper()
	h, err := api.Handler(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "pl.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: validated(t, h)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// validated checks every request to h and every response from it
// against the OpenAPI document (kin-openapi), failing the test on any
// mismatch. Responses pass through as they are written (a wait's status
// line comes before its body) and are checked once complete.
func validated(t *testing.T, h http.Handler) http.Handler {
	doc, err := api.Document()
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = nil // match paths with their /v1 prefix below
	registerStreamDecoders()
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		t.Errorf(format, args...)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		vr := r.Clone(r.Context())
		vr.URL.Path = strings.TrimPrefix(r.URL.Path, api.Prefix)
		vr.Body = io.NopCloser(bytes.NewReader(body))
		route, params, err := router.FindRoute(vr)
		if err != nil {
			fail("%s %s: not in the document: %v", r.Method, r.URL.Path, err)
			h.ServeHTTP(w, r)
			return
		}
		in := &openapi3filter.RequestValidationInput{Request: vr, PathParams: params, Route: route}
		if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
			fail("%s %s: request does not match the document: %v", r.Method, r.URL.Path, err)
		}
		tee := &teeWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(tee, r)
		if tee.hijacked {
			tee.code = http.StatusSwitchingProtocols
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: tee.code, Header: tee.Header(),
			Body: io.NopCloser(bytes.NewReader(tee.buf.Bytes()))}
		if err := openapi3filter.ValidateResponse(r.Context(), out); err != nil {
			fail("%s %s: response %d does not match the document: %v\n%s", r.Method, r.URL.Path, tee.code, err, tee.buf.Bytes())
		}
	})
}

var _ routers.Router // the router type FindRoute answers from

var decodersOnce sync.Once

// registerStreamDecoders teaches the validator the API's stream types:
// each line of an NDJSON body is checked against the schema (the last
// one is returned for the filter's own check), a tar is binary.
func registerStreamDecoders() {
	decodersOnce.Do(func() {
		openapi3filter.RegisterBodyDecoder("application/x-tar", openapi3filter.FileBodyDecoder)
		openapi3filter.RegisterBodyDecoder("application/x-ndjson", func(body io.Reader, _ http.Header, schema *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			dec := json.NewDecoder(body)
			var last any
			for {
				var v any
				if err := dec.Decode(&v); err == io.EOF {
					return last, nil
				} else if err != nil {
					return nil, err
				}
				if err := schema.Value.VisitJSON(v); err != nil {
					return nil, fmt.Errorf("stream line %v: %w", v, err)
				}
				last = v
			}
		})
	})
}

// teeWriter passes a response through and keeps a copy.
type teeWriter struct {
	http.ResponseWriter
	code     int
	buf      bytes.Buffer
	hijacked bool
}

func (w *teeWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }
func (w *teeWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	return w.ResponseWriter.Write(p)
}

// Hijack passes a stream's takeover through; its frames are not
// validated (the document describes only the 101).
func (w *teeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

func (w *teeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// TestBadRequests: malformed and unknown requests get the Error body
// with a 4xx, and the document is served.
func TestBadRequests(t *testing.T) {
	svc := newCompute(t)
	h, err := api.Handler(api.Backend{Compute: svc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method, path, body string
		code               int
		class              string
	}{
		{"POST", "/v1/containers", "{", 400, "invalid_argument"},
		{"POST", "/v1/containers", `{"Image": 5}`, 400, "invalid_argument"},
		{"POST", "/v1/containers", `{"Nope": 1}`, 400, "invalid_argument"},
		{"POST", "/v1/containers", `{"Image": "` + testImage + `"}`, 400, "invalid_argument"},
		{"POST", "/v1/containers/x/kill?signal=abc", "", 400, "invalid_argument"},
		{"POST", "/v1/containers/x/wait?condition=never", "", 400, "invalid_argument"},
		{"GET", "/v1/containers/nosuch", "", 404, "not_found"},
		{"GET", "/v2/containers", "", 404, "not_found"},
		{"POST", "/v1/containers/x/pause", "", 501, "not_implemented"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
		if rec.Code != tt.code || !strings.Contains(rec.Body.String(), `"class":"`+tt.class+`"`) {
			t.Errorf("%s %s %s: %d %s; want %d %s", tt.method, tt.path, tt.body, rec.Code, rec.Body, tt.code, tt.class)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/openapi.json", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"openapi":"3.0.3"`) || !strings.Contains(rec.Body.String(), `/containers/{ref}/wait`) {
		t.Errorf("GET /v1/openapi.json: %d %.200s", rec.Code, rec.Body)
	}
}

// TestUnreachable: a client of a server that is not there answers
// unavailable.
func TestUnreachable(t *testing.T) {
	c, err := client.New("unix://"+filepath.Join(t.TempDir(), "none.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(t.Context())
	if portlayer.ClassOf(err) != portlayer.ClassUnavailable {
		t.Errorf("List on no server: %v", err)
	}
}
