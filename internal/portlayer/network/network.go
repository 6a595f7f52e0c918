// Package network is the port layer's network area: bridge networks for
// container VMs (a Linux bridge each, with NAT out), published ports and
// the embedded DNS.
//
// Every network is a Linux bridge inside one network namespace that
// belongs to the VCH (never the host's root namespace: DESIGN.md's network
// rule). A container VM's NIC is a tap device in that namespace; joining a
// network enslaves the tap to the network's bridge. Forwarding is off in
// the namespace, so containers reach peers on their own networks only and
// networks are isolated from each other without firewall rules. Published
// ports are host sockets whose connections are forwarded into the
// namespace by a user-space proxy (package portmap); DNS queries arrive
// from the guests over their tether channel (package dns answers them).
//
// The package implements portlayer.Networks and portlayer.NetworkPlumber.
package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vchproject/vch/internal/portlayer"
)

// Predefined network names: BridgeName, the network a container joins
// unless told otherwise, and NoneName, loopback only.
const (
	BridgeName = "bridge"
	NoneName   = "none"
)

// defaultBridgeDevice names the predefined bridge network's bridge inside
// the VCH's namespace; not docker0, so it is never taken for a Docker
// daemon's bridge on the same host.
const defaultBridgeDevice = "vch0"

// Config configures the network area.
type Config struct {
	// Root is the directory for the network records (networks.json).
	Root string
	// Namespace names the VCH's network namespace (/run/netns/NAME); it is
	// created if missing.
	Namespace string
	// NoEgress turns off TCP egress from containers to outside addresses
	// (see egress.go); containers then reach only their peers, the
	// embedded DNS and published ports.
	NoEgress bool
	// EgressNamespace names an existing network namespace to open egress
	// connections from; empty means the daemon's own.
	EgressNamespace string
	// Uplink names an interface of the daemon's namespace that is moved
	// into the VCH's namespace and enslaved to the default bridge, so that
	// container VMs on the network it is on (a vSphere portgroup) are on
	// that bridge; it stays there across restarts. Empty: none.
	Uplink string
}

// PortPublisher binds published ports and forwards them into the
// namespace; package portmap implements it.
type PortPublisher interface {
	Publish(owner string, target netip.Addr, ports []portlayer.PortBinding) ([]portlayer.PortBinding, error)
	Unpublish(owner string)
	Close() error
}

