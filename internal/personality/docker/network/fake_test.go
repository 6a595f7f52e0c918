package network_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/personality/docker/network"
	"github.com/vchproject/vch/internal/portlayer"
)

// created is every fake network's creation time.
var created = time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)

func fakeID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

// fakeNets is an in-memory portlayer.Networks (with "bridge" and "none")
// and portlayer.NetworkConnector. It records every call and fails on
// demand: fail["CreateNetwork"] is returned by the next CreateNetwork.
type fakeNets struct {
	mu    sync.Mutex
	nets  []portlayer.Network
	calls []string
	fail  map[string]error
	// connErr is what Connect and Disconnect return.
	connErr error
	pool    int
}

func newFake() *fakeNets {
	return &fakeNets{
		fail: map[string]error{},
		nets: []portlayer.Network{
			{ID: fakeID("bridge"), Name: "bridge", Driver: "bridge", Created: created, Predefined: true, Bridge: "vch0",
				Subnet: netip.MustParsePrefix("172.17.0.0/16"), Gateway: netip.MustParseAddr("172.17.0.1")},
			{ID: fakeID("none"), Name: "none", Driver: "null", Created: created, Predefined: true},
		},
	}
}

func (f *fakeNets) record(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

func (f *fakeNets) failure(op string) error {
	err := f.fail[op]
	delete(f.fail, op)
	return err
}

// Calls returns the calls so far, as "Method arg...".
func (f *fakeNets) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// find resolves idOrName as the contract says: full ID, name, then a
// unique ID prefix. -1 with NotFound or InvalidArgument.
func (f *fakeNets) find(idOrName string) (int, error) {
	var prefixed []int
	for i, n := range f.nets {
		if n.ID == idOrName || n.Name == idOrName {
			return i, nil
		}
		if strings.HasPrefix(n.ID, idOrName) {
			prefixed = append(prefixed, i)
		}
	}
	switch len(prefixed) {
	case 0:
		return -1, fmt.Errorf("network: %s: %w", idOrName, errdefs.ErrNotFound)
	case 1:
		return prefixed[0], nil
	default:
		return -1, fmt.Errorf("network: network %s is ambiguous (%d matches found based on ID prefix): %w", idOrName, len(prefixed), errdefs.ErrInvalidArgument)
	}
}

func (f *fakeNets) CreateNetwork(_ context.Context, spec portlayer.NetworkSpec) (portlayer.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("CreateNetwork %s", spec.Name)
	if err := f.failure("CreateNetwork"); err != nil {
		return portlayer.Network{}, err
	}
	for _, n := range f.nets {
		if n.Name == spec.Name {
			return portlayer.Network{}, fmt.Errorf("network: %s: %w", spec.Name, errdefs.ErrAlreadyExists)
		}
	}
	n := portlayer.Network{
		ID: fakeID(spec.Name), Name: spec.Name, Driver: spec.Driver, Created: created,
		Subnet: spec.Subnet, Gateway: spec.Gateway, IPRange: spec.IPRange, Internal: spec.Internal,
		Labels: spec.Labels, Options: spec.Options, Bridge: "br-" + fakeID(spec.Name)[:12],
	}
	if !n.Subnet.IsValid() {
		n.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(18 + f.pool), 0, 0}), 16)
		f.pool++
	}
	if !n.Gateway.IsValid() {
		n.Gateway = n.Subnet.Addr().Next()
	}
	f.nets = append(f.nets, n)
	return n, nil
}

func (f *fakeNets) InspectNetwork(_ context.Context, idOrName string) (portlayer.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("InspectNetwork %s", idOrName)
	if err := f.failure("InspectNetwork"); err != nil {
		return portlayer.Network{}, err
	}
	i, err := f.find(idOrName)
	if err != nil {
		return portlayer.Network{}, err
	}
	return f.nets[i], nil
}

func (f *fakeNets) ListNetworks(context.Context) ([]portlayer.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("ListNetworks")
	if err := f.failure("ListNetworks"); err != nil {
		return nil, err
	}
	return slices.Clone(f.nets), nil
}

func (f *fakeNets) RemoveNetwork(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RemoveNetwork %s", idOrName)
	if err := f.failure("RemoveNetwork"); err != nil {
		return err
	}
	i, err := f.find(idOrName)
	if err != nil {
		return err
	}
	if f.nets[i].Predefined || len(f.nets[i].Endpoints) > 0 {
		return fmt.Errorf("network: %s in use: %w", idOrName, errdefs.ErrConflict)
	}
	f.nets = slices.Delete(f.nets, i, i+1)
	return nil
}

// attach adds an endpoint for container (64 hex digits from name) to
// network.
func (f *fakeNets) attach(network, name string, addr string) portlayer.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.find(network)
	if err != nil {
		panic(err)
	}
	cid := fakeID("ctr-" + name)
	ep := portlayer.Endpoint{
		ID: fakeID("ep-" + name + "-" + network), NetworkID: f.nets[i].ID, NetworkName: f.nets[i].Name, ContainerID: cid,
		Gateway: f.nets[i].Gateway, DNSNames: []string{name, cid[:12]},
	}
	if addr != "" {
		ep.Address = netip.MustParsePrefix(addr)
		a := ep.Address.Addr().As4()
		ep.MAC = fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
	}
	f.nets[i].Endpoints = append(f.nets[i].Endpoints, ep)
	return ep
}

func (f *fakeNets) Connect(_ context.Context, container string, spec portlayer.EndpointSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Connect %s %s ip=%v aliases=%v links=%v", container, spec.Network, spec.IPv4, spec.Aliases, spec.Links)
	return f.connErr
}

func (f *fakeNets) Disconnect(_ context.Context, container, network string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Disconnect %s %s force=%v", container, network, force)
	return f.connErr
}

var versionPrefix = regexp.MustCompile(`^/v([0-9]+\.[0-9]+)(/.*)$`)

// handler serves routes the way package docker's server does: an optional
// "/v1.NN" prefix, the form parsed, errors as {"message"} with
// docker.StatusCode; and /_ping for the Go client's version negotiation.
func handler(t *testing.T, routes []httputils.Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", docker.MaxAPIVersion)
		path, version := r.URL.Path, docker.MaxAPIVersion
		if m := versionPrefix.FindStringSubmatch(path); m != nil {
			version, path = m[1], m[2]
		}
		if path == "/_ping" {
			_, _ = w.Write([]byte("OK"))
			return
		}
		r = r.WithContext(httputils.WithVersion(r.Context(), version))
		if err := httputils.ParseForm(r); err != nil {
			t.Errorf("parse form: %v", err)
		}
		for _, rt := range routes {
			if rt.Method != r.Method {
				continue
			}
			if vars, ok := rt.Match(path); ok {
				if err := rt.Handler(w, r, vars); err != nil {
					_ = httputils.WriteJSON(w, docker.StatusCode(err), map[string]string{"message": err.Error()})
				}
				return
			}
		}
		_ = httputils.WriteJSON(w, http.StatusNotFound, map[string]string{"message": "page not found"})
	})
}

// newRouterWith returns the routes over nets and conn.
func newRouterWith(nets portlayer.Networks, conn portlayer.NetworkConnector) []httputils.Route {
	return network.NewRouter(nets, conn, nil).Routes()
}

// newRouter returns a router over a fresh fake, and the fake.
func newRouter(t *testing.T) (http.Handler, *fakeNets) {
	f := newFake()
	return handler(t, network.NewRouter(f, f, nil).Routes()), f
}

var errBoom = errors.New("boom")
