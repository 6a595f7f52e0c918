package vsphere

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Placement modes, as [Driver.Placement] names them.
const (
	// PlacementDRS: the compute resource is a cluster with DRS enabled;
	// vSphere chooses each VM's host.
	PlacementDRS = "drs"
	// PlacementFreeMemory: the driver chooses, among the compute
	// resource's usable hosts, the one with the most free memory.
	PlacementFreeMemory = "free-memory"
)

// ErrHostLost: the VM's host stopped answering (the host is disconnected,
// not responding, powered off or in standby, or the VM's own
// connectionState is not "connected") for longer than the Config's
// HostLostGrace. The VM may still run on the host, unreachable; the driver
// powers it off and destroys it if vSphere lets it, and leaves it in the
// inventory otherwise (DeleteVCH removes it later).
var ErrHostLost = errors.New("vsphere: VM's host lost")

// Bounds of placement and host health.
const (
	defaultHostLostGrace = 30 * time.Second
	// hostsFresh is how old the host table may be when Start places a VM.
	hostsFresh = time.Second
	// maxHealthInterval bounds the period of the host poll.
	maxHealthInterval = 5 * time.Second
	minHealthInterval = 20 * time.Millisecond
)

// hostProps are the host properties placement and health read.
var hostProps = []string{"name", "runtime.connectionState", "runtime.powerState", "runtime.inMaintenanceMode",
	"summary.hardware.memorySize", "summary.quickStats.overallMemoryUsage"}

// hostState is one host of the compute resource as last read.
type hostState struct {
	ref         types.ManagedObjectReference
	name        string
	conn        types.HostSystemConnectionState
	power       types.HostSystemPowerState
	maintenance bool
	memMiB      int64 // summary.hardware.memorySize in MiB
	usedMiB     int64 // summary.quickStats.overallMemoryUsage (MiB)
	// reserved: memory of the VMs this driver placed here that the host's
	// usage may not show yet, by VM name.
	reserved map[string]reservation
}

// reservation is a placed VM's memory, counted against its host until
// the host's quick stats changed after the VM's power-on (then they count
// it), or the VM ended.
type reservation struct {
	mib       int64
	poweredOn time.Time // zero while starting
}

// usable: the host may take a new VM.
func (h *hostState) usable() bool {
	return h.conn == types.HostSystemConnectionStateConnected && h.power == types.HostSystemPowerStatePoweredOn && !h.maintenance
}

// reachable: the VMs on the host can be supervised. A host in maintenance
// mode is reachable: vSphere enters maintenance only once its VMs are
// moved or powered off, and the driver sees either through the VM.
func (h *hostState) reachable() bool {
	return h.conn == types.HostSystemConnectionStateConnected && h.power == types.HostSystemPowerStatePoweredOn
}

// freeMiB is the host's memory minus its usage and the reservations.
func (h *hostState) freeMiB() int64 {
	f := h.memMiB - h.usedMiB
	for _, r := range h.reserved {
		f -= r.mib
	}
	return f
}

// Placement says who chooses a VM's host: PlacementDRS when the compute
// resource is a cluster with DRS enabled (read at New), otherwise
// PlacementFreeMemory. For docker info, when the daemon uses this driver
// (not wired yet).
func (d *Driver) Placement() string {
	if d.drs {
		return PlacementDRS
	}
	return PlacementFreeMemory
}

// findPlacement reads whether the compute resource is a DRS cluster and
// makes the view of its hosts.
func (d *Driver) findPlacement(ctx context.Context) error {
	if d.cr.Reference().Type == "ClusterComputeResource" {
		var cc mo.ClusterComputeResource
		if err := d.cr.Properties(ctx, d.cr.Reference(), []string{"configurationEx"}, &cc); err != nil {
			return d.fail("cluster configuration", err)
		}
		if ex, ok := cc.ConfigurationEx.(*types.ClusterConfigInfoEx); ok && ex.DrsConfig.Enabled != nil && *ex.DrsConfig.Enabled {
			d.drs = true
		}
	}
	v, err := view.NewManager(d.client).CreateContainerView(ctx, d.cr.Reference(), []string{"HostSystem"}, true)
	if err != nil {
		return d.fail("view of the compute resource's hosts", err)
	}
	d.hostView = v
	d.hosts = map[types.ManagedObjectReference]*hostState{}
	return d.refreshHosts(ctx)
}

