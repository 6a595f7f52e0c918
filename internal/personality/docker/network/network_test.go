package network_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"

	"github.com/vchproject/vch/internal/portlayer"
)

// update rewrites the golden files: go test ./internal/personality/docker/network -run TestInspectGolden -update
var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// do sends one request; a non-empty body is sent as JSON.
func do(t *testing.T, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	var req *http.Request
	if body != "" {
		req = httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func filterQuery(f string) string { return "?filters=" + url.QueryEscape(f) }

// TestErrors checks each route's failures: status code and dockerd's
// text (dockerd 28.2 as read from its source, and 20.10 run here where the
// code path is the same).
func TestErrors(t *testing.T) {
	inUse := func(f *fakeNets) {
		f.CreateNetwork(t.Context(), portlayer.NetworkSpec{Name: "n1", Driver: "bridge"})
		f.attach("n1", "c1", "172.18.0.2/16")
	}
	custom := func(f *fakeNets) {
		f.CreateNetwork(t.Context(), portlayer.NetworkSpec{Name: "n1", Driver: "bridge", Subnet: netip.MustParsePrefix("10.1.0.0/16")})
	}
	failWith := func(op string, err error) func(*fakeNets) {
		return func(f *fakeNets) { f.fail[op] = err }
	}
	connErr := func(err error) func(*fakeNets) {
		return func(f *fakeNets) { custom(f); f.connErr = err }
	}
	tests := []struct {
		name         string
		setup        func(*fakeNets)
		method, path string
		body         string
		code         int
		msg          string
	}{
		// create
		{name: "create no name", method: "POST", path: "/networks/create", body: `{}`, code: 400, msg: "invalid name: name is empty"},
		{name: "create blank name", method: "POST", path: "/networks/create", body: `{"Name":"  "}`, code: 400, msg: "invalid name: name is empty"},
		{name: "create bridge", method: "POST", path: "/networks/create", body: `{"Name":"bridge"}`, code: 403, msg: "operation is not permitted on predefined bridge network "},
		{name: "create default", method: "POST", path: "/networks/create", body: `{"Name":"default"}`, code: 403, msg: "operation is not permitted on predefined default network "},
		{name: "create duplicate", setup: custom, method: "POST", path: "/networks/create", body: `{"Name":"n1"}`, code: 409, msg: "network with name n1 already exists"},
		{name: "create duplicate raced", setup: failWith("CreateNetwork", portlayer.Errorf(portlayer.ClassAlreadyExists, "n2")), method: "POST", path: "/networks/create", body: `{"Name":"n2"}`, code: 409, msg: "network with name n2 already exists"},
		{name: "create overlap", setup: failWith("CreateNetwork", portlayer.Errorf(portlayer.ClassConflict, "subnet overlaps bridge")), method: "POST", path: "/networks/create", body: `{"Name":"n2"}`, code: 403, msg: "Pool overlaps with other one on this address space"},
		{name: "create pools exhausted", setup: failWith("CreateNetwork", portlayer.Errorf(portlayer.ClassResourceExhausted, "all predefined address pools have been fully subnetted")), method: "POST", path: "/networks/create", body: `{"Name":"n2"}`, code: 400, msg: "all predefined address pools have been fully subnetted"},
		{name: "create port layer invalid", setup: failWith("CreateNetwork", portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid mtu 5")), method: "POST", path: "/networks/create", body: `{"Name":"n2"}`, code: 400, msg: "invalid mtu 5"},
		{name: "create port layer fault", setup: failWith("CreateNetwork", errBoom), method: "POST", path: "/networks/create", body: `{"Name":"n2"}`, code: 500, msg: "create network n2: boom"},
		{name: "create unknown driver", method: "POST", path: "/networks/create", body: `{"Name":"n2","Driver":"foo"}`, code: 404, msg: `plugin "foo" not found`},
		{name: "create macvlan", method: "POST", path: "/networks/create", body: `{"Name":"n2","Driver":"macvlan"}`, code: 404, msg: `plugin "macvlan" not found`},
		{name: "create null driver", method: "POST", path: "/networks/create", body: `{"Name":"n2","Driver":"null"}`, code: 403, msg: `only one instance of "null" network is allowed`},
		{name: "create ipam driver", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Driver":"foo"}}`, code: 404, msg: `plugin "foo" not found`},
		{name: "create bad subnet", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"foo"}]}}`, code: 400, msg: "invalid network config:\ninvalid subnet foo: invalid CIDR block notation"},
		{name: "create gateway without subnet", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Gateway":"10.1.0.1"}]}}`, code: 400, msg: "invalid network config:\ninvalid subnet : invalid CIDR block notation"},
		{name: "create host bits", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"10.1.2.0/16"}]}}`, code: 400, msg: "invalid network config:\ninvalid subnet 10.1.2.0/16: it should be 10.1.0.0/16"},
		{name: "create several problems", method: "POST", path: "/networks/create",
			body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"10.1.0.0/16","IPRange":"10.0.0.0/8","Gateway":"10.2.0.1"}]}}`, code: 400,
			msg: "invalid network config:\n* invalid ip-range 10.0.0.0/8: CIDR block is bigger than its parent subnet 10.1.0.0/16\n* invalid gateway 10.2.0.1: parent subnet 10.1.0.0/16 doesn't contain this address"},
		{name: "create ip-range outside", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"10.1.0.0/16","IPRange":"10.2.1.0/24"}]}}`, code: 400,
			msg: "invalid network config:\ninvalid ip-range 10.2.1.0/24: parent subnet 10.1.0.0/16 doesn't contain ip-range"},
		{name: "create bad gateway", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"10.1.0.0/16","Gateway":"x"}]}}`, code: 400,
			msg: "invalid network config:\ninvalid gateway x: invalid address"},
		{name: "create ipv6 subnet", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"fd00::/64"}]}}`, code: 400,
			msg: "IPv6 subnet fd00::/64: IPv6 is not supported by vch yet, networks are IPv4 only"},
		{name: "create ipv6", method: "POST", path: "/networks/create", body: `{"Name":"n2","EnableIPv6":true}`, code: 400, msg: "IPv6 is not supported by vch yet: networks are IPv4 only"},
		{name: "create ipv6 option", method: "POST", path: "/networks/create", body: `{"Name":"n2","Options":{"com.docker.network.enable_ipv6":"maybe"}}`, code: 400,
			msg: `driver-opt "com.docker.network.enable_ipv6" is not a valid bool`},
		{name: "create no ipv4", method: "POST", path: "/networks/create", body: `{"Name":"n2","EnableIPv4":false}`, code: 400, msg: "IPv4 cannot be disabled: vch networks are IPv4 only"},
		{name: "create two subnets", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"10.1.0.0/16"},{"Subnet":"10.2.0.0/16"}]}}`, code: 400,
			msg: "a vch network has one IPv4 subnet: got 2"},
		{name: "create aux", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Config":[{"Subnet":"10.1.0.0/16","AuxiliaryAddresses":{"a":"10.1.0.9"}}]}}`, code: 400,
			msg: "auxiliary addresses are not supported by vch"},
		{name: "create ipam options", method: "POST", path: "/networks/create", body: `{"Name":"n2","IPAM":{"Options":{"a":"b"}}}`, code: 400, msg: "IPAM driver options are not supported by vch"},
		{name: "create config only", method: "POST", path: "/networks/create", body: `{"Name":"n2","ConfigOnly":true}`, code: 400, msg: "config-only networks are not supported by vch"},
		{name: "create config from", method: "POST", path: "/networks/create", body: `{"Name":"n2","ConfigFrom":{"Network":"zz"}}`, code: 404, msg: `configuration network "zz" does not exist`},
		{name: "create swarm scope", method: "POST", path: "/networks/create", body: `{"Name":"n2","Scope":"swarm"}`, code: 403, msg: "cannot create a swarm scoped network when swarm is not active"},
		{name: "create ingress", method: "POST", path: "/networks/create", body: `{"Name":"n2","Ingress":true}`, code: 403, msg: "Ingress network can only be global scope network"},
		{name: "create bad json", method: "POST", path: "/networks/create", body: `{"Name":`, code: 400, msg: "invalid JSON: unexpected EOF"},

		// inspect
		{name: "inspect unknown", method: "GET", path: "/networks/nope", code: 404, msg: "network nope not found"},
		{name: "inspect bad verbose", method: "GET", path: "/networks/bridge?verbose=foo", code: 400, msg: `invalid value for verbose: foo: strconv.ParseBool: parsing "foo": invalid syntax`},
		{name: "inspect swarm scope", method: "GET", path: "/networks/bridge?scope=swarm", code: 404, msg: "network bridge not found"},
		{name: "inspect ambiguous", setup: failWith("InspectNetwork", portlayer.Errorf(portlayer.ClassInvalidArgument, "network 1 is ambiguous (2 matches found based on ID prefix)")),
			method: "GET", path: "/networks/1", code: 400, msg: "network 1 is ambiguous (2 matches found based on ID prefix)"},
		{name: "inspect fault", setup: failWith("InspectNetwork", errBoom), method: "GET", path: "/networks/bridge", code: 500, msg: "inspect network bridge: boom"},

		// list
		{name: "list bad filter", method: "GET", path: "/networks" + filterQuery(`{"foo":{"1":true}}`), code: 400, msg: "invalid filter 'foo'"},
		{name: "list bad type", method: "GET", path: "/networks" + filterQuery(`{"type":{"foo":true}}`), code: 400, msg: "invalid filter: 'type'='foo'"},
		{name: "list bad dangling", method: "GET", path: "/networks" + filterQuery(`{"dangling":{"x":true}}`), code: 400,
			msg: `invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")`},
		{name: "list two danglings", method: "GET", path: "/networks" + filterQuery(`{"dangling":{"1":true,"0":true}}`), code: 400, msg: `got more than one value for filter key "dangling"`},
		{name: "list fault", setup: failWith("ListNetworks", errBoom), method: "GET", path: "/networks", code: 500, msg: "list networks: boom"},

		// remove
		{name: "remove bridge", method: "DELETE", path: "/networks/bridge", code: 403, msg: "bridge is a pre-defined network and cannot be removed"},
		{name: "remove none by id", method: "DELETE", path: "/networks/" + fakeID("none"), code: 403, msg: "none is a pre-defined network and cannot be removed"},
		{name: "remove unknown", method: "DELETE", path: "/networks/nope", code: 404, msg: "network nope not found"},
		{name: "remove in use", setup: inUse, method: "DELETE", path: "/networks/n1", code: 403,
			msg: fmt.Sprintf(`error while removing network: network n1 has active endpoints (name:"c1" id:"%s")`, fakeID("ep-c1-n1")[:12])},
		{name: "remove raced", setup: func(f *fakeNets) {
			custom(f)
			f.fail["RemoveNetwork"] = portlayer.Errorf(portlayer.ClassConflict, "n1 in use")
		},
			method: "DELETE", path: "/networks/n1", code: 403, msg: "error while removing network: n1 in use"},
		{name: "remove fault", setup: func(f *fakeNets) { custom(f); f.fail["RemoveNetwork"] = errBoom }, method: "DELETE", path: "/networks/n1", code: 500, msg: "remove network n1: boom"},

		// prune
		{name: "prune bad filter", method: "POST", path: "/networks/prune" + filterQuery(`{"name":{"x":true}}`), code: 400, msg: "invalid filter 'name'"},
		{name: "prune bad until", method: "POST", path: "/networks/prune" + filterQuery(`{"until":{"xx":true}}`), code: 400, msg: `failed to parse value as time or duration: "xx"`},
		{name: "prune two untils", method: "POST", path: "/networks/prune" + filterQuery(`{"until":{"1h":true,"2h":true}}`), code: 400, msg: "more than one until filter specified"},

		// connect
		{name: "connect no container", setup: custom, method: "POST", path: "/networks/n1/connect", body: `{}`, code: 400, msg: `invalid name or ID supplied: ""`},
		{name: "connect unknown network", method: "POST", path: "/networks/nope/connect", body: `{"Container":"c1"}`, code: 404, msg: "network nope not found"},
		{name: "connect ip on bridge", method: "POST", path: "/networks/bridge/connect", body: `{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"172.17.0.9"}}}`, code: 400,
			msg: "invalid endpoint settings:\nuser specified IP address is supported on user defined networks only"},
		{name: "connect ip and alias on bridge", method: "POST", path: "/networks/bridge/connect", body: `{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"172.17.0.9"},"Aliases":["a"]}}`, code: 400,
			msg: "invalid endpoint settings:\n* user specified IP address is supported on user defined networks only\n* network-scoped alias is supported only for containers in user defined networks"},
		{name: "connect bad ip", setup: custom, method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"foo"}}}`, code: 400,
			msg: "invalid endpoint settings:\ninvalid IPv4 address: foo"},
		{name: "connect ip outside", setup: custom, method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.9.0.5"}}}`, code: 400,
			msg: "invalid endpoint settings:\nno configured subnet or ip-range contain the IP address 10.9.0.5"},
		{name: "connect ipv6", setup: custom, method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv6Address":"fd00::5"}}}`, code: 400,
			msg: "invalid endpoint settings:\nuser specified IP address is supported only when connecting to networks with user configured subnets"},
		{name: "connect bad mac", setup: custom, method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1","EndpointConfig":{"MacAddress":"zz"}}`, code: 400, msg: "invalid MAC address zz"},
		{name: "connect mac", setup: custom, method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1","EndpointConfig":{"MacAddress":"02:42:0a:01:00:05"}}`, code: 400,
			msg: "a fixed MAC address is not supported by vch: the MAC is derived from the IP address"},
		{name: "connect driver opts", setup: custom, method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1","EndpointConfig":{"DriverOpts":{"b":"1","a":"2"}}}`, code: 400,
			msg: "endpoint driver options are not supported by vch: got a, b"},
		{name: "connect unknown container", setup: connErr(portlayer.NoSuchContainer("c9")),
			method: "POST", path: "/networks/n1/connect", body: `{"Container":"c9"}`, code: 404, msg: "No such container: c9"},
		{name: "connect twice", setup: connErr(portlayer.EndpointError(portlayer.ReasonAttached, "c1", "n1")),
			method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1"}`, code: 403, msg: "endpoint with name c1 already exists in network n1"},
		{name: "connect none", setup: connErr(portlayer.Errorf(portlayer.ClassInvalidArgument, "container cannot be connected to multiple networks with one of the networks in private (none) mode")),
			method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1"}`, code: 400, msg: "container cannot be connected to multiple networks with one of the networks in private (none) mode"},
		{name: "connect fault", setup: connErr(errBoom), method: "POST", path: "/networks/n1/connect", body: `{"Container":"c1"}`, code: 500, msg: "connect c1 to network n1: boom"},

		// disconnect
		{name: "disconnect no container", setup: custom, method: "POST", path: "/networks/n1/disconnect", body: `{}`, code: 400, msg: `invalid name or ID supplied: ""`},
		{name: "disconnect unknown network", setup: connErr(portlayer.NoSuchNetwork("nope")),
			method: "POST", path: "/networks/nope/disconnect", body: `{"Container":"c1"}`, code: 404, msg: "network nope not found"},
		{name: "disconnect not attached", setup: connErr(portlayer.EndpointError(portlayer.ReasonNotAttached, "0123", "n1")),
			method: "POST", path: "/networks/n1/disconnect", body: `{"Container":"c1"}`, code: 404, msg: "container 0123 is not connected to network n1"},
		{name: "disconnect conflict", setup: connErr(portlayer.Errorf(portlayer.ClassConflict, "Container c1 is marked for removal")),
			method: "POST", path: "/networks/n1/disconnect", body: `{"Container":"c1"}`, code: 409, msg: "Container c1 is marked for removal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, f := newRouter(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			rec := do(t, h, tt.method, tt.path, tt.body)
			var got struct{ Message string }
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if rec.Code != tt.code || got.Message != tt.msg {
				t.Errorf("got %d %q, want %d %q", rec.Code, got.Message, tt.code, tt.msg)
			}
		})
	}
}