// record is a network as persisted.
type record struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Driver   string            `json:"driver"`
	Created  time.Time         `json:"created"`
	Subnet   netip.Prefix      `json:"subnet,omitzero"`
	Gateway  netip.Addr        `json:"gateway,omitzero"`
	IPRange  netip.Prefix      `json:"ip_range,omitzero"`
	Internal bool              `json:"internal,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Options  map[string]string `json:"options,omitempty"`
	Bridge   string            `json:"bridge,omitempty"`
}

type netState struct {
	rec  record
	pool *pool
	// eps are the live endpoints by container ID.
	eps map[string]*portlayer.Endpoint
}

type ctrState struct {
	name string
	nics map[string]bool // tap names of this container's VM
}

// Service is the network area. Safe for concurrent use.
type Service struct {
	cfg    Config
	logger *slog.Logger
	ns     *namespace
	ports  PortPublisher
	dns    Resolver
	egress *egress
	out    *namespace // EgressNamespace, opened

	mu     sync.Mutex
	nets   map[string]*netState // by network ID
	ctrs   map[string]*ctrState // by container ID
	closed bool
}

// New opens (or creates) the VCH's namespace, restores the recorded
// networks' bridges (a namespace kept by the previous daemon for running
// containers is reused as it is) and creates the predefined ones. The publisher is built
// by newPorts with a dialer into the namespace.
func New(cfg Config, newPorts func(dial Dialer) PortPublisher, dns Resolver, logger *slog.Logger) (*Service, error) {
	if cfg.Namespace == "" || cfg.Root == "" {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "config needs Root and Namespace")
	}
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	ns, err := openNamespace(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, logger: logger.With("component", "network"), ns: ns, dns: dns,
		nets: map[string]*netState{}, ctrs: map[string]*ctrState{}}
	s.ports = newPorts(ns.dial)
	recs, err := s.load()
	if err != nil {
		s.Close()
		return nil, err
	}
	if !slices.ContainsFunc(recs, func(r record) bool { return r.Name == BridgeName }) {
		recs = append(recs, record{ID: newID(), Name: BridgeName, Driver: "bridge", Created: time.Now().UTC(),
			Subnet: defaultBridgeSubnet, Gateway: firstHost(defaultBridgeSubnet), Bridge: defaultBridgeDevice,
			// The bridge driver's option keys (com.docker.network.*),
			// the names network clients read these settings by.
			Options: map[string]string{
				"com.docker.network.bridge.default_bridge":       "true",
				"com.docker.network.bridge.enable_icc":           "true",
				"com.docker.network.bridge.enable_ip_masquerade": "true",
				"com.docker.network.bridge.host_binding_ipv4":    "0.0.0.0",
				"com.docker.network.bridge.name":                 defaultBridgeDevice,
				"com.docker.network.driver.mtu":                  "1500",
			}})
	}
	if !slices.ContainsFunc(recs, func(r record) bool { return r.Name == NoneName }) {
		recs = append(recs, record{ID: newID(), Name: NoneName, Driver: "null", Created: time.Now().UTC()})
	}
	for _, r := range recs {
		if err := s.ensureBridge(r); err != nil {
			s.Close()
			return nil, err
		}
		s.nets[r.ID] = &netState{rec: r, pool: newPool(r.Subnet, r.Gateway, r.IPRange), eps: map[string]*portlayer.Endpoint{}}
	}
	if err := s.saveLocked(); err != nil {
		s.Close()
		return nil, err
	}
	if cfg.Uplink != "" {
		if err := s.attachUplink(cfg.Uplink); err != nil {
			s.Close()
			return nil, err
		}
		for _, r := range recs {
			if err := s.joinUplink(r); err != nil {
				s.Close()
				return nil, err
			}
		}
	}
	if !cfg.NoEgress {
		if cfg.EgressNamespace != "" {
			if s.out, err = openExisting(cfg.EgressNamespace); err != nil {
				s.Close()
				return nil, err
			}
		}
		if s.egress, err = startEgress(ns, s.out, s.logger); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.syncEgressLocked(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// syncEgressLocked rewrites the egress rules for the current networks:
// every non-internal bridge network gets egress; no VCH subnet is ever
// proxied.
func (s *Service) syncEgressLocked() error {
	if s.egress == nil {
		return nil
	}
	var bridges []string
	var subnets []netip.Prefix
	for _, n := range s.allNets() {
		if n.rec.Driver != "bridge" {
			continue
		}
		subnets = append(subnets, n.rec.Subnet)
		if !n.rec.Internal {
			bridges = append(bridges, n.rec.Bridge)
		}
	}
	sort.Strings(bridges)
	return s.egress.rules(bridges, subnets)
}

// Close closes the published ports and the egress proxy. It deletes the
// namespace with its bridges only when no container VM uses it any more
// (no tap is left in it): container VMs outlive a daemon that stops (their
// taps live in the namespace), and the next daemon reuses the namespace,
// rewrites its egress rules and re-registers their endpoints (Restore).
// While no daemon runs, the VMs reach each other but not the outside
// (egress and published ports are the daemon's proxies). The records stay
// either way. Idempotent.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.ports != nil {
		_ = s.ports.Close()
	}
	if s.egress != nil {
		s.egress.close()
	}
	if s.out != nil {
		s.out.close()
	}
	// A tap exists only while a VM holds it: that, not this daemon's
	// bookkeeping, says whether a VM still uses the namespace (after a
	// failed start, say, before any VM was re-registered).
	if taps := s.ns.taps(); taps > 0 {
		s.logger.Info("network namespace kept for running container VMs", "namespace", s.cfg.Namespace, "taps", taps)
		s.ns.close()
		return nil
	}
	return s.ns.remove()
}

// Namespace is the name of the VCH's network namespace.
func (s *Service) Namespace() string { return s.cfg.Namespace }

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Service) recordsPath() string { return filepath.Join(s.cfg.Root, "networks.json") }

func (s *Service) load() ([]record, error) {
	b, err := os.ReadFile(s.recordsPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	var recs []record
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("network: %s: %w", s.recordsPath(), err)
	}
	return recs, nil
}

// saveLocked writes every record (atomically: temp file and rename).
func (s *Service) saveLocked() error {
	recs := make([]record, 0, len(s.nets))
	for _, n := range s.nets {
		recs = append(recs, n.rec)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Created.Before(recs[j].Created) })
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	tmp := s.recordsPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := os.Rename(tmp, s.recordsPath()); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// ensureBridge creates r's bridge with its gateway address if missing.
func (s *Service) ensureBridge(r record) error {
	if r.Driver != "bridge" {
		return nil
	}
	link, err := s.ns.nl.LinkByName(r.Bridge)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: r.Bridge, MTU: 1500}}
		if err := s.ns.nl.LinkAdd(br); err != nil {
			return fmt.Errorf("network: create bridge %s: %w", r.Bridge, err)
		}
		if link, err = s.ns.nl.LinkByName(r.Bridge); err != nil {
			return fmt.Errorf("network: bridge %s: %w", r.Bridge, err)
		}
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(r.Gateway, r.Subnet.Bits()))}
	if err := s.ns.nl.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("network: bridge %s address %s: %w", r.Bridge, addr, err)
	}
	if err := s.ns.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: bridge %s up: %w", r.Bridge, err)
	}
	return nil
}

// attachUplink moves the daemon's interface name into the VCH's
// namespace (unless an earlier daemon did) and enslaves it, up, to the
// default bridge. NotFound if neither namespace has it.
func (s *Service) attachUplink(name string) error {
	link, err := s.ns.nl.LinkByName(name)
	if err != nil {
		host, herr := netlink.LinkByName(name)
		if herr != nil {
			return portlayer.Errorf(portlayer.ClassNotFound, "uplink %s: no such interface", name)
		}
		if err := netlink.LinkSetNsFd(host, int(s.ns.handle)); err != nil {
			return fmt.Errorf("network: uplink %s: move into namespace %s: %w", name, s.ns.name, err)
		}
		if link, err = s.ns.nl.LinkByName(name); err != nil {
			return fmt.Errorf("network: uplink %s: %w", name, err)
		}
	}
	br, err := s.ns.nl.LinkByName(defaultBridgeDevice)
	if err == nil {
		err = s.ns.nl.LinkSetMaster(link, br)
	}
	if err == nil {
		err = s.ns.nl.LinkSetUp(link)
	}
	if err != nil {
		return fmt.Errorf("network: uplink %s on %s: %w", name, defaultBridgeDevice, err)
	}
	s.logger.Info("uplink attached", "interface", name, "bridge", defaultBridgeDevice)
	return nil
}

// uplinkPair names the veth pair that joins bridge to the default
// bridge: its end on bridge, then its end on the default bridge (15
// bytes at most, IFNAMSIZ).
func uplinkPair(bridge string) (string, string) {
	h := fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(bridge)))
	return "vcu" + h, "vcp" + h
}

// joinUplink joins r's bridge, a network other than the default, to the
// default bridge, which holds the uplink, by a veth pair (uplinkPair):
// the container VMs of every network are on the uplink's one segment (a
// vSphere portgroup), so each network's gateway, embedded services and
// published ports must be reachable there. Forwarding stays off in the
// namespace, so a container reaches another network's containers only
// by taking an address in that network's subnet itself (CAP_NET_ADMIN;
// docs/vsphere.md, "Networks"). Idempotent; nothing for the default
// bridge or a network without a bridge.
func (s *Service) joinUplink(r record) error {
	if r.Driver != "bridge" || r.Bridge == defaultBridgeDevice {
		return nil
	}
	a, b := uplinkPair(r.Bridge)
	if _, err := s.ns.nl.LinkByName(a); err != nil {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a, MTU: 1500}, PeerName: b}
		if err := s.ns.nl.LinkAdd(veth); err != nil {
			return fmt.Errorf("network: join %s to the uplink: veth %s: %w", r.Bridge, a, err)
		}
	}
	for _, end := range [][2]string{{a, r.Bridge}, {b, defaultBridgeDevice}} {
		link, err := s.ns.nl.LinkByName(end[0])
		var br netlink.Link
		if err == nil {
			br, err = s.ns.nl.LinkByName(end[1])
		}
		if err == nil {
			err = s.ns.nl.LinkSetMaster(link, br)
		}
		if err == nil {
			err = s.ns.nl.LinkSetUp(link)
		}
		if err != nil {
			return fmt.Errorf("network: join %s to the uplink: %s on %s: %w", r.Bridge, end[0], end[1], err)
		}
	}
	return nil
}

func (s *Service) deleteBridge(name string) {
	// Its uplink pair, if any (joined by this daemon or an earlier one).
	a, _ := uplinkPair(name)
	if link, err := s.ns.nl.LinkByName(a); err == nil {
		if err := s.ns.nl.LinkDel(link); err != nil { // and its peer
			s.logger.Warn("delete uplink veth", "veth", a, "err", err)
		}
	}
	if link, err := s.ns.nl.LinkByName(name); err == nil {
		if err := s.ns.nl.LinkDel(link); err != nil {
			s.logger.Warn("delete bridge", "bridge", name, "err", err)
		}
	}
}

// lookupLocked finds a network by exact name, full ID or unique ID prefix
// (in that order: a full ID and a name are exact, a prefix only a
// shorthand that loses to both).
func (s *Service) lookupLocked(idOrName string) (*netState, error) {
	if idOrName == "" {
		return nil, portlayer.NoSuchNetwork(idOrName)
	}
	if n, ok := s.nets[idOrName]; ok {
		return n, nil
	}
	for _, n := range s.nets {
		if n.rec.Name == idOrName {
			return n, nil
		}
	}
	var found *netState
	for id, n := range s.nets {
		if strings.HasPrefix(id, idOrName) {
			if found != nil {
				return nil, portlayer.Refused(portlayer.ClassInvalidArgument, portlayer.KindNetwork, idOrName, portlayer.ReasonAmbiguous, "network: several networks have IDs that start with "+idOrName)
			}
			found = n
		}
	}
	if found == nil {
		return nil, portlayer.NoSuchNetwork(idOrName)
	}
	return found, nil
}

func (n *netState) view() portlayer.Network {
	r := n.rec
	out := portlayer.Network{ID: r.ID, Name: r.Name, Driver: r.Driver, Created: r.Created, Subnet: r.Subnet,
		Gateway: r.Gateway, IPRange: r.IPRange, Internal: r.Internal, Labels: r.Labels, Options: r.Options,
		Predefined: r.Name == BridgeName || r.Name == NoneName, Bridge: r.Bridge}
	for _, ep := range n.eps {
		out.Endpoints = append(out.Endpoints, *ep)
	}
	sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].ContainerID < out.Endpoints[j].ContainerID })
	return out
}

// CreateNetwork creates a bridge network. See portlayer.Networks.
func (s *Service) CreateNetwork(ctx context.Context, spec portlayer.NetworkSpec) (portlayer.Network, error) {
	if spec.Name == "" {
		return portlayer.Network{}, portlayer.Invalid(portlayer.KindNetwork, "Name", "", portlayer.ReasonRequired, "network: a network needs a name")
	}
	if spec.Driver != "" && spec.Driver != "bridge" {
		e := portlayer.Invalid(portlayer.KindNetwork, "Driver", spec.Driver, portlayer.ReasonUnknown, "network: no network driver "+strconv.Quote(spec.Driver)+": the only one is bridge")
		e.Class = portlayer.ClassNotFound
		return portlayer.Network{}, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.nets {
		if n.rec.Name == spec.Name {
			e := portlayer.Refused(portlayer.ClassAlreadyExists, portlayer.KindNetwork, n.rec.ID, portlayer.ReasonNameInUse, "network: the name "+spec.Name+" is in use")
			e.Name = spec.Name
			return portlayer.Network{}, e
		}
	}
	subnet := spec.Subnet.Masked()
	if spec.Subnet.IsValid() {
		if err := validateSubnet(spec.Subnet, spec.Gateway, spec.IPRange); err != nil {
			return portlayer.Network{}, err
		}
		for _, n := range s.nets {
			if n.rec.Subnet.IsValid() && overlaps(n.rec.Subnet, subnet) {
				e := portlayer.Refused(portlayer.ClassConflict, portlayer.KindNetwork, n.rec.ID, portlayer.ReasonOverlaps, "network: subnet "+subnet.String()+" overlaps network "+n.rec.Name+"'s")
				e.Field, e.Value = "Subnet", subnet.String()
				return portlayer.Network{}, e
			}
		}
	} else {
		if spec.Gateway.IsValid() || spec.IPRange.IsValid() {
			return portlayer.Network{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "gateway and ip-range need a subnet")
		}
		for _, p := range autoPools() {
			if !slices.ContainsFunc(s.allNets(), func(n *netState) bool { return n.rec.Subnet.IsValid() && overlaps(n.rec.Subnet, p) }) {
				subnet = p
				break
			}
		}
		if !subnet.IsValid() {
			return portlayer.Network{}, portlayer.Refused(portlayer.ClassResourceExhausted, portlayer.KindNetwork, "", portlayer.ReasonExhausted, "network: every subnet of the address pools is taken")
		}
	}
	gw := spec.Gateway
	if !gw.IsValid() {
		gw = firstHost(subnet)
	}
	id := newID()
	r := record{ID: id, Name: spec.Name, Driver: "bridge", Created: time.Now().UTC(), Subnet: subnet, Gateway: gw,
		IPRange: spec.IPRange.Masked(), Internal: spec.Internal, Labels: spec.Labels, Options: spec.Options, Bridge: "br-" + id[:12]}
	if !spec.IPRange.IsValid() {
		r.IPRange = netip.Prefix{}
	}
	if err := s.ensureBridge(r); err != nil {
		return portlayer.Network{}, err
	}
	if s.cfg.Uplink != "" {
		if err := s.joinUplink(r); err != nil {
			s.deleteBridge(r.Bridge)
			return portlayer.Network{}, err
		}
	}
	n := &netState{rec: r, pool: newPool(r.Subnet, r.Gateway, r.IPRange), eps: map[string]*portlayer.Endpoint{}}
	s.nets[id] = n
	if err := s.saveLocked(); err != nil {
		delete(s.nets, id)
		s.deleteBridge(r.Bridge)
		return portlayer.Network{}, err
	}
	if err := s.syncEgressLocked(); err != nil {
		s.logger.Warn("egress rules", "err", err)
	}
	s.logger.Info("network created", "network", r.Name, "id", id[:12], "subnet", subnet)
	return n.view(), nil
}

func (s *Service) allNets() []*netState {
	out := make([]*netState, 0, len(s.nets))
	for _, n := range s.nets {
		out = append(out, n)
	}
	return out
}

// InspectNetwork returns one network. See portlayer.Networks.
func (s *Service) InspectNetwork(ctx context.Context, idOrName string) (portlayer.Network, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.lookupLocked(idOrName)
	if err != nil {
		return portlayer.Network{}, err
	}
	return n.view(), nil
}

// ListNetworks returns every network, oldest first.
func (s *Service) ListNetworks(ctx context.Context) ([]portlayer.Network, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]portlayer.Network, 0, len(s.nets))
	for _, n := range s.nets {
		out = append(out, n.view())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RemoveNetwork deletes a network and its bridge. See portlayer.Networks.
func (s *Service) RemoveNetwork(ctx context.Context, idOrName string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.lookupLocked(idOrName)
	if err != nil {
		return err
	}
	if n.rec.Name == BridgeName || n.rec.Name == NoneName {
		e := portlayer.Refused(portlayer.ClassPermissionDenied, portlayer.KindNetwork, n.rec.ID, portlayer.ReasonPredefined, "network: "+n.rec.Name+" is defined by the VCH and cannot be removed")
		e.Name = n.rec.Name
		return e
	}
	if len(n.eps) > 0 {
		e := portlayer.Refused(portlayer.ClassPermissionDenied, portlayer.KindNetwork, n.rec.ID, portlayer.ReasonInUse, "network: "+n.rec.Name+" has containers attached")
		e.Name = n.rec.Name
		for id := range n.eps {
			e.Containers = append(e.Containers, id)
		}
		slices.Sort(e.Containers)
		return e
	}
	delete(s.nets, n.rec.ID)
	if err := s.saveLocked(); err != nil {
		s.nets[n.rec.ID] = n
		return err
	}
	s.deleteBridge(n.rec.Bridge)
	if err := s.syncEgressLocked(); err != nil {
		s.logger.Warn("egress rules", "err", err)
	}
	s.logger.Info("network removed", "network", n.rec.Name)
	return nil
}
