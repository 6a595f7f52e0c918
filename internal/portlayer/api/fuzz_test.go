package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/compute"
)

// fuzzSeeds are requests the fuzzer starts from: each route with a good
// request and bad ones (method, path, query, body). "fz" is a running
// container the fuzzer's backend keeps.
var fuzzSeeds = []struct{ method, path, query, body string }{
	{"GET", "/v1/openapi.json", "", ""},
	{"GET", "/v1/containers", "", ""},
	{"POST", "/v1/containers", "", `{"Name":"f1","Image":"` + testImage + `","Args":["echo","hi"]}`},
	{"POST", "/v1/containers", "", `{"Image":"` + testImage + `","Args":["sleep"],"Env":["A=1"],"Hostname":"h","StopTimeout":5000000000,"Sysctls":{"net.core.somaxconn":"1024"},"Mounts":[{"Type":"volume","Source":"v1","Target":"/data"}],"Ports":[{"Proto":"tcp","ContainerPort":80,"HostIP":"127.0.0.1"}],"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":2}}`},
	{"POST", "/v1/containers", "", `{"Image":5}`},
	{"POST", "/v1/containers", "", `{"Nope":1}`},
	{"POST", "/v1/containers", "", `{"Image":"` + testImage + `","Args":["sleep"]} x`},
	{"GET", "/v1/containers/fz", "", ""},
	{"DELETE", "/v1/containers/f1", "force=true", ""},
	{"POST", "/v1/containers/fz/start", "", ""},
	{"POST", "/v1/containers/fz/kill", "signal=abc", ""},
	{"POST", "/v1/containers/fz/wait", "condition=next-exit", ""},
	{"POST", "/v1/containers/fz/wait", "condition=never", ""},
	{"POST", "/v1/containers/fz/pause", "", ""},
	{"POST", "/v1/containers/fz/unpause", "", ""},
	{"GET", "/v1/containers/fz/logs", "stdout=true&tail=5&since=2024-01-02T03:04:05Z", ""},
	{"GET", "/v1/containers/fz/logs", "follow=true&until=2024-01-02T03:04:05Z", ""},
	{"GET", "/v1/containers/fz/logs", "tail=x", ""},
	{"POST", "/v1/containers/fz/attach", "stream=true&stdout=true", ""},
	{"POST", "/v1/containers/fz/resize", "rows=24&cols=80", ""},
	{"POST", "/v1/containers/fz/resize", "rows=0&cols=99999", ""},
	{"POST", "/v1/containers/fz/execs", "", `{"Args":["echo","hi"],"AttachStdout":true}`},
	{"POST", "/v1/containers/fz/execs", "", `{"Args":"echo"}`},
	{"GET", "/v1/execs/nosuch", "", ""},
	{"POST", "/v1/execs/nosuch/start", "rows=1&cols=1", ""},
	{"POST", "/v1/execs/nosuch/resize", "rows=1&cols=1", ""},
	{"DELETE", "/v1/execs/nosuch", "", ""},
	{"POST", "/v1/containers/fz/update", "", `{"RestartPolicy":{"Name":"always"},"MemoryMiB":256}`},
	{"POST", "/v1/containers/fz/update", "", `{"CPUs":"two"}`},
	{"GET", "/v1/containers/fz/top", "", ""},
	{"GET", "/v1/containers/fz/stats", "", ""},
	{"POST", "/v1/containers/fz/connect", "", `{"Network":"n1","IPv4":"10.0.0.2"}`},
	{"POST", "/v1/containers/fz/disconnect", "network=n1&force=true", ""},
	{"GET", "/v1/containers/fz/archive/stat", "path=/etc", ""},
	{"GET", "/v1/containers/fz/archive", "path=/etc/hostname", ""},
	{"PUT", "/v1/containers/fz/archive", "path=/tmp&noOverwriteDirNonDir=true", "not a tar"},
	{"GET", "/v1/containers/fz/export", "", ""},
	{"GET", "/v1/containers/fz/changes", "", ""},
	{"GET", "/v1/containers/fz/changes/layer", "", ""},
	{"GET", "/v1/images", "", ""},
	{"GET", "/v1/images/resolve", "ref=busybox", ""},
	{"POST", "/v1/images/pull", "ref=busybox:latest", ""},
	{"POST", "/v1/images/push", "ref=busybox", ""},
	{"POST", "/v1/images/import", "ref=imp:v1&options=" + url.QueryEscape(`{"Config":{"Cmd":["/x"]}}`), "not a tar"},
	{"POST", "/v1/images/load", "", "not an archive"},
	{"GET", "/v1/images/save", "ref=busybox&ref=alpine", ""},
	{"POST", "/v1/images/tag", "source=a&target=b", ""},
	{"DELETE", "/v1/images", "ref=a&force=true", ""},
	{"POST", "/v1/images/commit", "options=" + url.QueryEscape(`{"Comment":"c","Ref":"c:1"}`), ""},
	{"POST", "/v1/images/commit", "options=" + url.QueryEscape(`{"HasLayer":true}`), "not a tar"},
	{"GET", "/v1/volumes", "", ""},
	{"POST", "/v1/volumes", "", `{"Name":"v1","Labels":{"a":"b"},"Options":{"size":"1g"}}`},
	{"POST", "/v1/volumes", "", `{"Name":"-"}`},
	{"GET", "/v1/volumes/v1", "", ""},
	{"DELETE", "/v1/volumes/v1", "force=true", ""},
	{"GET", "/v1/networks", "", ""},
	{"POST", "/v1/networks", "", `{"Name":"n1","Subnet":"10.0.0.0/24","Gateway":"10.0.0.1"}`},
	{"GET", "/v1/networks/n1", "", ""},
	{"DELETE", "/v1/networks/n1", "", ""},
	{"GET", "/v1/events", "since=2024-01-02T03:04:05Z", ""},
	{"GET", "/v1/events", "live=true", ""},
	{"POST", "/v1/events", "", `{"Type":"container","Action":"health_status: healthy","ID":"fz"}`},
	{"GET", "/v1/host", "", ""},
	{"POST", "/v1/registries/login", "server=example.com", ""},
	{"GET", "/v2/containers", "", ""},
	{"PUT", "/v1/containers", "", ""},
	{"GET", "/containers", "", ""},
	{"POST", "/v1/containers/fz/kill", "signal=0", ""},
	{"POST", "/v1/containers/fz/restart", "signal=9&timeout=0", ""},
	{"POST", "/v1/containers/fz/stop", "timeout=0", ""},
	{"POST", "/v1/containers/fz/restart", "", ""},
	{"POST", "/v1/containers/fz/rename", "name=fz2", ""},
}

