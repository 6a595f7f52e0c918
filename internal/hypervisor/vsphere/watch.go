package vsphere

import (
	"context"
	"errors"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// The watcher follows every powered-on VM of the driver with one stream:
// a list view holding the VCH's VM folder, one property filter that
// traverses from it to the folder's children (ListView.view, then
// Folder.childEntity) for watchProps, and one WaitForUpdatesEx loop on a
// property collector of its own, which dispatches each update to its VM
// by moref. A VM's end is then one update in one stream and one long
// poll carries all of them, whatever the number of VMs (a watcher per VM
// held a collector, a filter and a connection each; see docs/vsphere.md,
// "Plan past one machine").
//
// Why a list view of the folder and not a container view of its VMs:
// the filter's root object must be one that creating or destroying a VM
// does not change. vcsim (v0.52.0 to v0.55.0, the versions served here)
// takes a filter's lock and then its root's lock when it re-walks a root
// that changed, and the root's lock and then the filter's when it marks
// the root changed; a container view of the VMs changes with every
// CreateVM, and concurrent creates deadlocked the simulator that way
// (TestPlacementSpreads, about one run in ten). The list view never
// changes, and new VMs still enter the filter through the folder's
// childEntity, on vCenter as in vcsim.

// follow hands v, just powered on, to the watcher, starting it on first
// use. A power-off between the power-on and now is caught by one direct
// read: the stream drops updates of VMs it does not follow yet.
func (d *Driver) follow(v *vm) {
	d.mu.Lock()
	d.watched[v.obj.Reference()] = v
	start := !d.watching && d.folder != nil
	if start {
		d.watching = true
		d.wg.Add(1)
	}
	folder := d.folder
	d.mu.Unlock()
	if start {
		go d.watch(folder.Reference())
	}
	d.check(v)
}

// check has v's power state read directly, ending v if it is off or
// gone.
func (d *Driver) check(v *vm) { v.poweredOff(nil) }

// watch runs the stream over the folder's VMs until the driver closes;
// a broken stream (network, session) is made again after a second, and
// every followed VM is read directly meanwhile, so no end is missed.
func (d *Driver) watch(folder types.ManagedObjectReference) {
	defer d.wg.Done()
	ctx := d.ctx
	for ctx.Err() == nil {
		err := d.stream(ctx, folder)
		if ctx.Err() != nil {
			return
		}
		d.logger.Warn("watching VMs", "err", d.creds.redact(err.Error()))
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
		d.mu.Lock()
		vms := make([]*vm, 0, len(d.watched))
		for _, v := range d.watched {
			vms = append(vms, v)
		}
		d.mu.Unlock()
		for _, v := range vms {
			d.check(v)
		}
	}
}

// stream is one view, filter and update loop; it returns why it broke.
func (d *Driver) stream(ctx context.Context, folder types.ManagedObjectReference) error {
	v, err := view.NewManager(d.client).CreateListView(ctx, []types.ManagedObjectReference{folder})
	if err != nil {
		return err
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	filter := new(property.WaitFilter).Add(v.Reference(), "VirtualMachine", watchProps, &types.TraversalSpec{
		Type: "ListView",
		Path: "view",
		Skip: types.NewBool(true),
		SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{
			Type: "Folder",
			Path: "childEntity",
		}},
	})
	filter.Spec.ObjectSet[0].Skip = types.NewBool(true)
	pc, err := d.collector().Create(ctx)
	if err != nil {
		return err
	}
	defer pc.Destroy(context.WithoutCancel(ctx))
	if _, err := pc.CreateFilter(ctx, filter.CreateFilter); err != nil {
		return err
	}
	// Each long poll is bounded (streamWaitSeconds), so one whose client
	// went (a daemon killed, its request cut) ends on the server soon;
	// an empty answer only means nothing changed, and the next poll goes
	// on from the same version.
	req := types.WaitForUpdatesEx{This: pc.Reference(), Options: &types.WaitOptions{MaxWaitSeconds: types.NewInt32(streamWaitSeconds)}}
	for {
		res, err := methods.WaitForUpdatesEx(ctx, d.client, &req)
		if err != nil {
			if ctx.Err() != nil {
				_ = pc.CancelWaitForUpdates(context.WithoutCancel(ctx))
				return ctx.Err()
			}
			return err
		}
		set := res.Returnval
		if set == nil {
			continue
		}
		req.Version = set.Version
		for _, fs := range set.FilterSet {
			d.dispatch(fs.ObjectSet)
		}
	}
}

// streamWaitSeconds bounds one long poll of the watcher's stream.
const streamWaitSeconds = 10

// dispatch hands each update to its VM.
func (d *Driver) dispatch(updates []types.ObjectUpdate) {
	for _, u := range updates {
		d.mu.Lock()
		vm := d.watched[u.Obj]
		d.mu.Unlock()
		if vm == nil {
			continue // not started by this driver, or not powered on yet
		}
		if u.Kind == types.ObjectUpdateKindLeave {
			vm.poweredOff(ErrRemoved)
			continue
		}
		for _, c := range u.ChangeSet {
			switch c.Name {
			case "runtime.powerState":
				// An update may be stale (a VM enters the view powered
				// off when it is created, and that update can come after
				// its power-on; vcsim reports objects as entering again
				// as the view changes): poweredOff reads the state
				// itself before it ends the VM.
				if c.Val == types.VirtualMachinePowerStatePoweredOff {
					vm.poweredOff(nil)
				}
			case "runtime.host":
				if h, ok := c.Val.(types.ManagedObjectReference); ok {
					vm.setRuntime(&h, "")
				}
			case "runtime.connectionState":
				if cs, ok := c.Val.(types.VirtualMachineConnectionState); ok {
					vm.setRuntime(nil, cs)
				}
			}
		}
	}
}

// poweredOff ends v, seen powered off (why nil: the state is read again,
// and the reason from its exit mark) or removed (ErrRemoved), unless
// Kill is ending it; once. The end's vSphere calls run on their own
// goroutine, off the stream.
func (v *vm) poweredOff(why error) {
	if v.ended() || v.killing.Load() {
		return
	}
	// An update that comes while a read runs must not be lost: the
	// running read looks again.
	v.offAgain.Store(true)
	if !v.offSeen.CompareAndSwap(false, true) {
		return
	}
	v.d.wg.Add(1)
	go func() {
		defer v.d.wg.Done()
		ctx, cancel := context.WithTimeout(v.d.ctx, opTimeout)
		defer cancel()
		for why == nil {
			v.offAgain.Store(false)
			var o mo.VirtualMachine
			err := v.obj.Properties(ctx, v.obj.Reference(), []string{"runtime.powerState"}, &o)
			switch {
			case isNotFound(err):
				why = ErrRemoved
			case err != nil || o.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff:
				// A stale update (or vSphere did not answer: the stream
				// or a later check brings the next state).
				v.offSeen.Store(false)
				if v.offAgain.Load() && v.offSeen.CompareAndSwap(false, true) {
					continue
				}
				return
			default:
				why = v.exitReason(ctx)
				if why == nil {
					why = errGuestPowerOff
				}
			}
		}
		if errors.Is(why, errGuestPowerOff) {
			why = nil
		}
		if v.killing.Load() {
			v.offSeen.Store(false)
			return // Kill ends it
		}
		if err := v.end(ctx, why); err != nil {
			v.d.logger.Warn("ending VM", "vm", v.name, "err", err)
			v.offSeen.Store(false)
		}
	}()
}

// errGuestPowerOff stands for a nil reason (the guest's own power-off)
// inside poweredOff's loop.
var errGuestPowerOff = errors.New("the guest powered off")
