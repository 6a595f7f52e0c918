package vsphere

import (
	"context"
	"fmt"
	"os"
	"path"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/object"

	"github.com/vchproject/vch/internal/hypervisor"
)

var _ hypervisor.VolumeStore = (*Driver)(nil)

// volumeImportPrefix names a volume's import (its VM and the import lock)
// apart from an image's of the same name.
const volumeImportPrefix = "volume-"

// ImportVolume converts the raw disk image src to a streamOptimized VMDK
// and imports it with vSphere's OVF import, as ImportDisk does, as the
// thin disk "[DATASTORE] PATH/NAME/NAME.vmdk" under the volume store
// directory dir ("[DATASTORE] PATH", as vch create made it). A disk
// already at that path (an import cut short before the volume's record
// was written) is deleted first. Returns the disk, Format "vmdk",
// writable. InvalidArgument for a bad dir or name; NotFound if src or
// the datastore is missing; FailedPrecondition before CreateVCH;
// Unavailable if qemu-img is missing or vSphere refuses.
func (d *Driver) ImportVolume(ctx context.Context, src, dir, name string) (hypervisor.Disk, error) {
	if !validDiskName.MatchString(name) || len(volumeImportPrefix+name) > maxDiskName {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: volume name %q: want 1 to %d letters, digits, '_', '.', '-': %w", name, maxDiskName-len(volumeImportPrefix), errdefs.ErrInvalidArgument)
	}
	dp, ds, err := d.dirPath(ctx, dir)
	if err != nil {
		return hypervisor.Disk{}, err
	}
	if _, err := os.Stat(src); err != nil {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: volume %s: %w: %w", name, err, errdefs.ErrNotFound)
	}
	pool, folder, err := d.vch()
	if err != nil {
		return hypervisor.Disk{}, err
	}
	target := object.DatastorePath{Datastore: dp.Datastore, Path: path.Join(dp.Path, name, name+".vmdk")}
	disk := hypervisor.Disk{Path: target.String(), Format: "vmdk"}
	if _, err := ds.Stat(ctx, target.Path); err == nil {
		d.logger.Warn("replacing a volume disk left by an import cut short", "disk", disk.Path)
		if err := d.deleteDisk(ctx, disk.Path); err != nil {
			return hypervisor.Disk{}, err
		}
	} else if !isNotFound(err) {
		return hypervisor.Disk{}, d.fail("volume disk "+disk.Path, err)
	}
	if err := d.importRaw(ctx, src, volumeImportPrefix+name, target, pool, folder); err != nil {
		return hypervisor.Disk{}, err
	}
	d.logger.Info("volume disk imported", "disk", disk.Path)
	return disk, nil
}

// RemoveVolume deletes the volume disk at the datastore path p (its
// descriptor and extents) and its directory PATH/NAME if that is left
// empty. A disk already gone is no error. InvalidArgument for a path
// that is not a volume disk ("[DATASTORE] PATH/NAME/NAME.vmdk");
// Unavailable if vSphere refuses (a VM still uses the disk).
func (d *Driver) RemoveVolume(ctx context.Context, p string) error {
	dp, ok := dsPath(p, ".vmdk")
	dir := pathDir(dp)
	if !ok || path.Base(dir)+".vmdk" != path.Base(dp.Path) || path.Dir(dir) == "." {
		return fmt.Errorf("vsphere: volume disk %q: want [DATASTORE] PATH/NAME/NAME.vmdk: %w", p, errdefs.ErrInvalidArgument)
	}
	if err := d.deleteDisk(ctx, p); err != nil {
		return err
	}
	dirPath := object.DatastorePath{Datastore: dp.Datastore, Path: dir}
	if _, err := d.RemoveDirectoryIfEmpty(ctx, dirPath.String()); err != nil {
		d.logger.Warn("volume directory left", "dir", dirPath.String(), "err", err)
	}
	return nil
}

// deleteDisk deletes the disk at datastore path p (VirtualDiskManager);
// one already gone is no error.
func (d *Driver) deleteDisk(ctx context.Context, p string) error {
	t, err := object.NewVirtualDiskManager(d.client).DeleteVirtualDisk(ctx, p, d.dc)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("%w: %w", d.fail("delete disk "+p, err), errdefs.ErrUnavailable)
	}
	return nil
}
