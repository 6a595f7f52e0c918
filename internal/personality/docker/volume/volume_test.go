package volume

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/volume"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// fakeStore is an in-memory volume store that records calls and knows
// which volumes the fake containers use.
type fakeStore struct {
	mu    sync.Mutex
	vols  map[string]portlayer.Volume
	users map[string][]string
	calls []string
	fail  error
}

func newFake() *fakeStore {
	return &fakeStore{vols: map[string]portlayer.Volume{}, users: map[string][]string{}}
}

func (f *fakeStore) add(v portlayer.Volume) {
	v.Driver = "local"
	v.Mountpoint = "/vch/volumes/" + v.Name
	v.CreatedAt = time.Date(2026, 11, 29, 15, 0, 0, 0, time.UTC)
	f.vols[v.Name] = v
}

func (f *fakeStore) CreateVolume(_ context.Context, spec portlayer.VolumeSpec) (portlayer.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("create %s anonymous=%v labels=%v opts=%v", spec.Name, spec.Anonymous, spec.Labels, spec.Options))
	if f.fail != nil {
		return portlayer.Volume{}, f.fail
	}
	if v, ok := f.vols[spec.Name]; ok {
		return v, nil
	}
	f.add(portlayer.Volume{Name: spec.Name, Labels: spec.Labels, Options: spec.Options, Anonymous: spec.Anonymous})
	return f.vols[spec.Name], nil
}

func (f *fakeStore) InspectVolume(_ context.Context, name string) (portlayer.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.vols[name]; ok {
		return v, nil
	}
	return portlayer.Volume{}, portlayer.Errorf(portlayer.ClassNotFound, "get %s: no such volume", name)
}

func (f *fakeStore) ListVolumes(context.Context) ([]portlayer.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []portlayer.Volume
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range f.vols {
			if !yield(k) {
				return
			}
		}
	}) {
		out = append(out, f.vols[name])
	}
	return out, nil
}

func (f *fakeStore) RemoveVolume(_ context.Context, name string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("remove %s force=%v", name, force))
	if _, ok := f.vols[name]; !ok {
		if force {
			return nil
		}
		return portlayer.NoSuchVolume(name)
	}
	if u := f.users[name]; len(u) > 0 {
		return portlayer.VolumeInUse(name, u)
	}
	delete(f.vols, name)
	return nil
}

// List implements the container lister: one container per user.
func (f *fakeStore) List(context.Context) ([]portlayer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []portlayer.Container
	for name, ids := range f.users {
		for _, id := range ids {
			out = append(out, portlayer.Container{ID: id, Spec: portlayer.ContainerSpec{Mounts: []portlayer.MountSpec{{Type: portlayer.MountVolume, Source: name, Target: "/x"}}}})
		}
	}
	return out, nil
}

