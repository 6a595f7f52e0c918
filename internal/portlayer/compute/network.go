package compute

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// SpareNICs is how many unattached NICs a networked container VM boots
// with, for a Connect while it runs: QEMU's microvm machine has no
// hot-plug bus, so a connect enslaves a spare NIC's tap to the network's
// bridge and tether gives the guest interface its name and address.
const SpareNICs = 2

// dnsRelayAddr is where tether serves DNS in the guest: the address
// containers know their embedded DNS server by (images and their
// configurations name 127.0.0.11 as the resolver, nginx's for one).
const dnsRelayAddr = "127.0.0.11:53"

// interfaceTimeout bounds one interface change in the guest (connect,
// disconnect): the container's lock is held meanwhile, so a guest that
// does not answer must not block its stop, kill or removal for long.
const interfaceTimeout = 30 * time.Second

var (
	_ portlayer.NetworkConnector = (*Service)(nil)
	_ portlayer.NetworkConnector = (*networking)(nil)
)

// networking is compute's network area: a container VM's NICs and
// their attachments. At a start it makes the NICs, joins the networks
// and publishes the ports (plumb), and gives the guest its /etc/hosts
// and DNS; while the VM runs it connects and disconnects networks on its
// spare NICs and keeps the published ports and the default route on the
// container's current endpoints; after a daemon restart it takes the
// attachments back (restore); when the run ends it releases them
// (unplumb). It owns the rules of attachment; the container's NICs
// (container.slots) and endpoints live in the container, changed under
// its lock, and the record store persists them. plumber nil: every
// container has loopback only.
type networking struct {
	plumber  portlayer.NetworkPlumber // Config.Network
	networks portlayer.Networks       // Config.Networks: names networks for Connect and Disconnect
	recs     *records
	lookup   lookupFunc
	logger   *slog.Logger
}

// Connect joins a container to a network. A stopped container records
// it for its next start; a running one gains an interface at once, on
// one of its spare NICs. NotFound for an unknown container or network;
// Conflict if it is already on the network, has NoNetwork, or has no
// spare NIC left.
func (s *Service) Connect(ctx context.Context, idOrName string, spec portlayer.EndpointSpec) error {
	return s.net.Connect(ctx, idOrName, spec)
}

// Disconnect takes a container off a network; a running one loses the
// interface at once. NotFound if the container is not on the network. A
// network that no longer exists is dropped from a stopped container's
// record (from a running one's only with force), so that the container
// can start again.
func (s *Service) Disconnect(ctx context.Context, idOrName, network string, force bool) error {
	return s.net.Disconnect(ctx, idOrName, network, force)
}

// guestHandlers serve the guest's requests of container rec (DNS: names
// outside go to its own DNS servers, if it has any).
func (n *networking) guestHandlers(rec portlayer.Container) agent.Handlers {
	var h agent.Handlers
	if n.plumber != nil {
		id, servers := rec.ID, slices.Clone(rec.Spec.DNS)
		h.DNS = func(ctx context.Context, q []byte) ([]byte, error) { return n.plumber.Resolve(ctx, id, servers, q) }
	}
	return h
}

// restore takes back the attachments of a container VM an earlier
// daemon left running (its NICs, slots, and its endpoints in rec) and
// publishes its ports again; it returns the ports bound. On error
// nothing is restored.
func (n *networking) restore(ctx context.Context, c *container, rec portlayer.Container, slots []nicSlot) ([]portlayer.PortBinding, error) {
	ports := rec.Ports
	if n.plumber == nil || (len(slots) == 0 && len(rec.Endpoints) == 0) {
		return ports, nil
	}
	taps := make([]string, len(slots))
	for i, sl := range slots {
		taps[i] = sl.tap
	}
	if err := n.plumber.Restore(ctx, c.id, rec.Spec.Name, taps, rec.Endpoints); err != nil {
		return nil, err
	}
	if target := portTarget(rec.Endpoints); len(rec.Ports) > 0 && target.IsValid() {
		// The same host ports as before; one taken meanwhile is lost,
		// as the container keeps running.
		var err error
		ports, err = n.plumber.Publish(ctx, c.id, target, rec.Ports)
		if err != nil {
			n.logger.Warn("published ports not restored", "container", c.id, "err", err)
			ports = nil
		}
	}
	return ports, nil
}

