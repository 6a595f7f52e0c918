package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/compute"
	"github.com/vchproject/vch/internal/portlayer/computetest"
	"github.com/vchproject/vch/internal/portlayer/events"
	"github.com/vchproject/vch/internal/portlayer/storage"
	"github.com/vchproject/vch/internal/portlayer/volume"
)

// testImage is the image ID the tests' containers use.
var testImage = computetest.Image

// newCompute is an in-process compute service on the fake hypervisor,
// its containers removed and the service closed when the test ends.
func newCompute(tb testing.TB) *compute.Service {
	return computetest.NewService(tb, compute.Config{}, nil)
}

// removeAll removes every container of svc, running or not.
func removeAll(svc *compute.Service) { computetest.RemoveAll(svc) }

// offlineImages is the image store with the operations that reach a
// registry refused at once (the tests have no network): Pull and Push
// answer unavailable, after the server has parsed their requests.
type offlineImages struct{ *storage.Store }

var errOffline = &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "test: no registry is reachable"}

func (offlineImages) Pull(context.Context, string, portlayer.RegistryAuth, portlayer.ProgressFunc) (portlayer.Image, error) {
	return portlayer.Image{}, errOffline
}

func (offlineImages) Push(context.Context, string, portlayer.RegistryAuth, portlayer.ProgressFunc) ([]portlayer.PushResult, error) {
	return nil, errOffline
}

func (offlineImages) Login(context.Context, string, portlayer.RegistryAuth) error { return errOffline }

// stubNetworks keeps network records in memory without plumbing
// anything (the real network area needs the VCH's namespace): enough for
// the server's decoding of network requests to be reached.
type stubNetworks struct {
	mu   sync.Mutex
	nets map[string]portlayer.Network
}

func (n *stubNetworks) CreateNetwork(_ context.Context, spec portlayer.NetworkSpec) (portlayer.Network, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if spec.Name == "" {
		return portlayer.Network{}, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Kind: portlayer.KindNetwork, Field: "Name", Reason: portlayer.ReasonRequired, Message: "stub: a network needs a name"}
	}
	if _, ok := n.nets[spec.Name]; ok {
		return portlayer.Network{}, &portlayer.Error{Class: portlayer.ClassAlreadyExists, Kind: portlayer.KindNetwork, Name: spec.Name, Message: "stub: network " + spec.Name + " exists"}
	}
	if n.nets == nil {
		n.nets = map[string]portlayer.Network{}
	}
	nw := portlayer.Network{ID: fmt.Sprintf("%064x", len(n.nets)+1), Name: spec.Name, Driver: "bridge", Created: time.Now(), Labels: spec.Labels, Options: spec.Options}
	n.nets[spec.Name] = nw
	return nw, nil
}

func (n *stubNetworks) InspectNetwork(_ context.Context, ref string) (portlayer.Network, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nw, ok := n.nets[ref]; ok {
		return nw, nil
	}
	return portlayer.Network{}, &portlayer.Error{Class: portlayer.ClassNotFound, Kind: portlayer.KindNetwork, ID: ref, Message: "stub: no network " + ref}
}

func (n *stubNetworks) ListNetworks(context.Context) ([]portlayer.Network, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []portlayer.Network
	for _, nw := range n.nets {
		out = append(out, nw)
	}
	return out, nil
}

func (n *stubNetworks) RemoveNetwork(ctx context.Context, ref string) error {
	if _, err := n.InspectNetwork(ctx, ref); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nets, ref)
	return nil
}

