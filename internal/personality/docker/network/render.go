package network

import (
	"maps"
	"net"
	"time"

	"github.com/moby/moby/api/types/network"

	"github.com/vchproject/vch/internal/portlayer"
)

// Docker's names and values for what vch renders but does not vary.
const (
	// scopeLocal is the only scope: vch has no swarm.
	scopeLocal = "local"
	// driverBridge is the only driver networks can be created with.
	driverBridge = "bridge"
	// driverNull is the "none" network's driver.
	driverNull = "null"
	// ipamDefault is dockerd's built-in IPAM driver, the only one.
	ipamDefault = "default"
	// defaultBridgeName is what dockerd names its default bridge; shown when
	// the port layer reports no bridge name.
	defaultBridgeName = "docker0"
)

// defaultBridgeOptions are the driver options dockerd 28 shows for its
// default "bridge" network (docker network inspect bridge), with the bridge
// name filled in.
func defaultBridgeOptions(bridge string) map[string]string {
	if bridge == "" {
		bridge = defaultBridgeName
	}
	return map[string]string{
		"com.docker.network.bridge.default_bridge":       "true",
		"com.docker.network.bridge.enable_icc":           "true",
		"com.docker.network.bridge.enable_ip_masquerade": "true",
		"com.docker.network.bridge.host_binding_ipv4":    "0.0.0.0",
		"com.docker.network.bridge.name":                 bridge,
		"com.docker.network.driver.mtu":                  "1500",
	}
}

// InspectResponse renders a network as dockerd 28 does for GET
// /networks/{id} (Engine API v1.50): scope "local", IPv4 only, IPAM driver
// "default" with one config entry (none for the "null" driver), Labels and
// Options as {} rather than null, and Containers keyed by container ID.
// withContainers false leaves Containers empty ({}), as GET /networks does
// from API 1.28 on.
func InspectResponse(n portlayer.Network, withContainers bool) network.Inspect {
	driver := n.Driver
	if driver == "" {
		driver = driverBridge
	}
	opts := map[string]string{}
	if n.Predefined && driver == driverBridge {
		opts = defaultBridgeOptions(n.Bridge)
	}
	maps.Copy(opts, n.Options)
	labels := map[string]string{}
	maps.Copy(labels, n.Labels)

	ipam := network.IPAM{Driver: ipamDefault}
	if driver != driverNull && n.Subnet.IsValid() {
		ipam.Config = []network.IPAMConfig{{Subnet: n.Subnet, IPRange: n.IPRange, Gateway: n.Gateway}}
	}

	out := network.Inspect{
		Network: network.Network{
			Name:       n.Name,
			ID:         n.ID,
			Created:    n.Created,
			Scope:      scopeLocal,
			Driver:     driver,
			EnableIPv4: true,
			EnableIPv6: false,
			IPAM:       ipam,
			Internal:   n.Internal,
			ConfigFrom: network.ConfigReference{Network: ""},
			Options:    opts,
			Labels:     labels,
		},
		Containers: map[string]network.EndpointResource{},
	}
	if withContainers {
		for _, ep := range n.Endpoints {
			out.Containers[ep.ContainerID] = endpointResource(ep)
		}
	}
	return out
}

// endpointResource renders one attachment: the container's name, the
// endpoint's ID, MAC and address with the subnet's length
// ("172.17.0.2/16"); IPv6Address stays "".
func endpointResource(ep portlayer.Endpoint) network.EndpointResource {
	r := network.EndpointResource{
		Name:        endpointName(ep),
		EndpointID:  ep.ID,
		IPv4Address: ep.Address,
	}
	if mac, err := net.ParseMAC(ep.MAC); err == nil {
		r.MacAddress = network.HardwareAddr(mac)
	}
	return r
}

// endpointName is the container's name as dockerd names an endpoint: the
// container name, else the first of the endpoint's DNS names, else the
// container's short ID.
func endpointName(ep portlayer.Endpoint) string {
	if ep.ContainerName != "" {
		return ep.ContainerName
	}
	if len(ep.DNSNames) > 0 && ep.DNSNames[0] != "" {
		return ep.DNSNames[0]
	}
	return shortID(ep.ContainerID)
}

// shortID is an ID's first 12 characters, as dockerd's TruncateID.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// inspectJSON is network.Inspect with its fields in dockerd 28's order
// (Containers before Options and Labels), which `docker network inspect`
// prints as it comes.
type inspectJSON struct {
	Name       string                              `json:"Name"`
	ID         string                              `json:"Id"`
	Created    time.Time                           `json:"Created"`
	Scope      string                              `json:"Scope"`
	Driver     string                              `json:"Driver"`
	EnableIPv4 bool                                `json:"EnableIPv4"`
	EnableIPv6 bool                                `json:"EnableIPv6"`
	IPAM       network.IPAM                        `json:"IPAM"`
	Internal   bool                                `json:"Internal"`
	Attachable bool                                `json:"Attachable"`
	Ingress    bool                                `json:"Ingress"`
	ConfigFrom network.ConfigReference             `json:"ConfigFrom"`
	ConfigOnly bool                                `json:"ConfigOnly"`
	Containers map[string]network.EndpointResource `json:"Containers"`
	Options    map[string]string                   `json:"Options"`
	Labels     map[string]string                   `json:"Labels"`
}

// ordered returns n for encoding in dockerd's field order.
func ordered(n network.Inspect) inspectJSON {
	return inspectJSON{
		Name: n.Name, ID: n.ID, Created: n.Created, Scope: n.Scope, Driver: n.Driver,
		EnableIPv4: n.EnableIPv4, EnableIPv6: n.EnableIPv6, IPAM: n.IPAM,
		Internal: n.Internal, Attachable: n.Attachable, Ingress: n.Ingress,
		ConfigFrom: n.ConfigFrom, ConfigOnly: n.ConfigOnly,
		Containers: n.Containers, Options: n.Options, Labels: n.Labels,
	}
}