// renameEndpoints tells the network that container id, named old, is
// named newName now, and returns its endpoints eps with the new name (as
// the container's name and among their DNS names); false, and nothing
// told, without networking or endpoints. The container's lock is held.
func (n *networking) renameEndpoints(id, old, newName string, eps []portlayer.Endpoint) ([]portlayer.Endpoint, bool) {
	if n.plumber == nil || len(eps) == 0 {
		return nil, false
	}
	n.plumber.Rename(id, old, newName)
	out := make([]portlayer.Endpoint, len(eps))
	for i, ep := range eps {
		ep.ContainerName = newName
		names := make([]string, len(ep.DNSNames))
		for j, name := range ep.DNSNames {
			if name == old {
				name = newName
			}
			names[j] = name
		}
		ep.DNSNames = names
		out[i] = ep
	}
	return out, true
}

// linkRefusal is a start refused for a legacy link of container self
// (its name) to target under alias: FailedPrecondition, reason
// ReasonLinkNotRunning or ReasonLinkOffBridge.
func linkRefusal(reason, self, target, alias, msg string) error {
	return &portlayer.Error{Class: portlayer.ClassFailedPrecondition, Kind: portlayer.KindContainer, ID: self,
		Name: alias, Field: "Links", Value: target, Reason: reason, Message: msg}
}

// nicSlot is one NIC of a running VM.
type nicSlot struct {
	tap     string // host tap name
	bootMAC string
	network string // network ID while attached, "" for a spare
	name    string // guest interface name while attached
}

// plumbing is what a VM's start needs from the network area.
type plumbing struct {
	nics  []hypervisor.NIC
	ifs   []wire.Interface
	slots []nicSlot
	eps   []portlayer.Endpoint
	ports []portlayer.PortBinding
	// warmName and warmDir are the warm VM the run took (package
	// warmpool), whose taps these are; empty for a VM of its own.
	warmName, warmDir string
}

// close releases the host-side copies of the tap descriptors (a warm
// VM's taps have none: its VMM holds them).
func (p *plumbing) closeFiles() {
	for _, n := range p.nics {
		if n.File != nil {
			n.File.Close()
		}
	}
}

// bootMACs are the NICs' boot MACs in device order.
func (p *plumbing) bootMACs() []string {
	macs := make([]string, len(p.nics))
	for i, n := range p.nics {
		macs[i] = n.MAC
	}
	return macs
}

// nicCount is how many NICs plumb gives the container's VM.
func (n *networking) nicCount(rec portlayer.Container) int {
	if n.plumber == nil || len(rec.Spec.Networks) == 0 {
		return 0
	}
	return len(rec.Spec.Networks) + SpareNICs
}