// TestNoConnector: without a NetworkConnector, connect and disconnect
// answer 501 and the other routes still work.
func TestNoConnector(t *testing.T) {
	f := newFake()
	h := handler(t, newRouterWith(f, nil))
	for _, p := range []string{"/networks/bridge/connect", "/networks/bridge/disconnect"} {
		if rec := do(t, h, "POST", p, `{"Container":"c1"}`); rec.Code != 501 {
			t.Errorf("%s: %d %s", p, rec.Code, rec.Body)
		}
	}
	for _, p := range []string{"/networks", "/networks/", "/v1.41/networks/"} {
		if rec := do(t, h, "GET", p, ""); rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), "[") {
			t.Errorf("list %s: %d %s", p, rec.Code, rec.Body)
		}
	}
}

// golden compares got with testdata/<test name>.golden, or rewrites the
// file under -update.
func golden(t *testing.T, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "_")+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update if the change is intended)\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// indent re-indents a JSON body as `docker network inspect` prints it.
func indent(t *testing.T, body []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, body, "", "    "); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return buf.Bytes()
}

// TestInspectGolden renders the predefined networks and a custom one with
// a container, and checks the JSON against the golden files (the shapes of
// dockerd 28's `docker network inspect`).
func TestInspectGolden(t *testing.T) {
	h, f := newRouter(t)
	rec := do(t, h, "POST", "/networks/create", `{"Name":"app","Internal":true,"Labels":{"com.example":"x"},"Options":{"com.docker.network.driver.mtu":"1400"},
		"IPAM":{"Driver":"default","Config":[{"Subnet":"10.1.0.0/16","IPRange":"10.1.2.0/24","Gateway":"10.1.0.254"}]}}`)
	if rec.Code != 201 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	f.attach("bridge", "web", "172.17.0.2/16")
	f.attach("app", "web", "10.1.2.1/16")
	f.attach("none", "lone", "")
	for _, name := range []string{"bridge", "none", "app"} {
		t.Run(name, func(t *testing.T) {
			rec := do(t, h, "GET", "/networks/"+name, "")
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			golden(t, indent(t, rec.Body.Bytes()))
		})
	}
}