// fuzzTimeout bounds one fuzzed request: the routes that wait (wait,
// logs with follow, live events) end with their request's context.
const fuzzTimeout = 100 * time.Millisecond

// fuzzStall is how long one request may take before the fuzzer calls it
// stuck: well past fuzzTimeout, for a loaded machine.
const fuzzStall = 5 * time.Second

// FuzzRequest: no request — whatever its method, path, query and body —
// panics the server or is answered with a server error other than 501
// (an area a port layer lacks) or 503 (a backend unavailable); every
// answer of 400 or more is the Error body with a known class and the
// status StatusOf gives it; and every request is answered within
// fuzzStall. The backend is every area in process (see fullBackend;
// volumes in memory, the guest requests the fake tether lacks stubbed by
// guestStub, stops' grace periods cut short by quickStops), with a
// running container "fz"; the containers the fuzzer creates are removed
// every so often.
func FuzzRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.method, s.path, s.query, []byte(s.body))
	}
	b, svc := fullBackend(f)
	b.Volumes = &memVolumes{}
	b.Monitor, b.Archives = guestStub{svc, svc.Archives()}, guestStub{svc, svc.Archives()}
	b.Compute = quickStops{svc}
	h, err := api.Handler(b, nil)
	if err != nil {
		f.Fatal(err)
	}
	runs := 0
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		if runs%200 == 0 || !fuzzReady(svc) {
			resetFuzzContainers(t, svc)
		}
		runs++
		// The request as a server would have parsed it; what a server
		// refuses before any handler (a bad method token, a target that
		// is not a request URI) is not the handler's to answer.
		if _, err := http.NewRequest(method, "http://portlayer/", nil); err != nil || method == "" {
			return
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), fuzzTimeout)
		defer cancel()
		req := (&http.Request{
			Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "portlayer", Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		}).WithContext(ctx)
		if len(body) > 0 {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		done := make(chan bool, 1)
		go func() { done <- serveOnce(h, rec, req) }()
		select {
		case aborted := <-done:
			if aborted {
				return // a tar stream cut on purpose (the server's ErrAbortHandler)
			}
		case <-time.After(fuzzStall):
			buf := make([]byte, 1<<20)
			t.Fatalf("%s %s body %q: no answer after %v, %v past its context's end\n%s", method, target, body, fuzzStall, fuzzStall-fuzzTimeout, buf[:runtime.Stack(buf, true)])
		}
		code := rec.Code
		switch {
		case code >= 500 && code != http.StatusNotImplemented && code != http.StatusServiceUnavailable:
			t.Fatalf("%s %s body %q: %d %s", method, target, body, code, rec.Body)
		case code >= 400:
			if _, err := checkErrorBody(code, rec.Header(), rec.Body.Bytes()); err != nil {
				t.Fatalf("%s %s body %q: %d %q: %v", method, target, body, code, rec.Body, err)
			}
		case code >= 300:
			// The mux redirects a path that is not clean ("/v1//x") to
			// its clean form (307 keeping a method other than GET or
			// HEAD); nothing else redirects.
			if (code != http.StatusMovedPermanently && code != http.StatusTemporaryRedirect) || rec.Header().Get("Location") == "" {
				t.Fatalf("%s %s body %q: %d %q", method, target, body, code, rec.Body)
			}
		case code < 200:
			t.Fatalf("%s %s body %q: %d", method, target, body, code)
		}
	})
}