// spareMAC is a stable locally administered address for spare NIC i of
// container id: 06:…, never one of the 02:42:… addresses endpoints get
// from their IPv4 address (package network), so the two never collide.
func spareMAC(id string, i int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", id, i)))
	return fmt.Sprintf("06:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}

// plumb creates the container's NICs, joins its networks and publishes its
// ports. taps, when not nil, are the NICs' taps already made (a warm
// VM's, nicCount of them, in NIC order) instead of new ones. On error
// nothing stays attached or bound.
func (n *networking) plumb(ctx context.Context, c *container, rec portlayer.Container, taps []string) (*plumbing, error) {
	p := &plumbing{}
	if n.nicCount(rec) == 0 {
		return p, nil
	}
	if taps != nil && len(taps) != n.nicCount(rec) {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "%d taps for %d NICs", len(taps), n.nicCount(rec))
	}
	newNIC := func(i int) (portlayer.NIC, error) {
		if taps != nil {
			return portlayer.NIC{Name: taps[i]}, nil
		}
		return n.plumber.NewNIC(ctx, c.id)
	}
	if err := n.checkLinks(rec); err != nil {
		return nil, err
	}
	fail := func(err error) (*plumbing, error) {
		p.closeFiles()
		n.plumber.Unpublish(c.id)
		n.plumber.LeaveAll(c.id)
		return nil, err
	}
	gateway := false
	for i, spec := range rec.Spec.Networks {
		nic, err := newNIC(i)
		if err != nil {
			return fail(err)
		}
		p.nics = append(p.nics, hypervisor.NIC{File: nic.File})
		spec.Hostname = rec.Spec.Hostname
		ep, err := n.plumber.Join(ctx, c.id, strings.TrimPrefix(rec.Spec.Name, "/"), nic.Name, spec)
		if errdefs.IsNotFound(err) {
			err = &portlayer.Error{Class: portlayer.ClassFailedPrecondition, Op: "start", Kind: portlayer.KindNetwork, ID: spec.Network,
				Reason: portlayer.ReasonGone, Message: "network " + spec.Network + " not found"}
		}
		if err != nil {
			return fail(err)
		}
		p.nics[i].MAC = ep.MAC
		name := fmt.Sprintf("eth%d", i)
		f := wire.Interface{BootMAC: ep.MAC, Name: name, Address: ep.Address.String()}
		if !ep.Internal && !gateway {
			f.Gateway, gateway = ep.Gateway.String(), true
		}
		p.ifs = append(p.ifs, f)
		p.eps = append(p.eps, ep)
		p.slots = append(p.slots, nicSlot{tap: nic.Name, bootMAC: ep.MAC, network: ep.NetworkID, name: name})
	}
	for i := 0; i < SpareNICs; i++ {
		nic, err := newNIC(len(rec.Spec.Networks) + i)
		if err != nil {
			return fail(err)
		}
		mac := spareMAC(c.id, i)
		p.nics = append(p.nics, hypervisor.NIC{File: nic.File, MAC: mac})
		p.ifs = append(p.ifs, wire.Interface{BootMAC: mac})
		p.slots = append(p.slots, nicSlot{tap: nic.Name, bootMAC: mac})
	}
	if target := portTarget(p.eps); len(rec.Spec.Ports) > 0 && target.IsValid() {
		ports, err := n.plumber.Publish(ctx, c.id, target, rec.Spec.Ports)
		if err != nil {
			return fail(err)
		}
		p.ports = ports
	}
	return p, nil
}

// unplumb releases a run's network resources (the VM has ended or is
// about to).
func (n *networking) unplumb(id string) {
	if n.plumber == nil {
		return
	}
	n.plumber.Unpublish(id)
	n.plumber.LeaveAll(id)
}

// hostsFile renders the container's /etc/hosts: loopback names,
// ExtraHosts entries, legacy links on the default bridge, then the
// container's own address(es) with its hostname, so that the container's
// own name resolves without DNS.
func (n *networking) hostsFile(rec portlayer.Container, eps []portlayer.Endpoint) string {
	var b strings.Builder
	b.WriteString(defaultHosts)
	for _, h := range rec.Spec.ExtraHosts {
		name, addr, ok := strings.Cut(h, ":")
		if !ok {
			continue
		}
		if addr == "host-gateway" && len(eps) > 0 {
			addr = eps[0].Gateway.String()
		}
		fmt.Fprintf(&b, "%s\t%s\n", addr, name)
	}
	for i, spec := range rec.Spec.Networks {
		if i >= len(eps) || eps[i].NetworkName != "bridge" {
			continue
		}
		for _, l := range spec.Links {
			target, alias, ok := strings.Cut(l, ":")
			if !ok {
				alias = target
			}
			if addr, id, name, ok := n.bridgeAddr(target); ok {
				fmt.Fprintf(&b, "%s\t%s %s %s\n", addr, alias, id[:12], name)
			}
		}
	}
	host := rec.Spec.Hostname
	if rec.Spec.Domainname != "" {
		host += "." + rec.Spec.Domainname + " " + rec.Spec.Hostname
	}
	for _, ep := range eps {
		fmt.Fprintf(&b, "%s\t%s\n", ep.Address.Addr(), host)
	}
	return b.String()
}

// checkLinks refuses a start whose legacy links (on the default bridge)
// cannot be honoured: the target must run and be on the default bridge,
// or the link's /etc/hosts entry would name no address. A target that no
// longer exists is skipped, as the link's /etc/hosts entry is.
// FailedPrecondition (linkRefusal).
func (n *networking) checkLinks(rec portlayer.Container) error {
	self := strings.TrimPrefix(rec.Spec.Name, "/")
	for _, spec := range rec.Spec.Networks {
		if spec.Network != "bridge" {
			continue
		}
		for _, l := range spec.Links {
			target, alias, ok := strings.Cut(l, ":")
			if !ok {
				alias = target
			}
			other, err := n.lookup(strings.TrimPrefix(target, "/"))
			if err != nil || other.id == rec.ID {
				continue
			}
			other.mu.Lock()
			running := other.rec.State.Status == portlayer.StatusRunning || other.rec.State.Status == portlayer.StatusPaused
			onBridge := slices.ContainsFunc(other.rec.Endpoints, func(e portlayer.Endpoint) bool { return e.NetworkName == "bridge" })
			name := strings.TrimPrefix(other.rec.Spec.Name, "/")
			other.mu.Unlock()
			switch {
			case !running:
				return linkRefusal(portlayer.ReasonLinkNotRunning, self, name, strings.TrimPrefix(alias, "/"), "compute: link target "+name+" does not run")
			case !onBridge:
				return linkRefusal(portlayer.ReasonLinkOffBridge, self, name, strings.TrimPrefix(alias, "/"), "compute: link target "+name+" is not on the default bridge")
			}
		}
	}
	return nil
}

// bridgeAddr finds a running container's address on the default bridge.
func (n *networking) bridgeAddr(idOrName string) (netip.Addr, string, string, bool) {
	c, err := n.lookup(strings.TrimPrefix(idOrName, "/"))
	if err != nil {
		return netip.Addr{}, "", "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ep := range c.rec.Endpoints {
		if ep.NetworkName == "bridge" {
			return ep.Address.Addr(), c.id, strings.TrimPrefix(c.rec.Spec.Name, "/"), true
		}
	}
	return netip.Addr{}, "", "", false
}

// resolvConf renders /etc/resolv.conf: the embedded DNS (tether's relay
// on 127.0.0.11) with ndots:0 unless DNSOptions set ndots (every name is
// asked as given first, so a container's name goes to the relay as it
// is, not after the search domains), and the spec's DNSSearch and
// DNSOptions. A container on a user network always asks the embedded
// DNS, since container names must keep resolving there; its DNS servers
// are not written (the relay forwards other names upstream). On the
// default bridge alone the DNS servers are written as given. A container
// without networks keeps its image's file.
func resolvConf(spec portlayer.ContainerSpec) (text string, relay bool) {
	if len(spec.Networks) == 0 {
		return "", false
	}
	var b strings.Builder
	servers := spec.DNS
	userNet := slices.ContainsFunc(spec.Networks, func(n portlayer.EndpointSpec) bool { return n.Network != "bridge" })
	if len(servers) == 0 || userNet {
		servers, relay = []string{"127.0.0.11"}, true
	}
	for _, ns := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(spec.DNSSearch) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(spec.DNSSearch, " "))
	}
	opts := spec.DNSOptions
	if relay && !slices.ContainsFunc(opts, func(o string) bool { return strings.HasPrefix(o, "ndots:") }) {
		opts = append([]string{"ndots:0"}, opts...)
	}
	if len(opts) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(opts, " "))
	}
	return b.String(), relay
}

