package computetest

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// NetworkTarget is the port layer under the network contract: the
// networks, containers to attach to them (and pause), and the
// attachments.
type NetworkTarget interface {
	portlayer.Compute
	portlayer.Pauser
	portlayer.Networks
	portlayer.NetworkConnector
}

// RunNetworks runs the network contract (portlayer.Networks and
// portlayer.NetworkConnector) on a fresh target from newTarget for each
// case; image is an image ID its containers can use. Each target starts
// with the predefined networks only (bridge and none), so the first
// network created without a subnet gets the first pool, 172.18.0.0/16.
// A running container's connect needs the hypervisor to hold its VM's
// NIC devices open, as a VMM does.
func RunNetworks(t *testing.T, image string, newTarget func(t *testing.T) NetworkTarget) {
	cases := []struct {
		name string
		fn   func(t *testing.T, c NetworkTarget, image string)
	}{
		{"CreateInspectList", networksCreateInspectList},
		{"Refusals", networksRefusals},
		{"ConnectStopped", networksConnectStopped},
		{"ConnectRunning", networksConnectRunning},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newTarget(t), image) })
	}
}

func createNetwork(t *testing.T, c portlayer.Networks, spec portlayer.NetworkSpec) portlayer.Network {
	t.Helper()
	n, err := c.CreateNetwork(t.Context(), spec)
	if err != nil {
		t.Fatalf("CreateNetwork(%s): %v", spec.Name, err)
	}
	return n
}

// endpointOf is container id's endpoint in n, if any.
func endpointOf(n portlayer.Network, id string) (portlayer.Endpoint, bool) {
	i := slices.IndexFunc(n.Endpoints, func(ep portlayer.Endpoint) bool { return ep.ContainerID == id })
	if i < 0 {
		return portlayer.Endpoint{}, false
	}
	return n.Endpoints[i], true
}

func inspectNetwork(t *testing.T, c portlayer.Networks, ref string) portlayer.Network {
	t.Helper()
	n, err := c.InspectNetwork(t.Context(), ref)
	if err != nil {
		t.Fatalf("InspectNetwork(%s): %v", ref, err)
	}
	return n
}

func inspect(t *testing.T, c portlayer.Compute, ref string) portlayer.Container {
	t.Helper()
	ctr, err := c.Inspect(t.Context(), ref)
	if err != nil {
		t.Fatalf("Inspect(%s): %v", ref, err)
	}
	return ctr
}

// networksCreateInspectList: the predefined networks, a network created
// on the next free pool and one with its own addressing, found by name,
// ID and ID prefix, and listed oldest first.
func networksCreateInspectList(t *testing.T, c NetworkTarget, _ string) {
	ctx := t.Context()
	before, err := c.ListNetworks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ name, driver string }{{"bridge", "bridge"}, {"none", "null"}} {
		i := slices.IndexFunc(before, func(n portlayer.Network) bool { return n.Name == want.name })
		if i < 0 || before[i].Driver != want.driver || !before[i].Predefined || len(before[i].ID) != 64 {
			t.Errorf("predefined network %s: %+v in %d networks", want.name, before, len(before))
		}
	}
	front := createNetwork(t, c, portlayer.NetworkSpec{Name: "front", Labels: map[string]string{"k": "v"}, Options: map[string]string{"o": "1"}})
	if len(front.ID) != 64 || front.Name != "front" || front.Driver != "bridge" || front.Predefined || front.Created.IsZero() ||
		front.Subnet != netip.MustParsePrefix("172.18.0.0/16") || front.Gateway != netip.MustParseAddr("172.18.0.1") ||
		front.IPRange.IsValid() || front.Internal || front.Labels["k"] != "v" || front.Options["o"] != "1" || len(front.Endpoints) != 0 {
		t.Errorf("created %+v; want front on 172.18.0.0/16 via 172.18.0.1 with its label and option", front)
	}
	spec := portlayer.NetworkSpec{Name: "back", Subnet: netip.MustParsePrefix("10.77.0.0/24"), Gateway: netip.MustParseAddr("10.77.0.254"),
		IPRange: netip.MustParsePrefix("10.77.0.128/25"), Internal: true}
	back := createNetwork(t, c, spec)
	if back.Subnet != spec.Subnet || back.Gateway != spec.Gateway || back.IPRange != spec.IPRange || !back.Internal {
		t.Errorf("created %+v; want the spec's addressing %+v", back, spec)
	}
	for _, ref := range []string{"front", front.ID, front.ID[:12]} {
		if got, err := c.InspectNetwork(ctx, ref); err != nil || got.ID != front.ID || got.Subnet != front.Subnet || got.Labels["k"] != "v" {
			t.Errorf("InspectNetwork(%q) = %+v, %v; want front", ref, got, err)
		}
	}
	_, err = c.InspectNetwork(ctx, "nosuch")
	wantError(t, "InspectNetwork(nosuch)", err, errdefs.IsNotFound, portlayer.KindNetwork, "nosuch", "")
	all, err := c.ListNetworks(ctx)
	if err != nil || len(all) != len(before)+2 || all[len(all)-2].ID != front.ID || all[len(all)-1].ID != back.ID {
		t.Errorf("ListNetworks = %d networks, %v; want the %d predefined, then front and back", len(all), err, len(before))
	}
}