// TestList checks the list's shape: Containers is {} from API 1.28 on and
// filled before; every network is there, predefined ones included.
func TestList(t *testing.T) {
	h, f := newRouter(t)
	f.attach("bridge", "web", "172.17.0.2/16")
	for _, tt := range []struct {
		path       string
		containers int
	}{{"/networks", 0}, {"/v1.50/networks", 0}, {"/v1.28/networks", 0}, {"/v1.27/networks", 1}} {
		rec := do(t, h, "GET", tt.path, "")
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", tt.path, rec.Code, rec.Body)
		}
		var raw []map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
			t.Fatal(err)
		}
		if len(raw) != 2 {
			t.Fatalf("%s: %d networks", tt.path, len(raw))
		}
		var ctrs map[string]network.EndpointResource
		if err := json.Unmarshal(raw[0]["Containers"], &ctrs); err != nil || ctrs == nil || len(ctrs) != tt.containers {
			t.Errorf("%s: bridge Containers = %s", tt.path, raw[0]["Containers"])
		}
		if string(raw[1]["Driver"]) != `"null"` || string(raw[1]["Labels"]) != "{}" {
			t.Errorf("%s: none = %s %s", tt.path, raw[1]["Driver"], raw[1]["Labels"])
		}
	}
	rec := do(t, h, "GET", "/networks"+filterQuery(`{"name":{"nothing":true}}`), "")
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Errorf("empty list = %d %s", rec.Code, rec.Body)
	}
}