// Connect is Service.Connect. It changes the container under its lock,
// once no start is in progress (lockSettled), the guest's interface and
// the network's endpoint included.
func (n *networking) Connect(ctx context.Context, idOrName string, spec portlayer.EndpointSpec) error {
	if n.plumber == nil || n.networks == nil {
		return portlayer.Errorf(portlayer.ClassNotImplemented, "networking is not configured")
	}
	c, err := n.lookup(idOrName)
	if err != nil {
		return err
	}
	nw, err := n.networks.InspectNetwork(ctx, spec.Network)
	if err != nil {
		return err
	}
	spec.Network = nw.Name
	if err := lockSettled(ctx, c, idOrName); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if c.rec.State.Status == portlayer.StatusPaused {
		// The guest configures its interfaces itself, and a paused VM
		// cannot: waiting would hold the container until it is unpaused.
		return portlayer.ContainerState("connect", c.id, portlayer.ReasonPaused)
	}
	if nw.Driver == "null" || c.rec.Spec.NoNetwork {
		return portlayer.EndpointError(portlayer.ReasonNoneNetwork, strings.TrimPrefix(c.rec.Spec.Name, "/"), nw.Name)
	}
	for _, e := range c.rec.Spec.Networks {
		if e.Network == nw.Name || e.Network == nw.ID {
			return portlayer.EndpointError(portlayer.ReasonAttached, strings.TrimPrefix(c.rec.Spec.Name, "/"), nw.Name)
		}
	}
	if c.rec.State.Status == portlayer.StatusRunning {
		slot := -1
		for i, sl := range c.slots {
			if sl.network == "" {
				slot = i
				break
			}
		}
		if slot < 0 {
			return portlayer.Errorf(portlayer.ClassConflict, "container %s has no free network interface (it started with %d spare NICs; restart it to connect more)", c.id[:12], SpareNICs)
		}
		spec.Hostname = c.rec.Spec.Hostname
		ep, err := n.plumber.Join(ctx, c.id, strings.TrimPrefix(c.rec.Spec.Name, "/"), c.slots[slot].tap, spec)
		if err != nil {
			return err
		}
		name := nextIfName(c.slots)
		f := wire.Interface{BootMAC: c.slots[slot].bootMAC, Name: name, MAC: ep.MAC, Address: ep.Address.String()}
		if !ep.Internal && !slices.ContainsFunc(c.rec.Endpoints, func(e portlayer.Endpoint) bool { return !e.Internal }) {
			f.Gateway = ep.Gateway.String()
		}
		gctx, cancel := context.WithTimeout(ctx, interfaceTimeout)
		err = c.guest.ConfigureInterface(gctx, f)
		cancel()
		if err != nil {
			// The guest may have configured the interface all the same
			// (the request was only cut short): take it down again, so
			// that the guest keeps no address the network gives away.
			n.unconfigure(c, c.slots[slot].bootMAC)
			_ = n.plumber.Leave(context.Background(), c.id, nw.ID)
			return fmt.Errorf("compute: connect %s to %s: %w", c.id[:12], nw.Name, err)
		}
		c.slots[slot].network, c.slots[slot].name = ep.NetworkID, name
		target := portTarget(c.rec.Endpoints)
		c.rec.Endpoints = append(c.rec.Endpoints, ep)
		n.persistSlotsLocked(c)
		n.repointPorts(ctx, c, target)
	}
	c.rec.Spec.Networks = append(c.rec.Spec.Networks, spec)
	return n.recs.put(c.rec)
}

