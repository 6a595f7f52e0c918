package vsphere

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"path"
	"regexp"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
)

// validName is what Spec.Name may hold: it is the VM's name, where
// vSphere escapes '/', '\' and '%'.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// maxName is the longest VM name vSphere takes.
const maxName = 80

// validMAC is a unicast hardware address in colon form.
var validMAC = regexp.MustCompile(`^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$`)

// validSerial is what Disk.Serial may hold (empty included).
var validSerial = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)

// maxDisks is how many disks one paravirtual SCSI controller takes
// (units 0-15 but the controller's own 7).
const maxDisks = 15

// Well-known keys of the controllers every vSphere VM has.
const (
	ide0Key = 200
	sio0Key = 400
)

// Guestinfo keys the driver sets (see the package doc).
const (
	GuestinfoName          = "guestinfo.vch.name"
	GuestinfoCmdline       = "guestinfo.vch.cmdline"
	GuestinfoChannelName   = "guestinfo.vch.channel.name"
	GuestinfoChannelSecret = "guestinfo.vch.channel.secret"
	// ChannelSecretKey keeps the channel secret where the guest cannot
	// read it (the guest reads only guestinfo.* keys): tether overwrites
	// guestinfo's copy once it has read it, so that the container's
	// processes, which reach the backdoor too, cannot; Adopt reads this one.
	ChannelSecretKey = "vch.channel.secret"
	// GuestinfoChannelTLS "1" tells the guest to run TLS after its hello
	// (serialauth.GuestTLS); ChannelTLSKey "1", out of the guest's reach,
	// tells Adopt the same of a VM made before the key existed (neither
	// set: the channel is plain after the hello, as it was).
	GuestinfoChannelTLS = "guestinfo.vch.channel.tls"
	ChannelTLSKey       = "vch.channel.tls"
	// GuestinfoDisk, then a disk's index in Spec.Disks and ".serial" or
	// ".address": the disk's serial and its SCSI address, "scsi0:UNIT".
	GuestinfoDisk = "guestinfo.vch.disk."
)

// dsPath parses a datastore path "[DATASTORE] dir/file" whose file ends
// in ext.
func dsPath(s, ext string) (object.DatastorePath, bool) {
	var p object.DatastorePath
	if !p.FromString(s) || p.Datastore == "" || p.Path == "" || path.Ext(p.Path) != ext || path.Clean(p.Path) != p.Path || p.Path[0] == '/' {
		return p, false
	}
	return p, true
}

// validate checks spec against the contract and this driver's forms of
// disks, NICs and boot files; InvalidArgument for a bad one.
func validate(spec hypervisor.Spec) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("vsphere: "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	switch {
	case !validName.MatchString(spec.Name) || len(spec.Name) > maxName:
		return bad("VM name %q: want 1 to %d letters, digits, '_', '.', '-'", spec.Name, maxName)
	case spec.MemoryMiB < hypervisor.MinMemoryMiB || spec.MemoryMiB > hypervisor.MaxMemoryMiB:
		return bad("memory %d MiB outside %d..%d", spec.MemoryMiB, hypervisor.MinMemoryMiB, hypervisor.MaxMemoryMiB)
	case spec.CPUs < 1 || spec.CPUs > hypervisor.MaxCPUs:
		return bad("%d vCPUs outside 1..%d", spec.CPUs, hypervisor.MaxCPUs)
	case spec.ChannelName == "":
		return bad("spec has no channel name")
	case spec.Initrd != "":
		return bad("initrd %q: this driver boots an ISO (Kernel) that holds the initramfs; Initrd must be empty", spec.Initrd)
	case len(spec.Shares) > 0:
		return bad("%d shares: this driver has none (Capabilities.Shares)", len(spec.Shares))
	case len(spec.Disks) > maxDisks:
		return bad("%d disks: at most %d", len(spec.Disks), maxDisks)
	}
	if _, ok := dsPath(spec.Kernel, ".iso"); !ok {
		return bad("kernel %q: want the datastore path of a boot ISO, \"[DATASTORE] dir/file.iso\"", spec.Kernel)
	}
	for _, n := range spec.NICs {
		if !validMAC.MatchString(n.MAC) {
			return bad("NIC MAC %q: want a unicast MAC like 02:42:ac:11:00:02", n.MAC)
		}
	}
	for _, d := range spec.Disks {
		if d.Format != "vmdk" {
			return bad("disk %s: format %q: this driver takes vmdk", d.Path, d.Format)
		}
		if _, ok := dsPath(d.Path, ".vmdk"); !ok {
			return bad("disk %q: want a datastore path, \"[DATASTORE] dir/file.vmdk\"", d.Path)
		}
		if len(d.Serial) > hypervisor.MaxDiskSerial || !validSerial.MatchString(d.Serial) {
			return bad("disk %s: serial %q: want at most %d letters, digits, '-' or '_'", d.Path, d.Serial, hypervisor.MaxDiskSerial)
		}
	}
	return nil
}