// fullBackend is every area the server serves, in process: compute on
// the fake hypervisor (also its pause, interaction, execs, monitor,
// network connection, update and archives), the image store (offline),
// a volume store and an event log, and the network stub.
func fullBackend(tb testing.TB) (api.Backend, *compute.Service) {
	tb.Helper()
	svc := newCompute(tb)
	store, err := storage.New(storage.Config{Root: tb.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	evlog := events.New(100)
	vols, err := volume.New(volume.Config{Root: tb.TempDir(), Events: evlog}, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	images := offlineImages{store}
	return api.Backend{
		Compute: svc, Pauser: svc, Images: images, Interaction: svc,
		Volumes: vols, Networks: &stubNetworks{}, Events: evlog, Execs: svc.Execs(),
		Host:    func(context.Context) (portlayer.HostInfo, error) { return portlayer.HostInfo{Name: "test"}, nil },
		Monitor: svc, NetworkConnector: svc, Updater: svc, Archives: svc.Archives(),
		Committer: store, Login: images, Publish: evlog.Publish,
	}, svc
}

// knownClasses are the classes the document's Error schema lists.
var knownClasses = map[portlayer.ErrorClass]bool{
	portlayer.ClassNotFound: true, portlayer.ClassAlreadyExists: true, portlayer.ClassConflict: true,
	portlayer.ClassInvalidArgument: true, portlayer.ClassFailedPrecondition: true, portlayer.ClassUnavailable: true,
	portlayer.ClassResourceExhausted: true, portlayer.ClassNotImplemented: true, portlayer.ClassPermissionDenied: true,
	portlayer.ClassUnauthenticated: true, portlayer.ClassInternal: true, portlayer.ClassNotModified: true,
}

// checkErrorBody checks that a non-2xx answer is the API's Error body:
// JSON, a known class whose status (StatusOf) is the answer's, and a
// message. It returns the body.
func checkErrorBody(code int, header http.Header, body []byte) (portlayer.Error, error) {
	var e portlayer.Error
	if ct := header.Get("Content-Type"); ct != "application/json" {
		return e, fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Errorf("not an Error body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return e, fmt.Errorf("more than one JSON value in the body")
	}
	if !knownClasses[e.Class] {
		return e, fmt.Errorf("unknown class %q", e.Class)
	}
	if want := api.StatusOf(e.Class); want != code {
		return e, fmt.Errorf("status %d for class %s, want %d", code, e.Class, want)
	}
	if e.Message == "" {
		return e, fmt.Errorf("no message")
	}
	return e, nil
}

// serveUnix serves h on a unix socket in a temporary directory until the
// test ends and returns the socket's path.
func serveUnix(tb testing.TB, h http.Handler) string {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "pl.sock")
	l, err := api.Listen("unix://"+sock, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = api.Serve(ctx, l, h) }()
	tb.Cleanup(func() { cancel(); <-done })
	return sock
}

// unixHTTP is an HTTP client of the server at sock, no keep-alives (so a
// closed response closes its connection).
func unixHTTP(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// memVolumes keeps volume records in memory, names checked as the
// volume store checks them, without making disks (mkfs per create is
// too slow, and too big, for a fuzzer's thousands of creates).
type memVolumes struct {
	mu   sync.Mutex
	vols map[string]portlayer.Volume
}

func (m *memVolumes) CreateVolume(_ context.Context, spec portlayer.VolumeSpec) (portlayer.Volume, error) {
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("%064x", time.Now().UnixNano())
	}
	if err := volume.ValidateName(spec.Name); err != nil {
		return portlayer.Volume{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.vols[spec.Name]; ok {
		return v, nil
	}
	if m.vols == nil || len(m.vols) > 64 {
		m.vols = map[string]portlayer.Volume{}
	}
	v := portlayer.Volume{Name: spec.Name, Driver: "local", CreatedAt: time.Now(), Labels: spec.Labels, Options: spec.Options}
	m.vols[spec.Name] = v
	return v, nil
}

func (m *memVolumes) InspectVolume(_ context.Context, name string) (portlayer.Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.vols[name]; ok {
		return v, nil
	}
	return portlayer.Volume{}, &portlayer.Error{Class: portlayer.ClassNotFound, Kind: portlayer.KindVolume, ID: name, Message: "stub: no volume " + name}
}

func (m *memVolumes) ListVolumes(context.Context) ([]portlayer.Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []portlayer.Volume
	for _, v := range m.vols {
		out = append(out, v)
	}
	return out, nil
}

func (m *memVolumes) RemoveVolume(ctx context.Context, name string, force bool) error {
	if _, err := m.InspectVolume(ctx, name); err != nil && !force {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.vols, name)
	return nil
}
