package portlayer

import (
	"context"
	"net/netip"
	"os"
	"time"
)

// NetworkSpec describes a network to create (CreateNetwork). The
// only driver is "bridge": a Linux bridge inside the VCH's own network
// namespace, one tap per container NIC.
type NetworkSpec struct {
	// Name is unique among the VCH's networks. AlreadyExists if taken.
	Name string
	// Driver is "bridge"; empty means bridge. InvalidArgument otherwise.
	Driver string
	// Subnet is an IPv4 prefix in canonical form ("172.18.0.0/16"); the
	// zero value picks the next free pool (172.18–31.0.0/16, then
	// 192.168.N.0/20): RFC 1918 private space, after the predefined
	// bridge network's 172.17.0.0/16.
	Subnet netip.Prefix
	// Gateway is the bridge's address inside Subnet; zero means Subnet's
	// first host address.
	Gateway netip.Addr
	// IPRange narrows dynamic allocation to a sub-prefix of Subnet; zero
	// means all of Subnet.
	IPRange netip.Prefix
	// Internal networks give their containers no default route.
	Internal bool
	// Labels and Options are kept verbatim; the port layer interprets
	// neither.
	Labels  map[string]string
	Options map[string]string
}

// Network is a network's record.
type Network struct {
	// ID is 64 lowercase hex digits.
	ID   string
	Name string
	// Driver is "bridge", or "null" for the predefined "none" network.
	Driver   string
	Created  time.Time
	Subnet   netip.Prefix
	Gateway  netip.Addr
	IPRange  netip.Prefix
	Internal bool
	Labels   map[string]string
	Options  map[string]string
	// Predefined networks ("bridge", "none") exist in every VCH and cannot
	// be removed.
	Predefined bool
	// Bridge is the bridge interface's name inside the VCH's namespace.
	Bridge string
	// Endpoints are the containers attached now (running ones), by ID.
	Endpoints []Endpoint
}

// EndpointSpec is how a container wants to join one network, at create
// (ContainerSpec.Networks) or later (NetworkConnector.Connect).
type EndpointSpec struct {
	// Network is the network's name or ID (or ID prefix).
	Network string
	// IPv4 is a static address inside the network's subnet; zero means one
	// is allocated from its IPRange. Conflict if it is in use.
	IPv4 netip.Addr
	// Aliases are extra DNS names for the container on this network.
	Aliases []string
	// Links are "name:alias" legacy links: alias resolves to the container
	// name for this container only.
	Links []string
	// MAC is the endpoint's hardware address ("02:32:1c:23:00:04"); empty
	// derives one from its IPv4 address (see Endpoint.MAC). InvalidArgument
	// unless a unicast MAC-48.
	MAC string
	// Hostname is the container's hostname; on a user network it is one
	// of the endpoint's DNS names too (after its name, aliases and short
	// ID), so a container resolves its own hostname through the embedded
	// DNS. Set by compute from the container's spec.
	Hostname string
}

// Endpoint is a container's live attachment to a network.
type Endpoint struct {
	// ID is 64 lowercase hex digits, new for every join.
	ID          string
	NetworkID   string
	NetworkName string
	ContainerID string
	// ContainerName is the container's name, without a leading slash.
	ContainerName string
	// Address is the container's address with the subnet's length
	// ("172.17.0.2/16").
	Address netip.Prefix
	// Gateway is the network's gateway; the guest's default route goes
	// through the first non-internal endpoint's gateway.
	Gateway  netip.Addr
	Internal bool
	// MAC is the interface's hardware address, "02:42:ac:11:00:02" form:
	// unless the spec gave one, 02:42 then Address's four bytes, a locally
	// administered unicast MAC-48 as unique on the network as the address.
	MAC string
	// Aliases are the spec's aliases; DNSNames every name the embedded DNS
	// server answers for this endpoint (name, short ID, aliases).
	Aliases  []string
	DNSNames []string
	// Links are the spec's legacy links ("name:alias").
	Links []string
	// NIC is the name of the host-side device (a tap) that carries it.
	NIC string
}

// PortBinding publishes one container port on a host address and port.
type PortBinding struct {
	// Proto is "tcp" or "udp".
	Proto string
	// ContainerPort is the port inside the container.
	ContainerPort uint16
	// HostIP is the host address to bind; zero means all IPv4 addresses
	// (0.0.0.0; no IPv6).
	HostIP netip.Addr
	// HostPort is the host port; 0 picks a free one. With HostPortEnd set,
	// the first free port in HostPort..HostPortEnd is taken ("8000-8010:80").
	HostPort    uint16
	HostPortEnd uint16
}

// NIC is an unattached network interface backend for a container VM.
type NIC struct {
	// Name is the host-side device's name (a tap in the VCH's namespace).
	Name string
	// File is the open device the hypervisor takes; the caller closes its
	// copy once the VM has started. The device goes away with the VM.
	File *os.File
}