// TestListFilters checks which networks each filter keeps.
func TestListFilters(t *testing.T) {
	h, f := newRouter(t)
	ctx := t.Context()
	f.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "front", Driver: "bridge", Labels: map[string]string{"tier": "web", "env": "prod"}})
	f.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "back", Driver: "bridge", Labels: map[string]string{"tier": "db"}})
	f.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "spare", Driver: "bridge"})
	f.attach("front", "web", "172.18.0.2/16")
	tests := []struct {
		filters string
		want    []string
	}{
		{`{}`, []string{"bridge", "none", "front", "back", "spare"}},
		{`{"name":{"front":true}}`, []string{"front"}},
		{`{"name":{"^b":true}}`, []string{"bridge", "back"}},
		{`{"name":{"ar":true,"on":true}}`, []string{"none", "front", "spare"}},
		{`{"name":["ack"]}`, []string{"back"}},
		{`{"id":{"` + fakeID("back")[:6] + `":true}}`, []string{"back"}},
		{`{"driver":{"null":true}}`, []string{"none"}},
		{`{"driver":{"bridge":true}}`, []string{"bridge", "front", "back", "spare"}},
		{`{"scope":{"local":true}}`, []string{"bridge", "none", "front", "back", "spare"}},
		{`{"scope":{"swarm":true}}`, nil},
		{`{"type":{"builtin":true}}`, []string{"bridge", "none"}},
		{`{"type":{"custom":true}}`, []string{"front", "back", "spare"}},
		{`{"type":{"custom":true,"builtin":true}}`, []string{"bridge", "none", "front", "back", "spare"}},
		{`{"label":{"tier":true}}`, []string{"front", "back"}},
		{`{"label":{"tier=web":true}}`, []string{"front"}},
		{`{"label":{"tier":true,"env=prod":true}}`, []string{"front"}},
		{`{"label":{"tier=db":true,"env=prod":true}}`, nil},
		{`{"dangling":{"true":true}}`, []string{"back", "spare"}},
		{`{"dangling":{"1":true}}`, []string{"back", "spare"}},
		{`{"dangling":{"false":true}}`, []string{"bridge", "none", "front"}},
		{`{"dangling":{"true":true},"label":{"tier":true}}`, []string{"back"}},
	}
	for _, tt := range tests {
		t.Run(tt.filters, func(t *testing.T) {
			rec := do(t, h, "GET", "/networks"+filterQuery(tt.filters), "")
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			var got []network.Inspect
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, n := range got {
				names = append(names, n.Name)
			}
			if !slices.Equal(names, tt.want) {
				t.Errorf("got %v, want %v", names, tt.want)
			}
		})
	}
}

