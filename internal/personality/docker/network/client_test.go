package network_test

import (
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// listen serves h on a unix socket for the test's duration and returns
// the socket's path.
func listen(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// serve serves h on a unix socket for the test's duration and returns a
// moby Go client for it (which negotiates API 1.50 through /_ping).
func serve(t *testing.T, h http.Handler) *client.Client {
	t.Helper()
	c, err := client.New(client.WithHost("unix://" + listen(t, h)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClient drives the moby Go client through docker network create,
// ls, inspect, connect, disconnect, rm and prune, and checks that errors
// come back with the classes the client derives from dockerd's codes.
func TestClient(t *testing.T) {
	h, f := newRouter(t)
	cli := serve(t, h)
	ctx := t.Context()

	created, err := cli.NetworkCreate(ctx, "app", client.NetworkCreateOptions{
		Driver:   "bridge",
		Internal: true,
		Labels:   map[string]string{"tier": "web"},
		IPAM: &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{
			Subnet: netip.MustParsePrefix("10.1.0.0/16"), IPRange: netip.MustParsePrefix("10.1.2.0/24"), Gateway: netip.MustParseAddr("10.1.0.254"),
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.ID != fakeID("app") || created.Warning != nil {
		t.Fatalf("create = %+v", created)
	}
	if _, err := cli.NetworkCreate(ctx, "app", client.NetworkCreateOptions{}); !errdefs.IsConflict(err) {
		t.Errorf("duplicate create: %v", err)
	}

	list, err := cli.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"bridge", "none", "app"}) {
		t.Errorf("list = %v", names)
	}
	list, err = cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("type", "custom").Add("label", "tier=web")})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "app" || list.Items[0].Scope != "local" {
		t.Errorf("filtered list = %+v, %v", list.Items, err)
	}

	f.attach("app", "web", "10.1.2.1/16")
	ins, err := cli.NetworkInspect(ctx, fakeID("app")[:12], client.NetworkInspectOptions{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	n := ins.Network
	if n.Name != "app" || n.Driver != "bridge" || !n.Internal || !n.EnableIPv4 || n.EnableIPv6 || n.Labels["tier"] != "web" ||
		n.IPAM.Driver != "default" || len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Gateway.String() != "10.1.0.254" || n.IPAM.Config[0].IPRange.String() != "10.1.2.0/24" {
		t.Errorf("inspect = %+v", n)
	}
	ep, ok := n.Containers[fakeID("ctr-web")]
	if !ok || ep.Name != "web" || ep.IPv4Address.String() != "10.1.2.1/16" || ep.MacAddress.String() != "02:42:0a:01:02:01" || ep.IPv6Address.IsValid() {
		t.Errorf("containers = %+v", n.Containers)
	}
	bridge, err := cli.NetworkInspect(ctx, "bridge", client.NetworkInspectOptions{})
	if err != nil || bridge.Network.Options["com.docker.network.bridge.default_bridge"] != "true" || bridge.Network.IPAM.Config[0].Subnet.String() != "172.17.0.0/16" {
		t.Errorf("bridge = %+v, %v", bridge.Network, err)
	}
	if _, err := cli.NetworkInspect(ctx, "nope", client.NetworkInspectOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("inspect nope: %v", err)
	}

	if _, err := cli.NetworkConnect(ctx, "app", client.NetworkConnectOptions{
		Container:      "db",
		EndpointConfig: &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: netip.MustParseAddr("10.1.2.9")}, Aliases: []string{"database"}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.NetworkConnect(ctx, "bridge", client.NetworkConnectOptions{
		Container:      "db",
		EndpointConfig: &network.EndpointSettings{Aliases: []string{"x"}},
	}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("alias on bridge: %v", err)
	}
	if _, err := cli.NetworkDisconnect(ctx, "app", client.NetworkDisconnectOptions{Container: "db", Force: true}); err != nil {
		t.Fatal(err)
	}
	calls := f.Calls()
	for _, want := range []string{
		"Connect db " + fakeID("app") + " ip=10.1.2.9 aliases=[database] links=[]",
		"Disconnect db " + fakeID("app") + " force=true",
	} {
		if !slices.Contains(calls, want) {
			t.Errorf("no %q in %q", want, calls)
		}
	}

	if _, err := cli.NetworkRemove(ctx, "app", client.NetworkRemoveOptions{}); !errdefs.IsPermissionDenied(err) {
		t.Errorf("remove in use: %v", err)
	}
	if _, err := cli.NetworkRemove(ctx, "bridge", client.NetworkRemoveOptions{}); !errdefs.IsPermissionDenied(err) {
		t.Errorf("remove bridge: %v", err)
	}
	if _, err := cli.NetworkCreate(ctx, "spare", client.NetworkCreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.NetworkRemove(ctx, "spare", client.NetworkRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.NetworkRemove(ctx, "spare", client.NetworkRemoveOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("remove twice: %v", err)
	}
	if _, err := cli.NetworkCreate(ctx, "idle", client.NetworkCreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pruned, err := cli.NetworkPrune(ctx, client.NetworkPruneOptions{})
	if err != nil || !slices.Equal(pruned.Report.NetworksDeleted, []string{"idle"}) {
		t.Errorf("prune = %+v, %v", pruned.Report, err)
	}
}