// networksRefusals: a name in use, an overlapping subnet, the removal of
// a predefined or unknown network; a removed network is gone.
func networksRefusals(t *testing.T, c NetworkTarget, _ string) {
	ctx := t.Context()
	front := createNetwork(t, c, portlayer.NetworkSpec{Name: "front"})
	_, err := c.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "front"})
	wantError(t, "CreateNetwork(front) twice", err, errdefs.IsAlreadyExists, portlayer.KindNetwork, front.ID, portlayer.ReasonNameInUse)
	if pe := portlayer.AsError(err); pe != nil && pe.Name != "front" {
		t.Errorf("name_in_use names %q, want front", pe.Name)
	}
	inner := netip.PrefixFrom(front.Subnet.Addr(), front.Subnet.Bits()+8)
	_, err = c.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "over", Subnet: inner})
	wantError(t, "CreateNetwork over front's subnet", err, errdefs.IsConflict, portlayer.KindNetwork, front.ID, portlayer.ReasonOverlaps)
	wantField(t, "CreateNetwork over front's subnet", err, "Subnet", inner.String())
	if _, err := c.InspectNetwork(ctx, "over"); !errdefs.IsNotFound(err) {
		t.Errorf("InspectNetwork(over) after the refusal: %v", err)
	}
	for _, name := range []string{"bridge", "none"} {
		n := inspectNetwork(t, c, name)
		err := c.RemoveNetwork(ctx, name)
		wantError(t, "RemoveNetwork("+name+")", err, errdefs.IsPermissionDenied, portlayer.KindNetwork, n.ID, portlayer.ReasonPredefined)
	}
	err = c.RemoveNetwork(ctx, "nosuch")
	wantError(t, "RemoveNetwork(nosuch)", err, errdefs.IsNotFound, portlayer.KindNetwork, "nosuch", "")
	if err := c.RemoveNetwork(ctx, front.ID[:12]); err != nil {
		t.Fatalf("RemoveNetwork by ID prefix: %v", err)
	}
	for _, ref := range []string{"front", front.ID} {
		_, err := c.InspectNetwork(ctx, ref)
		wantError(t, "InspectNetwork("+ref+") after the removal", err, errdefs.IsNotFound, portlayer.KindNetwork, ref, "")
	}
	// Its name and subnet are free again.
	if again := createNetwork(t, c, portlayer.NetworkSpec{Name: "front"}); again.ID == front.ID || again.Subnet != front.Subnet {
		t.Errorf("front again = %+v; want a new ID on the freed subnet %s", again, front.Subnet)
	}
}