// Start creates the VM in the VCH's pool and folder, powers it on and
// returns once its guest has connected the channel and proved it holds
// the VM's secret (see the package doc). The VM's host is vSphere's choice
// under DRS, otherwise the driver's (see Placement and the package doc);
// the VM's Host names it. InvalidArgument for a bad spec;
// FailedPrecondition before CreateVCH; AlreadyExists if a VM of that name
// runs; Unavailable if the boot ISO is missing, no host is usable,
// vSphere refuses the VM or
// the guest does not connect within the Config's ConnectTimeout or ctx
// (the VM is then destroyed, its disks kept).
func (d *Driver) Start(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	pool, folder, err := d.vch()
	if err != nil {
		return nil, err
	}
	if err := d.checkISO(ctx, spec.Kernel); err != nil {
		return nil, err
	}
	w, err := d.expect(spec.Name)
	if err != nil {
		return nil, err
	}
	defer d.unexpect(w)

	cs, err := d.configSpec(spec, w.secret)
	if err != nil {
		return nil, err
	}
	// vSphere calls run to their end even if ctx ends first, so that a
	// VM created late is known, and destroyed.
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	host, err := d.place(vctx, spec.Name, cs.MemoryMB)
	if err != nil {
		return nil, err
	}
	task, err := folder.CreateVM(vctx, cs, pool, host)
	var info *types.TaskInfo
	if err == nil {
		info, err = task.WaitForResult(vctx)
	}
	if err != nil {
		d.unreserve(spec.Name)
		err = d.fail("create VM "+spec.Name, err)
		if errdefs.IsAlreadyExists(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		d.unreserve(spec.Name)
		return nil, fmt.Errorf("vsphere: create VM %s: task result %T: %w", spec.Name, info.Result, errdefs.ErrUnavailable)
	}
	v := &vm{d: d, name: spec.Name, secret: w.secret, obj: object.NewVirtualMachine(d.client, ref), done: make(chan struct{})}
	if host != nil {
		h := host.Reference()
		v.host = &h
	}
	d.mu.Lock()
	d.vms[spec.Name] = v
	d.mu.Unlock()
	abort := func(err error) (hypervisor.VM, error) {
		if kerr := v.Kill(); kerr != nil {
			d.logger.Error("VM left behind after a failed start", "vm", spec.Name, "err", kerr)
		}
		return nil, err
	}
	task, err = v.obj.PowerOn(vctx)
	if err == nil {
		err = task.Wait(vctx)
	}
	if err != nil {
		return abort(fmt.Errorf("%w: %w", d.fail("power on "+spec.Name, err), errdefs.ErrUnavailable))
	}
	if host != nil {
		d.placed(host.Reference(), spec.Name)
	} else {
		// vSphere (DRS) chose; the watcher follows later moves.
		var o mo.VirtualMachine
		if err := v.obj.Properties(vctx, ref, []string{"runtime.host"}, &o); err == nil {
			v.setRuntime(o.Runtime.Host, "")
		}
	}
	d.follow(v)

	if err := d.awaitGuest(ctx, v, w, "start"); err != nil {
		if v.ended() {
			return nil, err
		}
		return abort(err)
	}
	d.logger.Info("vm started", "vm", spec.Name, "moref", ref.Value, "host", v.Host(), "placement", d.Placement())
	return v, nil
}

// awaitGuest waits for v's guest to say its hello on w (op, "start" or
// "adopt", names the wait in errors) and gives v its channel. Unavailable
// if the VM ends first (v ended), or the Config's ConnectTimeout, ctx or
// the driver ends first (v still running: the caller kills it).
func (d *Driver) awaitGuest(ctx context.Context, v *vm, w *waiter, op string) error {
	timer := time.NewTimer(d.cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case c := <-w.conn:
		if !v.setChannel(c) {
			return fmt.Errorf("vsphere: VM %s ended as its guest connected: %w: %w", v.name, v.Status().Err, errdefs.ErrUnavailable)
		}
		return nil
	case <-v.done:
		return fmt.Errorf("vsphere: VM %s ended before its guest connected: %w: %w", v.name, v.Status().Err, errdefs.ErrUnavailable)
	case <-timer.C:
		return fmt.Errorf("vsphere: VM %s: guest channel not connected within %s: %w", v.name, d.cfg.ConnectTimeout, errdefs.ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("vsphere: %s %s: %w: %w", op, v.name, ctx.Err(), errdefs.ErrUnavailable)
	case <-d.ctx.Done():
		return fmt.Errorf("vsphere: %s %s: driver closed: %w", op, v.name, errdefs.ErrUnavailable)
	}
}

// setChannel records the guest channel; false (and c closed) if the VM
// has ended or the driver closed.
func (v *vm) setChannel(c net.Conn) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.chClosed {
		c.Close()
		return false
	}
	v.channel = c
	return true
}

// checkISO checks that the boot ISO exists; Unavailable if not.
func (d *Driver) checkISO(ctx context.Context, iso string) error {
	p, _ := dsPath(iso, ".iso")
	ds, err := find.NewFinder(d.client, false).SetDatacenter(d.dc).Datastore(ctx, p.Datastore)
	if err == nil {
		_, err = ds.Stat(ctx, p.Path)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", d.fail("boot ISO "+iso, err), errdefs.ErrUnavailable)
	}
	return nil
}

// configSpec is the VM of spec: see the package doc.
func (d *Driver) configSpec(spec hypervisor.Spec, secret []byte) (types.VirtualMachineConfigSpec, error) {
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return types.VirtualMachineConfigSpec{}, fmt.Errorf("vsphere: SCSI controller: %w", err)
	}
	devices = append(devices, scsi)
	ctrl := scsi.(types.BaseVirtualController).GetVirtualController()
	var change []types.BaseVirtualDeviceConfigSpec
	add := func(dev types.BaseVirtualDevice) {
		change = append(change, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dev})
	}
	add(scsi)

	extra := []types.BaseOptionValue{
		&types.OptionValue{Key: GuestinfoName, Value: spec.Name},
		&types.OptionValue{Key: GuestinfoCmdline, Value: spec.Cmdline},
		&types.OptionValue{Key: GuestinfoChannelName, Value: spec.ChannelName},
		&types.OptionValue{Key: GuestinfoChannelSecret, Value: hex.EncodeToString(secret)},
		&types.OptionValue{Key: ChannelSecretKey, Value: hex.EncodeToString(secret)},
		&types.OptionValue{Key: GuestinfoChannelTLS, Value: "1"},
		&types.OptionValue{Key: ChannelTLSKey, Value: "1"},
	}
	d.mu.Lock()
	chains := make([]*types.VirtualDiskFlatVer2BackingInfo, len(spec.Disks))
	for i, disk := range spec.Disks {
		chains[i] = d.chains[disk.Path]
	}
	d.mu.Unlock()
	for i, disk := range spec.Disks {
		unit := int32(i)
		if unit >= 7 { // the controller's own unit
			unit++
		}
		mode := types.VirtualDiskModePersistent
		if disk.ReadOnly {
			mode = types.VirtualDiskModeIndependent_nonpersistent
		}
		b := &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: disk.Path},
			DiskMode:                     string(mode),
			Parent:                       chains[i],
		}
		vd := &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: devices.NewKey(), ControllerKey: ctrl.Key, UnitNumber: &unit, Backing: b}}
		devices = append(devices, vd)
		ctrl.Device = append(ctrl.Device, vd.Key)
		add(vd) // no file operation: the disk exists
		if disk.Serial != "" {
			n := strconv.Itoa(i)
			extra = append(extra,
				&types.OptionValue{Key: GuestinfoDisk + n + ".serial", Value: disk.Serial},
				&types.OptionValue{Key: GuestinfoDisk + n + ".address", Value: fmt.Sprintf("scsi0:%d", unit)})
		}
	}
	if len(spec.NICs) > 0 && d.nicBack == nil {
		return types.VirtualMachineConfigSpec{}, fmt.Errorf("vsphere: spec %s has NICs but the driver has no bridge portgroup (Config.BridgePortgroup): %w", spec.Name, errdefs.ErrFailedPrecondition)
	}
	for _, n := range spec.NICs {
		dev, err := devices.CreateEthernetCard("vmxnet3", d.nicBack)
		if err != nil {
			return types.VirtualMachineConfigSpec{}, fmt.Errorf("vsphere: NIC: %w", err)
		}
		card := dev.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		card.Key = devices.NewKey()
		card.AddressType = string(types.VirtualEthernetCardMacTypeManual)
		card.MacAddress = n.MAC
		card.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: true, Connected: true}
		devices = append(devices, dev)
		add(dev)
	}
	zero := int32(0)
	cdrom := &types.VirtualCdrom{VirtualDevice: types.VirtualDevice{
		Key: devices.NewKey(), ControllerKey: ide0Key, UnitNumber: &zero,
		Backing:     &types.VirtualCdromIsoBackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: spec.Kernel}},
		Connectable: &types.VirtualDeviceConnectInfo{StartConnected: true, Connected: true},
	}}
	devices = append(devices, cdrom)
	add(cdrom)
	serial := &types.VirtualSerialPort{
		VirtualDevice: types.VirtualDevice{
			Key: devices.NewKey(), ControllerKey: sio0Key, UnitNumber: &zero,
			Backing: &types.VirtualSerialPortURIBackingInfo{VirtualDeviceURIBackingInfo: types.VirtualDeviceURIBackingInfo{
				Direction: string(types.VirtualDeviceURIBackingOptionDirectionClient), ServiceURI: d.channel,
			}},
			Connectable: &types.VirtualDeviceConnectInfo{StartConnected: true, Connected: true},
		},
		YieldOnPoll: true,
	}
	devices = append(devices, serial)
	add(serial)

	return types.VirtualMachineConfigSpec{
		Name:         spec.Name,
		GuestId:      string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
		NumCPUs:      int32(spec.CPUs),
		MemoryMB:     int64(spec.MemoryMiB+3) / 4 * 4, // vSphere takes multiples of 4 MiB
		Annotation:   "vch container VM",
		Files:        &types.VirtualMachineFileInfo{VmPathName: "[" + d.ds.Name() + "]"},
		DeviceChange: change,
		ExtraConfig:  extra,
		BootOptions: &types.VirtualMachineBootOptions{BootOrder: []types.BaseVirtualMachineBootOptionsBootableDevice{
			&types.VirtualMachineBootOptionsBootableCdromDevice{},
		}},
	}, nil
}