// persistSlotsLocked records a running container's NICs after a connect
// or disconnect, so that a restarted daemon knows which are spare. Caller
// holds c.mu.
func (n *networking) persistSlotsLocked(c *container) {
	run, err := n.recs.run(c.id)
	if err == nil {
		run.NICs = slotRecords(c.slots)
		err = n.recs.putRun(c.id, run)
	}
	if err != nil {
		n.logger.Warn("persist NICs", "container", c.id, "err", err)
	}
}

// lockSettled locks c once no start is in progress, so that a network
// change applies to the run the container is in (a start copies the
// record when it begins). NotFound if c is being created or was removed.
// On success c.mu is held.
func lockSettled(ctx context.Context, c *container, idOrName string) error {
	for {
		c.mu.Lock()
		if c.hidden() {
			c.mu.Unlock()
			return portlayer.NoSuchContainer(idOrName)
		}
		if c.phase != phaseStarting {
			return nil
		}
		ch := c.startDone
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("compute: %s is starting: %w", c.id[:12], ctx.Err())
		}
	}
}

// unconfigure takes a NIC's interface down in the guest and hides it
// again, best effort (c.mu held).
func (n *networking) unconfigure(c *container, bootMAC string) {
	ctx, cancel := context.WithTimeout(context.Background(), interfaceTimeout)
	defer cancel()
	if err := c.guest.ConfigureInterface(ctx, wire.Interface{BootMAC: bootMAC}); err != nil {
		n.logger.Warn("take interface down after a failed connect", "container", c.id, "err", err)
	}
}