// TestCreate checks what reaches the port layer and the response's shape.
func TestCreate(t *testing.T) {
	h, f := newRouter(t)
	rec := do(t, h, "POST", "/networks/create", `{"Name":"app","Driver":"bridge","CheckDuplicate":true,"Internal":true,"Attachable":true,
		"Labels":{"a":"b"},"Options":{"com.docker.network.bridge.enable_icc":"false"},
		"IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.1.0.0/16","IPRange":"10.1.2.0/24","Gateway":"10.1.0.254"}]}}`)
	if rec.Code != 201 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	want := fmt.Sprintf(`{"Id":"%s","Warning":""}`, fakeID("app"))
	if got := strings.TrimSpace(rec.Body.String()); got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	n, err := f.InspectNetwork(t.Context(), "app")
	if err != nil {
		t.Fatal(err)
	}
	if n.Driver != "bridge" || n.Subnet.String() != "10.1.0.0/16" || n.IPRange.String() != "10.1.2.0/24" || n.Gateway.String() != "10.1.0.254" ||
		!n.Internal || n.Labels["a"] != "b" || n.Options["com.docker.network.bridge.enable_icc"] != "false" {
		t.Errorf("network = %+v", n)
	}

	// Defaults: no IPAM, no driver. EnableIPv4 false is ignored before
	// API 1.48, and the enable_ipv6 option may say false.
	rec = do(t, h, "POST", "/v1.47/networks/create", `{"Name":"plain","EnableIPv4":false,"Options":{"com.docker.network.enable_ipv6":"false"}}`)
	if rec.Code != 201 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	n, _ = f.InspectNetwork(t.Context(), "plain")
	if n.Driver != "bridge" || n.Subnet.String() != "172.18.0.0/16" {
		t.Errorf("network = %+v", n)
	}
	rec = do(t, h, "POST", "/networks/create", `{"Name":"dual","EnableIPv4":true,"EnableIPv6":false}`)
	if rec.Code != 201 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

// TestRemove removes a custom network by ID prefix.
func TestRemove(t *testing.T) {
	h, f := newRouter(t)
	f.CreateNetwork(t.Context(), portlayer.NetworkSpec{Name: "app", Driver: "bridge"})
	rec := do(t, h, "DELETE", "/networks/"+fakeID("app")[:10], "")
	if rec.Code != 204 || rec.Body.Len() != 0 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if _, err := f.InspectNetwork(t.Context(), "app"); !errdefs.IsNotFound(err) {
		t.Errorf("app still there: %v", err)
	}
	if c := f.Calls(); !slices.Contains(c, "RemoveNetwork "+fakeID("app")) {
		t.Errorf("calls = %v", c)
	}
}

// TestPrune removes the custom networks without containers that match the
// filters, and reports null when nothing goes.
func TestPrune(t *testing.T) {
	ctx := t.Context()
	setup := func() (http.Handler, *fakeNets) {
		h, f := newRouter(t)
		f.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "used", Driver: "bridge"})
		f.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "keep", Driver: "bridge", Labels: map[string]string{"keep": "yes"}})
		f.CreateNetwork(ctx, portlayer.NetworkSpec{Name: "idle", Driver: "bridge", Labels: map[string]string{"env": "test"}})
		f.attach("used", "web", "172.18.0.2/16")
		return h, f
	}
	tests := []struct {
		filters string
		want    string
	}{
		{``, `{"NetworksDeleted":["keep","idle"]}`},
		{`{"label":{"env=test":true}}`, `{"NetworksDeleted":["idle"]}`},
		{`{"label!":{"keep":true}}`, `{"NetworksDeleted":["idle"]}`},
		{`{"label!":{"keep":true,"other":true}}`, `{"NetworksDeleted":["keep","idle"]}`},
		{`{"label":{"nothing":true}}`, `{"NetworksDeleted":null}`},
		{`{"until":{"2025-01-02T15:00:00Z":true}}`, `{"NetworksDeleted":null}`},
		{`{"until":{"2025-01-02T15:05:00Z":true}}`, `{"NetworksDeleted":["keep","idle"]}`},
		{`{"until":{"1h":true}}`, `{"NetworksDeleted":["keep","idle"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.filters, func(t *testing.T) {
			h, f := setup()
			path := "/networks/prune"
			if tt.filters != "" {
				path += filterQuery(tt.filters)
			}
			rec := do(t, h, "POST", path, "")
			if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != tt.want {
				t.Errorf("got %d %s, want %s", rec.Code, rec.Body, tt.want)
			}
			for _, c := range f.Calls() {
				if c == "RemoveNetwork "+fakeID("used") || c == "RemoveNetwork "+fakeID("bridge") || c == "RemoveNetwork "+fakeID("none") {
					t.Errorf("unexpected %s", c)
				}
			}
		})
	}
	// A network that cannot go is skipped, the others are still removed.
	h, f := setup()
	f.fail["RemoveNetwork"] = portlayer.Errorf(portlayer.ClassConflict, "keep in use")
	if rec := do(t, h, "POST", "/networks/prune", ""); strings.TrimSpace(rec.Body.String()) != `{"NetworksDeleted":["idle"]}` {
		t.Errorf("got %d %s", rec.Code, rec.Body)
	}
}

// TestConnect checks the spec handed to the connector and the empty 200.
func TestConnect(t *testing.T) {
	h, f := newRouter(t)
	f.CreateNetwork(t.Context(), portlayer.NetworkSpec{Name: "app", Driver: "bridge", Subnet: netip.MustParsePrefix("10.1.0.0/16")})
	id := fakeID("app")
	tests := []struct {
		path, body, want string
	}{
		{"/networks/app/connect", `{"Container":"web"}`, "Connect web " + id + " ip=invalid IP aliases=[] links=[]"},
		{"/networks/" + id[:8] + "/connect", `{"Container":"web","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.1.0.7"},"Aliases":["db","cache"],"Links":["other:o"],
			"NetworkID":"x","Gateway":"","IPAddress":"","MacAddress":"","IPPrefixLen":0,"DNSNames":null}}`,
			"Connect web " + id + " ip=10.1.0.7 aliases=[db cache] links=[other:o]"},
		{"/networks/bridge/connect", `{"Container":"web","EndpointConfig":{"IPAMConfig":{}}}`, "Connect web " + fakeID("bridge") + " ip=invalid IP aliases=[] links=[]"},
		{"/networks/app/disconnect", `{"Container":"web"}`, "Disconnect web " + id + " force=false"},
		{"/networks/app/disconnect", `{"Container":"web","Force":true}`, "Disconnect web " + id + " force=true"},
		{"/networks/gone/disconnect", `{"Container":"web","Force":true}`, "Disconnect web gone force=true"},
		// A stopped container drops a removed network without force too.
		{"/networks/gone/disconnect", `{"Container":"web"}`, "Disconnect web gone force=false"},
	}
	for _, tt := range tests {
		t.Run(tt.path+tt.body, func(t *testing.T) {
			n := len(f.Calls())
			rec := do(t, h, "POST", tt.path, tt.body)
			if rec.Code != 200 || rec.Body.Len() != 0 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			calls := f.Calls()[n:]
			if !slices.Contains(calls, tt.want) {
				t.Errorf("calls = %q, want %q", calls, tt.want)
			}
		})
	}
}