// serveOnce serves req, reporting a panic with http.ErrAbortHandler
// (how a handler cuts a response it cannot finish, which net/http's
// server turns into a closed connection) as aborted; any other panic
// goes on.
func serveOnce(h http.Handler, w http.ResponseWriter, req *http.Request) (aborted bool) {
	defer func() {
		if p := recover(); p != nil {
			if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				aborted = true
				return
			}
			panic(p)
		}
	}()
	h.ServeHTTP(w, req)
	return false
}

// fuzzReady reports whether "fz" runs and the fuzzer has not left more
// containers than a run should keep.
func fuzzReady(svc *compute.Service) bool {
	ctx := context.Background()
	cs, err := svc.List(ctx)
	if err != nil || len(cs) > 8 {
		return false
	}
	c, err := svc.Inspect(ctx, "fz")
	return err == nil && c.State.Status == portlayer.StatusRunning
}

// resetFuzzContainers removes every container and creates and starts
// "fz" again.
func resetFuzzContainers(t *testing.T, svc *compute.Service) {
	removeAll(svc)
	ctx := context.Background()
	if _, err := svc.Create(ctx, portlayer.ContainerSpec{Name: "fz", Image: testImage, Args: []string{"ticks", "10ms"}}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx, "fz"); err != nil {
		t.Fatal(err)
	}
}

// guestStub answers, for the fuzzer, the guest requests the fake
// tether does not serve (top, stats, a path's stat and archive; on the
// fake the compute service answers them internal): canned answers for
// a container compute knows, its not_found for one it does not.
type guestStub struct {
	*compute.Service
	*compute.Archives
}

func (g guestStub) Top(ctx context.Context, ref string) ([]portlayer.ProcessInfo, error) {
	_, err := g.Inspect(ctx, ref)
	return nil, err
}

func (g guestStub) Stats(ctx context.Context, ref string) (portlayer.StatsSample, error) {
	_, err := g.Inspect(ctx, ref)
	return portlayer.StatsSample{}, err
}

func (g guestStub) StatPath(ctx context.Context, ref, path string) (portlayer.PathStat, error) {
	if _, err := g.Inspect(ctx, ref); err != nil {
		return portlayer.PathStat{}, err
	}
	return portlayer.PathStat{Name: path, Mode: 0o644}, nil
}

func (g guestStub) GetArchive(ctx context.Context, ref, path string) (portlayer.PathStat, io.ReadCloser, error) {
	st, err := g.StatPath(ctx, ref, path)
	if err != nil {
		return st, nil, err
	}
	return st, io.NopCloser(strings.NewReader("not really a tar")), nil
}

// quickStops is compute with every stop's grace period cut to
// quickStop (a negative one, forever, too): a stop (or restart) of a process that ignores SIGTERM
// waits out its timeout (10 s by default) whatever the request's
// context, which would make one fuzzed input slow without exercising
// the server any further.
type quickStops struct{ *compute.Service }

const quickStop = 10 * time.Millisecond

func bounded(timeout *time.Duration) *time.Duration {
	d := quickStop
	if timeout != nil && *timeout >= 0 && *timeout < d {
		d = *timeout
	}
	return &d // never forever (negative)
}

func (q quickStops) Stop(ctx context.Context, ref string, timeout *time.Duration) error {
	return q.Service.Stop(ctx, ref, bounded(timeout))
}

func (q quickStops) Restart(ctx context.Context, ref string, signal int, timeout *time.Duration) error {
	return q.Service.Restart(ctx, ref, signal, bounded(timeout))
}
