package docker_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// fuzzRoutes are the Engine API routes that decode a request body or
// parameters; the fuzzer picks one by index and supplies the rest.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/containers/create?name="},
	{"POST", "/containers/c1/exec"},
	{"POST", "/containers/c1/update"},
	{"POST", "/containers/c1/kill?signal="},
	{"POST", "/containers/c1/wait?condition="},
	{"POST", "/containers/c1/resize?h=1&w="},
	{"GET", "/containers/json?filters="},
	{"GET", "/containers/c1/logs?stdout=1&since="},
	{"POST", "/exec/e1/start"},
	{"POST", "/exec/e1/resize?w=1&h="},
	{"POST", "/networks/create"},
	{"POST", "/networks/n1/connect"},
	{"GET", "/networks?filters="},
	{"POST", "/volumes/create"},
	{"GET", "/volumes?filters="},
	{"POST", "/volumes/prune?filters="},
	{"POST", "/commit?container=c1&changes="},
	{"POST", "/images/create?fromImage=busybox&tag="},
	{"GET", "/images/json?filters="},
	{"POST", "/images/busybox/tag?repo="},
	{"GET", "/events?since=0&until=1&filters="},
	{"POST", "/containers/prune?filters="},
	{"POST", "/auth"},
	{"GET", "/v1.12/version?x="},
}

// FuzzEngineAPI: no request, whatever its body or parameters, panics the
// daemon or is answered with a server error (5xx other than 501 for a
// route vch lacks, 503 for an unavailable backend); every error answer
// is Docker's JSON shape with a message.
func FuzzEngineAPI(f *testing.F) {
	for i := range fuzzRoutes {
		f.Add(uint8(i), "", []byte(""))
		f.Add(uint8(i), "x", []byte("{}"))
	}
	f.Add(uint8(0), "", []byte(`{"Image":"busybox","HostConfig":{"Memory":-1,"PortBindings":{"80/tcp":[{"HostPort":"x"}]}}}`))
	f.Add(uint8(0), "a", []byte(`{"Image":"busybox","Env":["="],"Cmd":5}`))
	f.Add(uint8(2), "", []byte(`{"Memory":1,"MemorySwap":-5,"PidsLimit":-1,"CpuQuota":1}`))
	f.Add(uint8(6), `{"status":["nope"]}`, []byte(""))
	f.Add(uint8(10), "", []byte(`{"Name":"n","IPAM":{"Config":[{"Subnet":"300.1.1.0/24"}]}}`))
	f.Add(uint8(16), "RUN x", []byte(`{"Cmd":"x"}`))
	f.Fuzz(func(t *testing.T, route uint8, param string, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		target := rt.path + url.QueryEscape(param)
		_, h := newHandler(t)
		req := httptest.NewRequestWithContext(t.Context(), rt.method, target, strings.NewReader(string(body)))
		if len(body) > 0 {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500 && rec.Code != http.StatusNotImplemented && rec.Code != http.StatusServiceUnavailable:
			t.Fatalf("%s %s body %q: %d %s", rt.method, target, body, rec.Code, rec.Body)
		case rec.Code >= 400 && rec.Header().Get("Content-Type") == "application/json":
			var m struct{ Message string }
			if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m.Message == "" {
				t.Fatalf("%s %s: %d with body %q, not Docker's error shape", rt.method, target, rec.Code, rec.Body)
			}
		}
	})
}
