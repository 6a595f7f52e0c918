package vsphere

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
)

// Adopt implements [hypervisor.Adopter]: it takes back the powered-on VM
// named spec.Name in the VCH's folder, started by an earlier driver (the
// daemon stopped or died; the VM ran on in vSphere). Only spec.Name is
// used.
//
// The VM's serial port is pointed at this driver's listener, whose
// address may differ from the last one's: vSphere changes the backing
// of a powered-on VM's serial port only while the port is disconnected,
// so the port is disconnected, then given this listener's URI and
// connected again, and its ESX host connects it anew. The guest (tether)
// saw its session end and says its hello again (package serialauth);
// the secret it proves is the one in the VM's guestinfo, read back from
// vSphere, so nothing of the VM's is kept on the VCH host.
//
// NotFound if the folder has no VM of that name or it is not powered on.
// AlreadyExists if this driver already runs or starts a VM of that name.
// Unavailable if vSphere refuses a call or the guest does not connect
// within the Config's ConnectTimeout or ctx: the VM is then killed
// (powered off and destroyed, its disks kept), so that no VM runs that
// nobody supervises. FailedPrecondition before the VCH is found.
func (d *Driver) Adopt(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	if !validName.MatchString(spec.Name) || len(spec.Name) > maxName {
		return nil, fmt.Errorf("vsphere: VM name %q: %w", spec.Name, errdefs.ErrNotFound)
	}
	_, folder, err := d.vch()
	if err != nil {
		return nil, err
	}
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	o, err := d.findVM(vctx, folder, spec.Name)
	if err != nil {
		return nil, err
	}
	if o.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || o.Config == nil {
		return nil, fmt.Errorf("vsphere: VM %s is %s: %w", spec.Name, o.Runtime.PowerState, errdefs.ErrNotFound)
	}
	// The secret out of the guest's reach; guestinfo's copy, which the
	// guest overwrites, for a VM of a driver that kept no other.
	var secretHex, guestHex string
	var useTLS bool
	for _, b := range o.Config.ExtraConfig {
		switch ov := b.GetOptionValue(); ov.Key {
		case ChannelSecretKey:
			secretHex, _ = ov.Value.(string)
		case GuestinfoChannelSecret:
			guestHex, _ = ov.Value.(string)
		case ChannelTLSKey:
			useTLS = ov.Value == "1"
		}
	}
	if secretHex == "" {
		secretHex = guestHex
	}
	secret, err := hex.DecodeString(secretHex)
	if err != nil || len(secret) != secretBytes {
		return nil, fmt.Errorf("vsphere: VM %s has no channel secret in its configuration: not one of this driver's: %w", spec.Name, errdefs.ErrNotFound)
	}
	w, err := d.expectSecret(spec.Name, secret, useTLS)
	if err != nil {
		return nil, err
	}
	defer d.unexpect(w)

	v := &vm{d: d, name: spec.Name, secret: secret, obj: object.NewVirtualMachine(d.client, o.Self), done: make(chan struct{})}
	v.setRuntime(o.Runtime.Host, o.Runtime.ConnectionState)
	d.mu.Lock()
	d.vms[spec.Name] = v
	d.mu.Unlock()
	abort := func(err error) (hypervisor.VM, error) {
		if kerr := v.Kill(); kerr != nil {
			d.logger.Error("VM left behind after a failed adoption", "vm", spec.Name, "err", kerr)
		}
		return nil, err
	}
	d.follow(v)
	if err := d.reconnectSerial(vctx, v.obj, o.Config.Hardware.Device); err != nil {
		return abort(fmt.Errorf("%w: %w", d.fail("reconnect the serial port of "+spec.Name, err), errdefs.ErrUnavailable))
	}
	if err := d.awaitGuest(ctx, v, w, "adopt"); err != nil {
		if v.ended() {
			return nil, err
		}
		return abort(err)
	}
	d.logger.Info("vm adopted", "vm", spec.Name, "moref", o.Self.Value, "host", v.Host())
	return v, nil
}

// findVM reads the VM named name in folder (not beneath it): through a
// container view, not an inventory path (vcsim's SearchIndex can hang on
// a folder where a VM is being created). NotFound if there is none.
func (d *Driver) findVM(ctx context.Context, folder *object.Folder, name string) (mo.VirtualMachine, error) {
	var o mo.VirtualMachine
	v, err := view.NewManager(d.client).CreateContainerView(ctx, folder.Reference(), []string{"VirtualMachine"}, false)
	if err != nil {
		return o, fmt.Errorf("%w: %w", d.fail("list VMs", err), errdefs.ErrUnavailable)
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	refs, err := v.Find(ctx, []string{"VirtualMachine"}, property.Match{"name": name})
	if err != nil {
		return o, fmt.Errorf("%w: %w", d.fail("find VM "+name, err), errdefs.ErrUnavailable)
	}
	if len(refs) == 0 {
		return o, fmt.Errorf("vsphere: no VM %s in the VCH's folder: %w", name, errdefs.ErrNotFound)
	}
	props := []string{"name", "config.extraConfig", "config.hardware.device", "runtime.powerState", "runtime.host", "runtime.connectionState"}
	if err := d.collector().RetrieveOne(ctx, refs[0], props, &o); err != nil {
		if isNotFound(err) {
			return o, fmt.Errorf("vsphere: VM %s: %w", name, errdefs.ErrNotFound)
		}
		return o, fmt.Errorf("%w: %w", d.fail("read VM "+name, err), errdefs.ErrUnavailable)
	}
	return o, nil
}

// reconnectSerial points the network-backed serial port among devices at
// this driver's listener: disconnected, then given the URI and connected
// (vSphere refuses a new backing on a connected port of a powered-on VM).
func (d *Driver) reconnectSerial(ctx context.Context, obj *object.VirtualMachine, devices []types.BaseVirtualDevice) error {
	var port *types.VirtualSerialPort
	for _, dev := range devices {
		if p, ok := dev.(*types.VirtualSerialPort); ok {
			if _, ok := p.Backing.(*types.VirtualSerialPortURIBackingInfo); ok {
				port = p
			}
		}
	}
	if port == nil {
		return fmt.Errorf("no network-backed serial port")
	}
	edit := func(p *types.VirtualSerialPort) error {
		t, err := obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: p},
		}})
		if err == nil {
			err = t.Wait(ctx)
		}
		return err
	}
	if port.Connectable == nil {
		port.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: true}
	}
	port.Connectable.Connected = false
	if err := edit(port); err != nil {
		return err
	}
	port.Backing.(*types.VirtualSerialPortURIBackingInfo).ServiceURI = d.channel
	port.Connectable.Connected = true
	return edit(port)
}
