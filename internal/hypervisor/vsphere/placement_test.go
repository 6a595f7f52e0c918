package vsphere

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
)

// cluster is the simulator's cluster.
func (e *sim) cluster() *object.ClusterComputeResource {
	e.t.Helper()
	c, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).ClusterComputeResource(e.t.Context(), simCluster)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// setDRS enables or disables DRS on the cluster.
func (e *sim) setDRS(on bool) {
	e.t.Helper()
	ctx := e.t.Context()
	t, err := e.cluster().Reconfigure(ctx, &types.ClusterConfigSpecEx{DrsConfig: &types.ClusterDrsConfigInfo{Enabled: types.NewBool(on)}}, true)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		e.t.Fatalf("set DRS %v: %v", on, err)
	}
}

// hosts are the cluster's hosts by name.
func (e *sim) hosts() map[string]*object.HostSystem {
	e.t.Helper()
	hs, err := e.cluster().Hosts(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]*object.HostSystem{}
	for _, h := range hs {
		name, err := h.ObjectName(e.t.Context())
		if err != nil {
			e.t.Fatal(err)
		}
		m[name] = h
	}
	return m
}

// runtimeHost is the name of the host vSphere says the VM named name
// runs on.
func (e *sim) runtimeHost(name string) string {
	e.t.Helper()
	o := e.vmConfig(e.vm(name))
	if o.Runtime.Host == nil {
		return ""
	}
	var h mo.HostSystem
	if err := e.vm(name).Properties(e.t.Context(), *o.Runtime.Host, []string{"name"}, &h); err != nil {
		e.t.Fatal(err)
	}
	return h.Name
}

