package vsphere

import (
	"context"
	"fmt"
	"path"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
)

var _ hypervisor.Driver = (*Driver)(nil)

// HelperVM is the name of the VCH's powered-off VM that CreateOverlay
// makes delta disks on. No Spec.Name can take it (a name starts with a
// letter or digit).
const HelperVM = "_vch-disks"

// CreateOverlay creates a delta disk at path (a datastore path
// "[DATASTORE] dir/file.vmdk", its directory made if missing) whose
// parent is base, a vmdk: a vSphere child disk, never a copy (see the
// package doc). It has the base's capacity: sizeBytes must be 0
// (NotImplemented otherwise: vSphere cannot grow a delta disk). Returns
// the new disk, Format "vmdk". InvalidArgument for bad paths or formats;
// FailedPrecondition before CreateVCH; AlreadyExists if path exists;
// NotFound if base does not; Unavailable if vSphere fails or does not
// chain the disk.
func (d *Driver) CreateOverlay(ctx context.Context, base hypervisor.Disk, path string, sizeBytes int64) (hypervisor.Disk, error) {
	if base.Format != "vmdk" {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: overlay base %s: format %q: want vmdk: %w", base.Path, base.Format, errdefs.ErrInvalidArgument)
	}
	if _, ok := dsPath(base.Path, ".vmdk"); !ok {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: overlay base %q: want \"[DATASTORE] dir/file.vmdk\": %w", base.Path, errdefs.ErrInvalidArgument)
	}
	child, ok := dsPath(path, ".vmdk")
	if !ok {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: overlay %q: want \"[DATASTORE] dir/file.vmdk\": %w", path, errdefs.ErrInvalidArgument)
	}
	if sizeBytes != 0 {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: overlay %s of %d bytes: a delta disk has its parent's capacity: %w", path, sizeBytes, errdefs.ErrNotImplemented)
	}
	if _, _, err := d.vch(); err != nil {
		return hypervisor.Disk{}, err
	}
	ds, err := find.NewFinder(d.client, false).SetDatacenter(d.dc).Datastore(ctx, child.Datastore)
	if err != nil {
		return hypervisor.Disk{}, d.fail("overlay datastore", err)
	}
	bp, _ := dsPath(base.Path, ".vmdk")
	bds, err := find.NewFinder(d.client, false).SetDatacenter(d.dc).Datastore(ctx, bp.Datastore)
	if err == nil {
		_, err = bds.Stat(ctx, bp.Path)
	}
	if err != nil {
		return hypervisor.Disk{}, d.fail("overlay base "+base.Path, err)
	}
	if _, err := ds.Stat(ctx, child.Path); err == nil {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: overlay %s exists: %w", path, errdefs.ErrAlreadyExists)
	} else if !isNotFound(err) {
		return hypervisor.Disk{}, d.fail("overlay "+path, err)
	}
	if dir := pathDir(child); dir != "" {
		if err := object.NewFileManager(d.client).MakeDirectory(ctx, ds.Path(dir), d.dc, true); err != nil && !isAlreadyExists(err) {
			return hypervisor.Disk{}, d.fail("overlay directory", err)
		}
	}

	d.mu.Lock()
	parent := &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: base.Path},
		DiskMode:                     string(types.VirtualDiskModePersistent),
		Parent:                       d.chains[base.Path], // an overlay's overlay
	}
	d.mu.Unlock()

	d.helperMu.Lock()
	defer d.helperMu.Unlock()
	// Like Start's, these calls run to their end so nothing is left half made.
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	helper, ctrlKey, err := d.helper(vctx)
	if err != nil {
		return hypervisor.Disk{}, err
	}
	unit := int32(0)
	disk := &types.VirtualDisk{VirtualDevice: types.VirtualDevice{
		Key: -1, ControllerKey: ctrlKey, UnitNumber: &unit,
		Backing: &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: path, Datastore: types.NewReference(ds.Reference())},
			DiskMode:                     string(types.VirtualDiskModePersistent),
			ThinProvisioned:              types.NewBool(true),
			Parent:                       parent,
		},
	}}
	task, err := helper.Reconfigure(vctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{
			Operation:     types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
			Device:        disk,
		},
	}})
	if err == nil {
		err = task.Wait(vctx)
	}
	if err != nil {
		err = d.fail("create overlay "+path+" over "+base.Path, err)
		if errdefs.IsNotFound(err) || errdefs.IsAlreadyExists(err) {
			return hypervisor.Disk{}, err
		}
		return hypervisor.Disk{}, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}

	// Check what vSphere made, then detach it, keeping the file.
	devices, err := helper.Device(vctx)
	if err != nil {
		return hypervisor.Disk{}, d.fail("overlay "+path, err)
	}
	var made *types.VirtualDisk
	for _, dev := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		vd := dev.(*types.VirtualDisk)
		if b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && b.FileName == path {
			made = vd
		}
	}
	if made == nil {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: overlay %s: not on the helper VM after its creation: %w", path, errdefs.ErrUnavailable)
	}
	b := made.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	chained := b.Parent != nil && b.Parent.FileName == base.Path
	fop := types.VirtualDeviceConfigSpecFileOperation("") // keep the file
	if !chained {
		fop = types.VirtualDeviceConfigSpecFileOperationDestroy
	}
	task, err = helper.Reconfigure(vctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, FileOperation: fop, Device: made},
	}})
	if err == nil {
		err = task.Wait(vctx)
	}
	if err != nil {
		return hypervisor.Disk{}, fmt.Errorf("%w: %w", d.fail("detach overlay "+path+" from the helper VM", err), errdefs.ErrUnavailable)
	}
	if !chained {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: overlay %s: vSphere did not make it a child of %s (deleted): %w", path, base.Path, errdefs.ErrUnavailable)
	}
	d.mu.Lock()
	d.chains[path] = parent
	d.mu.Unlock()
	return hypervisor.Disk{Path: path, Format: "vmdk"}, nil
}