// portTarget is where a running container's published ports lead: its
// first endpoint on a network that is not internal, the one its default
// route goes through (its gateway endpoint). Invalid without one: an
// internal network has no way out, so a container on internal networks
// only has nothing to publish on.
func portTarget(eps []portlayer.Endpoint) netip.Addr {
	for _, ep := range eps {
		if !ep.Internal {
			return ep.Address.Addr()
		}
	}
	return netip.Addr{}
}

// moveGateway gives a running container its default route through its
// next network that is not internal after the one it went through (old,
// the gateway endpoint's address) was disconnected, so that it keeps a
// way out (c.mu held). Best effort: the guest keeps its other routes
// either way.
func (n *networking) moveGateway(ctx context.Context, c *container, old netip.Addr) {
	gw := portTarget(c.rec.Endpoints)
	if !old.IsValid() || !gw.IsValid() || gw == old {
		return
	}
	i := slices.IndexFunc(c.rec.Endpoints, func(e portlayer.Endpoint) bool { return e.Address.Addr() == gw })
	ep := c.rec.Endpoints[i]
	j := slices.IndexFunc(c.slots, func(sl nicSlot) bool { return sl.network == ep.NetworkID })
	if j < 0 {
		return
	}
	f := wire.Interface{BootMAC: c.slots[j].bootMAC, Name: c.slots[j].name, MAC: ep.MAC, Address: ep.Address.String(), Gateway: ep.Gateway.String()}
	gctx, cancel := context.WithTimeout(ctx, interfaceTimeout)
	defer cancel()
	if err := c.guest.ConfigureInterface(gctx, f); err != nil {
		n.logger.Warn("default route not moved after a disconnect", "container", c.id, "network", ep.NetworkName, "err", err)
	}
}

// repointPorts keeps a running container's published ports on its current
// endpoints after a connect or disconnect (c.mu held), moving them with
// the container's gateway endpoint (portTarget): they must never lead to
// an address the container gave up, which the network hands to the next
// container. Ports already bound keep their host ports; a container with
// no endpoint left has none, and gets them back when connected again.
func (n *networking) repointPorts(ctx context.Context, c *container, old netip.Addr) {
	target := portTarget(c.rec.Endpoints)
	if len(c.rec.Spec.Ports) == 0 || target == old {
		return
	}
	n.plumber.Unpublish(c.id)
	bound := c.rec.Ports
	c.rec.Ports = nil
	if !target.IsValid() {
		return
	}
	want := bound
	if len(want) == 0 {
		want = c.rec.Spec.Ports
	}
	ports, err := n.plumber.Publish(ctx, c.id, target, want)
	if err != nil {
		n.logger.Warn("published ports lost after a network change", "container", c.id, "err", err)
		return
	}
	c.rec.Ports = ports
}