// refreshHosts reads the hosts' state in one call.
func (d *Driver) refreshHosts(ctx context.Context) error {
	hs, err := d.readHosts(ctx)
	if err != nil {
		return d.fail("hosts of "+d.cfg.ComputeResource, err)
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[types.ManagedObjectReference]bool{}
	for _, h := range hs {
		seen[h.Self] = true
		s := d.hosts[h.Self]
		if s == nil {
			s = &hostState{ref: h.Self, reserved: map[string]reservation{}}
			d.hosts[h.Self] = s
		}
		s.name = h.Name
		s.conn = h.Runtime.ConnectionState
		s.power = h.Runtime.PowerState
		s.maintenance = h.Runtime.InMaintenanceMode
		var used int64
		if h.Summary.Hardware != nil {
			s.memMiB = h.Summary.Hardware.MemorySize >> 20
		}
		used = int64(h.Summary.QuickStats.OverallMemoryUsage)
		if used != s.usedMiB && !d.hostsAt.IsZero() {
			// The stats changed: they count the VMs powered on before
			// the last read.
			for n, r := range s.reserved {
				if !r.poweredOn.IsZero() && r.poweredOn.Before(d.hostsAt) {
					delete(s.reserved, n)
				}
			}
		}
		s.usedMiB = used
	}
	for ref := range d.hosts {
		if !seen[ref] {
			delete(d.hosts, ref)
		}
	}
	d.hostsAt = now
	return nil
}

// readHosts reads hostProps of the compute resource's hosts through the
// host view. A view belongs to the session that made it: one gone with a
// lost session (ManagedObjectNotFound once relogin.go logged in again) is
// made anew, once.
func (d *Driver) readHosts(ctx context.Context) ([]mo.HostSystem, error) {
	d.viewMu.Lock()
	v := d.hostView
	d.viewMu.Unlock()
	var hs []mo.HostSystem
	err := v.Retrieve(ctx, []string{"HostSystem"}, hostProps, &hs)
	if err == nil || !fault.Is(err, &types.ManagedObjectNotFound{}) {
		return hs, err
	}
	nv, cerr := view.NewManager(d.client).CreateContainerView(ctx, d.cr.Reference(), []string{"HostSystem"}, true)
	if cerr != nil {
		return nil, err
	}
	d.viewMu.Lock()
	if d.hostView == v {
		d.hostView = nv
	} else { // another caller made one first
		_ = nv.Destroy(context.WithoutCancel(ctx))
		nv = d.hostView
	}
	d.viewMu.Unlock()
	hs = nil
	return hs, nv.Retrieve(ctx, []string{"HostSystem"}, hostProps, &hs)
}

// place chooses the host of a new VM of memMiB and reserves the memory
// there under name: nil under DRS (vSphere chooses). Otherwise the usable
// host (connected, powered on, not in maintenance) with the most free
// memory, its hardware memory minus its quick stats' usage minus the
// memory of the VMs this driver placed there that the stats may not count
// yet; ties go to the host with fewer of this driver's VMs, then to the
// first by name. It does not refuse a host short of memory (vSphere's
// admission control does). Unavailable if no host is usable.
func (d *Driver) place(ctx context.Context, name string, memMiB int64) (*object.HostSystem, error) {
	if d.drs {
		return nil, nil
	}
	d.mu.Lock()
	stale := time.Since(d.hostsAt) > hostsFresh
	d.mu.Unlock()
	if stale {
		if err := d.refreshHosts(ctx); err != nil {
			return nil, err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// How many of this driver's VMs each host has, starting or running.
	names := map[types.ManagedObjectReference]map[string]bool{}
	mark := func(h types.ManagedObjectReference, n string) {
		if names[h] == nil {
			names[h] = map[string]bool{}
		}
		names[h][n] = true
	}
	for _, v := range d.vms {
		if h := v.hostRef(); h != nil {
			mark(*h, v.name)
		}
	}
	for _, h := range d.hosts {
		for n := range h.reserved {
			mark(h.ref, n)
		}
	}
	before := func(a, b *hostState) bool {
		if fa, fb := a.freeMiB(), b.freeMiB(); fa != fb {
			return fa > fb
		}
		if ca, cb := len(names[a.ref]), len(names[b.ref]); ca != cb {
			return ca < cb
		}
		return a.name < b.name
	}
	var best *hostState
	for _, h := range d.hosts {
		if h.usable() && (best == nil || before(h, best)) {
			best = h
		}
	}
	if best == nil {
		return nil, fmt.Errorf("vsphere: no usable host in %s (connected, powered on, not in maintenance): %w", d.cfg.ComputeResource, errdefs.ErrUnavailable)
	}
	best.reserved[name] = reservation{mib: memMiB}
	return object.NewHostSystem(d.client, best.ref), nil
}

// placed marks name's reservation on host as powered on.
func (d *Driver) placed(host types.ManagedObjectReference, name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.hosts[host]; h != nil {
		if r, ok := h.reserved[name]; ok {
			r.poweredOn = time.Now()
			h.reserved[name] = r
		}
	}
}

// unreserve drops name's reservation, wherever it is.
func (d *Driver) unreserve(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range d.hosts {
		delete(h.reserved, name)
	}
}

// hostName is the name of the host ref, "" if unknown. d.mu held.
func (d *Driver) hostNameLocked(ref types.ManagedObjectReference) string {
	if h := d.hosts[ref]; h != nil {
		return h.name
	}
	return ""
}

// healthInterval is the period of the host poll: half the grace, within
// bounds.
func (d *Driver) healthInterval() time.Duration {
	return min(max(d.cfg.HostLostGrace/2, minHealthInterval), maxHealthInterval)
}

// health polls the hosts (one call per period) and ends, with
// ErrHostLost, the VMs whose host is unreachable or whose own
// connectionState is not "connected" for longer than the grace.
func (d *Driver) health() {
	defer d.wg.Done()
	t := time.NewTicker(d.healthInterval())
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(d.ctx, opTimeout)
		if err := d.refreshHosts(ctx); err != nil && d.ctx.Err() == nil {
			d.logger.Warn("reading hosts", "err", err)
		}
		cancel()
		for _, v := range d.lostVMs(time.Now()) {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				v.lose()
			}()
		}
	}
}

// lostVMs are the VMs unreachable for longer than the grace at now; it
// notes since when the others are.
func (d *Driver) lostVMs(now time.Time) []*vm {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lost []*vm
	for _, v := range d.vms {
		v.mu.Lock()
		bad := v.conn != "" && v.conn != types.VirtualMachineConnectionStateConnected
		if v.host != nil {
			if h := d.hosts[*v.host]; h != nil && !h.reachable() {
				bad = true
			}
		}
		switch {
		case !bad:
			v.lostSince = time.Time{}
		case v.lostSince.IsZero():
			v.lostSince = now
		case now.Sub(v.lostSince) >= d.cfg.HostLostGrace && !v.losing:
			v.losing = true
			lost = append(lost, v)
		}
		v.mu.Unlock()
	}
	slices.SortFunc(lost, func(a, b *vm) int { return cmp.Compare(a.name, b.name) })
	return lost
}