// Networks manages the VCH's networks: create, inspect, list and remove.
// Safe for concurrent use. idOrName accepts a name, a full ID or a unique
// ID prefix.
type Networks interface {
	// CreateNetwork creates a network. AlreadyExists if the name is taken;
	// InvalidArgument for a bad spec; Conflict if the subnet overlaps
	// another network's.
	CreateNetwork(ctx context.Context, spec NetworkSpec) (Network, error)
	// InspectNetwork returns one network. NotFound if none matches.
	InspectNetwork(ctx context.Context, idOrName string) (Network, error)
	// ListNetworks returns all networks, predefined ones included.
	ListNetworks(ctx context.Context) ([]Network, error)
	// RemoveNetwork deletes a network. Conflict if containers are attached
	// (running) or it is predefined; NotFound if none matches.
	RemoveNetwork(ctx context.Context, idOrName string) error
}

// NetworkPlumber gives container VMs their networks; compute calls it
// around a VM's life. The network area implements it. Safe for concurrent
// use.
type NetworkPlumber interface {
	// NewNIC creates an unattached NIC backend for container containerID.
	NewNIC(ctx context.Context, containerID string) (NIC, error)
	// Join attaches the NIC named nic (from NewNIC) to a network: allocates
	// the address, connects the device to the network's bridge and
	// registers the container's DNS names (name, short ID, aliases) for
	// the network's embedded DNS. NotFound for an unknown network; Conflict
	// if a static address is taken or the container is already on it;
	// InvalidArgument for a static address outside the subnet.
	Join(ctx context.Context, containerID, containerName, nic string, spec EndpointSpec) (Endpoint, error)
	// Leave detaches the container from one network and releases its
	// address. NotFound if it is not attached.
	Leave(ctx context.Context, containerID, network string) error
	// LeaveAll detaches the container from every network and drops its
	// NICs' bookkeeping (its VM has ended).
	LeaveAll(containerID string)
	// Restore re-registers a running container after a daemon restart:
	// its VM's NICs (the taps, which live as long as the VM holds them)
	// and its endpoints as recorded, addresses and DNS names included, so
	// the addresses are not handed out again and its names resolve. The
	// taps stay on their bridges. NotFound if a tap or a network is gone;
	// Conflict if an address is taken meanwhile. Nothing is registered on
	// error.
	Restore(ctx context.Context, containerID, containerName string, nics []string, eps []Endpoint) error
	// Rename changes the name a container's live endpoints answer to in
	// the embedded DNS (after Compute.Rename): newName replaces oldName;
	// aliases and the short ID stay. A container without endpoints is a
	// no-op.
	Rename(containerID, oldName, newName string)
	// Publish binds each port on the host and forwards connections to
	// target inside the VCH's namespace. It returns the bindings with the
	// host ports chosen. Conflict if a host port is taken (nothing stays
	// bound then).
	Publish(ctx context.Context, containerID string, target netip.Addr, ports []PortBinding) ([]PortBinding, error)
	// Unpublish closes the container's published ports.
	Unpublish(containerID string)
	// Resolve answers a DNS query (RFC 1035 wire format) sent by container
	// containerID: names of containers on its networks, else the
	// container's own resolvers, servers (IP addresses, port 53), or,
	// when it has none, the host's (no resolver for internal-only
	// containers).
	Resolve(ctx context.Context, containerID string, servers []string, query []byte) ([]byte, error)
}

// NetworkConnector joins containers to networks and takes them off again
// after creation, running or not (Engine API v1.50 "Network": connect,
// disconnect). The compute area implements it, as it owns the
// container's record and VM; it calls a NetworkPlumber for the network
// side. Safe for concurrent use.
//
// Errors are *Error values (errors.go) that front ends word themselves:
// an unknown container or network is NotFound of Kind container or
// network (ID as asked); the attachment's own are of Kind endpoint (ID
// the network, Name the container), Reason attached, not_attached, ….
type NetworkConnector interface {
	// Connect joins container (name, ID or unique ID prefix) to the network
	// spec.Network names. On a running container the VM gains an interface
	// at once; a created or stopped container keeps the spec in its record
	// and joins when it next starts. NotFound for an unknown container or
	// network; Conflict if the container is already attached or the static
	// address is taken; InvalidArgument if the spec does not fit the network
	// (a static address outside its subnet) or the container (on "none",
	// which excludes every other network).
	Connect(ctx context.Context, container string, spec EndpointSpec) error
	// Disconnect takes container off network (name, ID or unique ID
	// prefix); on a running container the VM loses the interface at once.
	// force also drops a stopped container's record of a network that no
	// longer exists. NotFound for an unknown container or network, or if
	// the container is not attached to it.
	Disconnect(ctx context.Context, container, network string, force bool) error
}