// nextIfName is the first "ethN" not used by an attached slot.
func nextIfName(slots []nicSlot) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("eth%d", i)
		if !slices.ContainsFunc(slots, func(sl nicSlot) bool { return sl.name == name }) {
			return name
		}
	}
}

// Disconnect is Service.Disconnect, under the container's lock as
// Connect.
func (n *networking) Disconnect(ctx context.Context, idOrName, network string, force bool) error {
	if n.plumber == nil || n.networks == nil {
		return portlayer.Errorf(portlayer.ClassNotImplemented, "networking is not configured")
	}
	c, err := n.lookup(idOrName)
	if err != nil {
		return err
	}
	nw, lookupErr := n.networks.InspectNetwork(ctx, network)
	if lookupErr != nil && !errdefs.IsNotFound(lookupErr) {
		return lookupErr
	}
	if err := lockSettled(ctx, c, idOrName); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if lookupErr != nil {
		// The network was removed while the container was attached to it
		// (stopped): a stopped container, or a forced disconnect, drops it
		// from the record, else the container could never start again.
		running := c.rec.State.Status == portlayer.StatusRunning || c.rec.State.Status == portlayer.StatusPaused
		if running && !force {
			return lookupErr
		}
		idx := slices.IndexFunc(c.rec.Spec.Networks, func(e portlayer.EndpointSpec) bool { return e.Network == network })
		if idx < 0 {
			return portlayer.EndpointError(portlayer.ReasonNotAttached, c.id, network)
		}
		c.rec.Spec.Networks = slices.Delete(c.rec.Spec.Networks, idx, idx+1)
		return n.recs.put(c.rec)
	}
	if c.rec.State.Status == portlayer.StatusPaused {
		return portlayer.ContainerState("disconnect", c.id, portlayer.ReasonPaused)
	}
	idx := slices.IndexFunc(c.rec.Spec.Networks, func(e portlayer.EndpointSpec) bool { return e.Network == nw.Name || e.Network == nw.ID })
	if idx < 0 {
		return portlayer.EndpointError(portlayer.ReasonNotAttached, c.id, nw.Name)
	}
	if i := slices.IndexFunc(c.slots, func(sl nicSlot) bool { return sl.network == nw.ID }); i >= 0 && c.guest != nil && c.rec.State.Status == portlayer.StatusRunning {
		gctx, cancel := context.WithTimeout(ctx, interfaceTimeout)
		err := c.guest.ConfigureInterface(gctx, wire.Interface{BootMAC: c.slots[i].bootMAC})
		cancel()
		if err != nil {
			return fmt.Errorf("compute: disconnect %s from %s: %w", c.id[:12], nw.Name, err)
		}
		if err := n.plumber.Leave(ctx, c.id, nw.ID); err != nil {
			n.logger.Warn("leave network", "container", c.id, "network", nw.Name, "err", err)
		}
		c.slots[i].network, c.slots[i].name = "", ""
		target := portTarget(c.rec.Endpoints)
		c.rec.Endpoints = slices.DeleteFunc(c.rec.Endpoints, func(e portlayer.Endpoint) bool { return e.NetworkID == nw.ID })
		n.persistSlotsLocked(c)
		n.repointPorts(ctx, c, target)
		n.moveGateway(ctx, c, target)
	}
	c.rec.Spec.Networks = slices.Delete(c.rec.Spec.Networks, idx, idx+1)
	return n.recs.put(c.rec)
}