// startMany starts n VMs named prefix-i, conc at a time, with fake
// guests; it fails the test on the first error.
func (e *sim) startMany(d *Driver, prefix string, n, conc int) []started {
	e.t.Helper()
	out := make([]started, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range next {
				ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
				out[i], errs[i] = e.tryStartWith(ctx, d, spec(fmt.Sprintf("%s-%d", prefix, i)), true)
				cancel()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// hostOf is the VM's host as the driver says.
func hostOf(t testing.TB, v hypervisor.VM) string {
	t.Helper()
	p, ok := v.(hypervisor.Placer)
	if !ok {
		t.Fatalf("%T is no hypervisor.Placer", v)
	}
	return p.Host()
}

// TestPlacementSpreads: without DRS, 100 Starts, 8 at a time, spread
// over the cluster's 4 hosts by free memory. vcsim's hosts have equal
// memory and quick stats that never change, so the driver's own
// reservations are all that differ: the choice, made under one lock with
// each VM's memory reserved at once, is a greedy fill of equal hosts
// with equal VMs, and no host may hold more than one VM more than
// another (25 each).
func TestPlacementSpreads(t *testing.T) {
	e := newSim(t)
	e.setDRS(false)
	d := e.vch()
	if got := d.Placement(); got != PlacementFreeMemory {
		t.Fatalf("Placement %q, want %q", got, PlacementFreeMemory)
	}
	hosts := e.hosts()
	if len(hosts) < 4 {
		t.Fatalf("%d hosts", len(hosts))
	}
	t0 := time.Now()
	vms := e.startMany(d, "spread", 100, 8)
	t.Logf("100 Starts, 8 at a time: %s", time.Since(t0).Round(time.Millisecond))
	count := map[string]int{}
	for i, s := range vms {
		h := hostOf(t, s.vm)
		if _, ok := hosts[h]; !ok {
			t.Fatalf("VM %d on %q, not a host of the cluster", i, h)
		}
		if i%10 == 0 { // vSphere agrees (sampled: each check is a few calls)
			if rh := e.runtimeHost(fmt.Sprintf("spread-%d", i)); rh != h {
				t.Errorf("VM %d: driver says host %s, vSphere %s", i, h, rh)
			}
		}
		count[h]++
	}
	var ns []int
	for h := range hosts {
		if count[h] == 0 {
			t.Errorf("host %s got no VM: %v", h, count)
		}
		ns = append(ns, count[h])
	}
	if lo, hi := slices.Min(ns), slices.Max(ns); hi-lo > 1 {
		t.Errorf("spread %v: max-min %d, want at most 1", count, hi-lo)
	}
	t.Logf("spread: %v", count)
	killAll(t, vms, 8)
}

// TestPlacementDRS: with DRS enabled (vcsim's default) vSphere chooses:
// VMs are created, and Host names the host vSphere says.
func TestPlacementDRS(t *testing.T) {
	e := newSim(t)
	d := e.vch()
	if got := d.Placement(); got != PlacementDRS {
		t.Fatalf("Placement %q, want %q", got, PlacementDRS)
	}
	hosts := e.hosts()
	for i, s := range e.startMany(d, "drs", 8, 4) {
		h := hostOf(t, s.vm)
		if _, ok := hosts[h]; !ok {
			t.Fatalf("VM %d: Host %q, not a host of the cluster", i, h)
		}
		if rh := e.runtimeHost(fmt.Sprintf("drs-%d", i)); rh != h {
			t.Errorf("VM %d: driver says host %s, vSphere %s", i, h, rh)
		}
	}
}

// TestHostLost: a host disconnected with VMs of the driver on it: they
// end with ErrHostLost within the grace and a poll or two, the others
// keep running, and no new VM goes there; a host in maintenance mode
// takes no new VM but keeps its VMs; reconnected, a host takes VMs again.
func TestHostLost(t *testing.T) {
	e := newSim(t)
	e.setDRS(false)
	const grace = 300 * time.Millisecond
	d := e.driver(func(c *Config) { c.HostLostGrace = grace })
	if err := d.CreateVCH(t.Context()); err != nil {
		t.Fatal(err)
	}
	vms := e.startMany(d, "lost", 8, 4)
	on := map[string][]started{}
	for _, s := range vms {
		on[hostOf(t, s.vm)] = append(on[hostOf(t, s.vm)], s)
	}
	hosts := e.hosts()
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	lost, maint := names[0], names[1]
	if len(on[lost]) == 0 || len(on[maint]) == 0 {
		t.Fatalf("placement left %s or %s empty: %v", lost, maint, on)
	}
	ctx := t.Context()
	task := func(t *object.Task, err error) {
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			e.t.Fatal(err)
		}
	}
	task(hosts[lost].Disconnect(ctx))
	task(hosts[maint].EnterMaintenanceMode(ctx, 0, false, nil))
	t0 := time.Now()
	for _, s := range on[lost] {
		if !closedWithin(s.vm.Done(), grace+5*time.Second) {
			t.Fatalf("VM on the disconnected host %s still running after %s", lost, time.Since(t0))
		}
		if err := s.vm.Status().Err; !errors.Is(err, ErrHostLost) {
			t.Errorf("VM on the disconnected host: Err %v, want ErrHostLost", err)
		}
	}
	t.Logf("VMs of the lost host ended %s after the disconnect (grace %s)", time.Since(t0).Round(time.Millisecond), grace)
	if since := time.Since(t0); since < grace {
		t.Errorf("ended after %s, within the grace %s", since, grace)
	}
	for h, ss := range on {
		if h == lost {
			continue
		}
		for _, s := range ss {
			if closedWithin(s.vm.Done(), 0) {
				t.Errorf("VM on %s ended: %v", h, s.vm.Status().Err)
			}
		}
	}
	for _, s := range e.startMany(d, "after", 6, 3) {
		if h := hostOf(t, s.vm); h == lost || h == maint {
			t.Errorf("new VM placed on %s (disconnected %s, maintenance %s)", h, lost, maint)
		}
	}
	task(hosts[lost].Reconnect(ctx, nil, nil))
	task(hosts[maint].ExitMaintenanceMode(ctx, 0))
	time.Sleep(hostsFresh + 50*time.Millisecond) // the host table is read again
	got := map[string]bool{}
	for _, s := range e.startMany(d, "back", 4, 1) {
		got[hostOf(t, s.vm)] = true
	}
	if !got[lost] || !got[maint] {
		t.Errorf("after reconnect and maintenance exit, new VMs went to %v, want %s and %s among them", got, lost, maint)
	}
}

// killAll kills the VMs, conc at a time (Cleanup would kill them one by
// one).
func killAll(t testing.TB, vms []started, conc int) {
	t.Helper()
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for _, s := range vms {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.vm.Kill(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