// pathDir is the directory part of p's path, "" at the datastore's root.
func pathDir(p object.DatastorePath) string {
	if dir := path.Dir(p.Path); dir != "." {
		return dir
	}
	return ""
}

func isAlreadyExists(err error) bool {
	return err != nil && errdefs.IsAlreadyExists(classify(err))
}

// helper finds or creates the VCH's helper VM, and returns it with the
// key of its SCSI controller. The caller holds helperMu.
func (d *Driver) helper(ctx context.Context) (*object.VirtualMachine, int32, error) {
	pool, folder, err := d.vch()
	if err != nil {
		return nil, 0, err
	}
	var vm *object.VirtualMachine
	ref, err := object.NewSearchIndex(d.client).FindChild(ctx, folder, HelperVM)
	switch {
	case err != nil:
	case ref == nil:
		vm, err = d.createHelper(ctx, pool, folder)
	default:
		vm = object.NewVirtualMachine(d.client, ref.Reference())
	}
	if err != nil {
		return nil, 0, d.fail("helper VM", err)
	}
	devices, err := vm.Device(ctx)
	if err != nil {
		return nil, 0, d.fail("helper VM devices", err)
	}
	c, err := devices.FindSCSIController("")
	if err != nil {
		return nil, 0, fmt.Errorf("vsphere: helper VM %s: %w: %w", HelperVM, err, errdefs.ErrUnavailable)
	}
	return vm, c.Key, nil
}

// createHelper creates the powered-off helper VM: one vCPU, the least
// memory, a SCSI controller and nothing else.
func (d *Driver) createHelper(ctx context.Context, pool *object.ResourcePool, folder *object.Folder) (*object.VirtualMachine, error) {
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, err
	}
	spec := types.VirtualMachineConfigSpec{
		Name:       HelperVM,
		GuestId:    string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
		NumCPUs:    1,
		MemoryMB:   hypervisor.MinMemoryMiB,
		Annotation: "vch: makes the VCH's delta disks; never powered on",
		Files:      &types.VirtualMachineFileInfo{VmPathName: "[" + d.ds.Name() + "]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: scsi},
		},
	}
	task, err := folder.CreateVM(ctx, spec, pool, nil)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return nil, err
	}
	return object.NewVirtualMachine(d.client, info.Result.(types.ManagedObjectReference)), nil
}