// networksConnectStopped: a created container's connect is recorded and
// joined at its start; the attachment refusals (already on it, on
// "none", not on it, unknown network or container, paused); a network
// in use cannot be removed; a running container's disconnect.
func networksConnectStopped(t *testing.T, c NetworkTarget, image string) {
	ctx := t.Context()
	front := createNetwork(t, c, portlayer.NetworkSpec{Name: "front"})
	a := create(t, c, portlayer.ContainerSpec{Name: "web", Image: image, Args: []string{"sleep", "60s"}})
	if err := c.Connect(ctx, "web", portlayer.EndpointSpec{Network: front.ID[:12]}); err != nil {
		t.Fatalf("Connect of a created container: %v", err)
	}
	if got := inspect(t, c, "web"); len(got.Spec.Networks) != 1 || got.Spec.Networks[0].Network != "front" || len(got.Endpoints) != 0 {
		t.Errorf("the created container after the connect: networks %+v endpoints %+v; want front recorded, no endpoint", got.Spec.Networks, got.Endpoints)
	}
	if n := inspectNetwork(t, c, "front"); len(n.Endpoints) != 0 {
		t.Errorf("front's endpoints before the start: %+v", n.Endpoints)
	}
	err := c.Connect(ctx, "web", portlayer.EndpointSpec{Network: front.ID})
	wantError(t, "Connect twice", err, errdefs.IsConflict, portlayer.KindEndpoint, "front", portlayer.ReasonAttached)
	wantName(t, "Connect twice", err, "web")
	err = c.Connect(ctx, "web", portlayer.EndpointSpec{Network: "none"})
	wantError(t, "Connect to none", err, errdefs.IsConflict, portlayer.KindEndpoint, "none", portlayer.ReasonNoneNetwork)
	wantName(t, "Connect to none", err, "web")
	err = c.Connect(ctx, "web", portlayer.EndpointSpec{Network: "nosuch"})
	wantError(t, "Connect to nosuch", err, errdefs.IsNotFound, portlayer.KindNetwork, "nosuch", "")
	err = c.Connect(ctx, "nosuch", portlayer.EndpointSpec{Network: "front"})
	wantError(t, "Connect(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")
	err = c.Disconnect(ctx, "web", "bridge", false)
	wantError(t, "Disconnect from a network it is not on", err, errdefs.IsNotFound, portlayer.KindEndpoint, "bridge", portlayer.ReasonNotAttached)
	wantName(t, "Disconnect from a network it is not on", err, a.ID)
	err = c.Disconnect(ctx, "nosuch", "front", false)
	wantError(t, "Disconnect(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")

	if err := c.Start(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	ep, ok := endpointOf(inspectNetwork(t, c, "front"), a.ID)
	if !ok || ep.NetworkID != front.ID || ep.NetworkName != "front" || ep.ContainerName != "web" || !front.Subnet.Contains(ep.Address.Addr()) ||
		ep.Address.Bits() != front.Subnet.Bits() || ep.Gateway != front.Gateway || len(ep.ID) != 64 || ep.MAC == "" {
		t.Errorf("front's endpoint for web after the start: %+v, %v; want one on %s", ep, ok, front.Subnet)
	}
	if got := inspect(t, c, "web"); len(got.Endpoints) != 1 || got.Endpoints[0].ID != ep.ID || got.Endpoints[0].Address != ep.Address {
		t.Errorf("web's endpoints %+v; want front's %+v", got.Endpoints, ep)
	}
	err = c.RemoveNetwork(ctx, "front")
	wantError(t, "RemoveNetwork of a network in use", err, errdefs.IsPermissionDenied, portlayer.KindNetwork, front.ID, portlayer.ReasonInUse)
	if pe := portlayer.AsError(err); pe != nil && !slices.Equal(pe.Containers, []string{a.ID}) {
		t.Errorf("in_use names containers %v, want [%s]", pe.Containers, a.ID)
	}
	if err := c.Pause(ctx, "web"); err != nil && !errdefs.IsNotImplemented(err) {
		t.Fatal(err)
	} else if err == nil {
		err = c.Connect(ctx, "web", portlayer.EndpointSpec{Network: "bridge"})
		wantError(t, "Connect of a paused container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonPaused)
		wantOp(t, "Connect of a paused container", err, "connect")
		err = c.Disconnect(ctx, "web", "front", false)
		wantError(t, "Disconnect of a paused container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonPaused)
		wantOp(t, "Disconnect of a paused container", err, "disconnect")
		if err := c.Unpause(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Disconnect(ctx, "web", "front", false); err != nil {
		t.Fatalf("Disconnect of a running container: %v", err)
	}
	if n := inspectNetwork(t, c, "front"); len(n.Endpoints) != 0 {
		t.Errorf("front's endpoints after the disconnect: %+v", n.Endpoints)
	}
	if got := inspect(t, c, "web"); len(got.Endpoints) != 0 || len(got.Spec.Networks) != 0 || got.State.Status != portlayer.StatusRunning {
		t.Errorf("web after the disconnect: endpoints %+v networks %+v state %s; want none, running", got.Endpoints, got.Spec.Networks, got.State.Status)
	}
	if err := c.RemoveNetwork(ctx, "front"); err != nil {
		t.Errorf("RemoveNetwork after the disconnect: %v", err)
	}
}

// networksConnectRunning: a running container joins a network at once
// (on a spare NIC) with its aliases, and leaves it at once.
func networksConnectRunning(t *testing.T, c NetworkTarget, image string) {
	ctx := t.Context()
	a := create(t, c, portlayer.ContainerSpec{Name: "app", Image: image, Args: []string{"sleep", "60s"},
		Networks: []portlayer.EndpointSpec{{Network: "bridge"}}})
	if err := c.Start(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	bridge, ok := endpointOf(inspectNetwork(t, c, "bridge"), a.ID)
	if !ok {
		t.Fatalf("app is not on bridge after its start")
	}
	back := createNetwork(t, c, portlayer.NetworkSpec{Name: "back", Subnet: netip.MustParsePrefix("10.77.0.0/24")})
	if _, ok := endpointOf(back, a.ID); ok {
		t.Errorf("a new network has app on it: %+v", back.Endpoints)
	}
	static := netip.MustParseAddr("10.77.0.9")
	if err := c.Connect(ctx, "app", portlayer.EndpointSpec{Network: "back", IPv4: static, Aliases: []string{"db"}}); err != nil {
		t.Fatalf("Connect of a running container: %v", err)
	}
	ep, ok := endpointOf(inspectNetwork(t, c, "back"), a.ID)
	if !ok || ep.Address != netip.PrefixFrom(static, 24) || !slices.Equal(ep.Aliases, []string{"db"}) ||
		!slices.Contains(ep.DNSNames, "app") || !slices.Contains(ep.DNSNames, "db") || !slices.Contains(ep.DNSNames, a.ID[:12]) {
		t.Errorf("back's endpoint for app: %+v, %v; want 10.77.0.9/24 with alias db", ep, ok)
	}
	got := inspect(t, c, "app")
	if len(got.Endpoints) != 2 || got.Endpoints[0].ID != bridge.ID || got.Endpoints[1].ID != ep.ID || len(got.Spec.Networks) != 2 {
		t.Errorf("app's endpoints %+v; want bridge's then back's", got.Endpoints)
	}
	err := c.Connect(ctx, "app", portlayer.EndpointSpec{Network: "back"})
	wantError(t, "Connect of a running container twice", err, errdefs.IsConflict, portlayer.KindEndpoint, "back", portlayer.ReasonAttached)
	if err := c.Disconnect(ctx, "app", "back", false); err != nil {
		t.Fatalf("Disconnect of a running container: %v", err)
	}
	if _, ok := endpointOf(inspectNetwork(t, c, "back"), a.ID); ok {
		t.Error("app is still on back after the disconnect")
	}
	if got := inspect(t, c, "app"); len(got.Endpoints) != 1 || got.Endpoints[0].ID != bridge.ID {
		t.Errorf("app's endpoints after the disconnect: %+v; want bridge's alone", got.Endpoints)
	}
	// The address is free again.
	if err := c.Connect(ctx, "app", portlayer.EndpointSpec{Network: "back", IPv4: static}); err != nil {
		t.Errorf("Connect again with the freed address: %v", err)
	}
}

// wantName checks the name a typed error names (Error.Name).
func wantName(t *testing.T, what string, err error, name string) {
	t.Helper()
	if pe := portlayer.AsError(err); pe == nil || pe.Name != name {
		t.Errorf("%s: err = %v (%+v); want name %q", what, err, pe, name)
	}
}