// serve runs one request through the routes and returns the status and body.
func serve(t *testing.T, f *fakeStore, method, target, version, body string) (int, string) {
	t.Helper()
	rt := NewRouter(f, f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req = req.WithContext(httputils.WithVersion(req.Context(), version))
	if err := httputils.ParseForm(req); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	path := req.URL.Path
	for _, route := range rt.Routes() {
		if route.Method != method {
			continue
		}
		if vars, ok := route.Match(path); ok {
			if err := route.Handler(rec, req, vars); err != nil {
				return codeOf(err), err.Error()
			}
			return rec.Code, rec.Body.String()
		}
	}
	t.Fatalf("no route for %s %s", method, path)
	return 0, ""
}

func codeOf(err error) int {
	switch {
	case errdefs.IsNotFound(err):
		return 404
	case errdefs.IsInvalidArgument(err):
		return 400
	case errdefs.IsConflict(err):
		return 409
	case errdefs.IsNotImplemented(err):
		return 501
	}
	return 500
}

func filters(f string) string { return "filters=" + url.QueryEscape(f) }

func TestCreateInspectRemove(t *testing.T) {
	f := newFake()
	code, body := serve(t, f, "POST", "/volumes/create", "1.50", `{"Name":"data","Labels":{"k":"v"},"DriverOpts":{"size":"1g"}}`)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var v volume.Volume
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if v.Name != "data" || v.Driver != "local" || v.Scope != "local" || v.Labels["k"] != "v" || v.Options["size"] != "1g" || v.CreatedAt != "2026-11-29T15:00:00Z" || v.Mountpoint != "/vch/volumes/data/_data" {
		t.Errorf("created %+v", v)
	}
	// Docker's null Labels and Options for a plain volume.
	_, body = serve(t, f, "POST", "/volumes/create", "1.50", `{"Name":"plain"}`)
	if !strings.Contains(body, `"Labels":null`) || !strings.Contains(body, `"Options":null`) {
		t.Errorf("plain volume %s", body)
	}
	// An anonymous-labelled volume is recorded as anonymous.
	serve(t, f, "POST", "/volumes/create", "1.50", `{"Name":"anon1","Labels":{"com.docker.volume.anonymous":""}}`)
	if got := f.calls[len(f.calls)-1]; got != "create anon1 anonymous=true labels=map[] opts=map[]" {
		t.Errorf("call %q", got)
	}
	if code, body := serve(t, f, "GET", "/volumes/anon1", "1.50", ""); code != 200 || !strings.Contains(body, `"Labels":{"com.docker.volume.anonymous":""}`) {
		t.Errorf("inspect anonymous: %d %s", code, body)
	}
	for _, tc := range []struct {
		method, target, body string
		code                 int
		msg                  string
	}{
		{"GET", "/volumes/nosuch", "", 404, "get nosuch: no such volume"},
		{"DELETE", "/volumes/nosuch", "", 404, "get nosuch: no such volume"},
		{"DELETE", "/volumes/nosuch?force=1", "", 204, ""},
		{"POST", "/volumes/create", `{"Name":"x9","Driver":"foo"}`, 404, `create x9: error looking up volume plugin foo: plugin "foo" not found`},
		{"POST", "/volumes/create", `{"Name":"c1","ClusterVolumeSpec":{}}`, 501, "cluster volumes are not supported"},
	} {
		code, body := serve(t, f, tc.method, tc.target, "1.50", tc.body)
		if code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.target, code, body, tc.code, tc.msg)
		}
	}
	f.users["data"] = []string{"c1"}
	if code, body := serve(t, f, "DELETE", "/volumes/data", "1.50", ""); code != 409 || body != "remove data: volume is in use - [c1]" {
		t.Errorf("remove in use: %d %q", code, body)
	}
	delete(f.users, "data")
	if code, body := serve(t, f, "DELETE", "/volumes/data", "1.50", ""); code != 204 {
		t.Errorf("remove: %d %s", code, body)
	}
	// The store's own text for a bad name.
	f.fail = portlayer.Errorf(portlayer.ClassInvalidArgument, "create a: volume name is too short, names should be at least two alphanumeric characters")
	if code, body := serve(t, f, "POST", "/volumes/create", "1.50", `{"Name":"a"}`); code != 400 || body != "create a: volume name is too short, names should be at least two alphanumeric characters" {
		t.Errorf("bad name: %d %q", code, body)
	}
}

func TestListFilters(t *testing.T) {
	f := newFake()
	f.add(portlayer.Volume{Name: "alpha", Labels: map[string]string{"env": "prod"}})
	f.add(portlayer.Volume{Name: "beta", Labels: map[string]string{"env": "dev"}})
	f.add(portlayer.Volume{Name: "gamma-1"})
	f.add(portlayer.Volume{Name: strings.Repeat("a", 64), Anonymous: true})
	f.users["alpha"] = []string{"c1"}
	list := func(q string) []string {
		t.Helper()
		code, body := serve(t, f, "GET", "/volumes?"+q, "1.50", "")
		if code != 200 {
			t.Fatalf("list %s: %d %s", q, code, body)
		}
		var resp volume.ListResponse
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, v := range resp.Volumes {
			names = append(names, v.Name)
		}
		return names
	}
	anon := strings.Repeat("a", 64)
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"", []string{anon, "alpha", "beta", "gamma-1"}},
		{filters(`{"dangling":{"true":true}}`), []string{anon, "beta", "gamma-1"}},
		{filters(`{"dangling":{"0":true}}`), []string{"alpha"}},
		{filters(`{"name":{"a-":true}}`), []string{"gamma-1"}},
		{filters(`{"name":{"^b":true}}`), []string{"beta"}},
		{filters(`{"label":{"env":true}}`), []string{"alpha", "beta"}},
		{filters(`{"label":{"env=dev":true}}`), []string{"beta"}},
		{filters(`{"label":{"com.docker.volume.anonymous":true}}`), []string{anon}},
		{filters(`{"driver":{"local":true}}`), []string{anon, "alpha", "beta", "gamma-1"}},
		{filters(`{"driver":{"other":true}}`), nil},
	} {
		if got := list(tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("list %s = %v, want %v", tc.q, got, tc.want)
		}
	}
	if code, body := serve(t, f, "GET", "/volumes?"+filters(`{"dangling":{"maybe":true}}`), "1.50", ""); code != 400 || !strings.Contains(body, "dangling=maybe") {
		t.Errorf("bad dangling: %d %s", code, body)
	}
	if code, body := serve(t, f, "GET", "/volumes?"+filters(`{"bogus":{"x":true}}`), "1.50", ""); code != 400 || !strings.Contains(body, "invalid filter 'bogus'") {
		t.Errorf("bad filter: %d %s", code, body)
	}
}

func TestPrune(t *testing.T) {
	setup := func() *fakeStore {
		f := newFake()
		f.add(portlayer.Volume{Name: "named", DiskUsageBytes: 100})
		f.add(portlayer.Volume{Name: "used", Anonymous: true})
		f.add(portlayer.Volume{Name: "anon1", Anonymous: true, DiskUsageBytes: 4096, Labels: map[string]string{"keep": "yes"}})
		f.add(portlayer.Volume{Name: "anon2", Anonymous: true, DiskUsageBytes: 8192})
		f.users["used"] = []string{"c1"}
		return f
	}
	for _, tc := range []struct {
		name, version, q string
		want             []string
		space            uint64
	}{
		{"anonymous only since 1.42", "1.50", "", []string{"anon1", "anon2"}, 12288},
		{"all", "1.50", filters(`{"all":{"true":true}}`), []string{"anon1", "anon2", "named"}, 12388},
		{"label", "1.50", filters(`{"label":{"keep=yes":true}}`), []string{"anon1"}, 4096},
		{"label!", "1.50", filters(`{"label!":{"keep":true}}`), []string{"anon2"}, 8192},
		{"every unused one before 1.42", "1.41", "", []string{"anon1", "anon2", "named"}, 12388},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup()
			code, body := serve(t, f, "POST", "/volumes/prune?"+tc.q, tc.version, "")
			if code != 200 {
				t.Fatalf("prune: %d %s", code, body)
			}
			var rep volume.PruneReport
			if err := json.Unmarshal([]byte(body), &rep); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rep.VolumesDeleted, tc.want) || rep.SpaceReclaimed != tc.space {
				t.Errorf("pruned %v (%d bytes), want %v (%d)", rep.VolumesDeleted, rep.SpaceReclaimed, tc.want, tc.space)
			}
			if _, ok := f.vols["used"]; !ok {
				t.Error("an in-use volume was pruned")
			}
		})
	}
	f := setup()
	if code, body := serve(t, f, "POST", "/volumes/prune?"+filters(`{"all":{"true":true}}`), "1.41", ""); code != 400 || !strings.Contains(body, "invalid filter 'all'") {
		t.Errorf("all before 1.42: %d %s", code, body)
	}
}
