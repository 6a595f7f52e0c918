package vsphere

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"

	"github.com/vchproject/vch/internal/hypervisor"
)

var _ hypervisor.DiskStore = (*Driver)(nil)

// The image store's layout, under its directory (Config.ImageStore):
//
//	boot/<sha256[:16]>.iso   boot ISOs (ImportBoot), by their files' digest
//	images/<NAME>.vmdk       base disks (ImportDisk)
//	<ELEM>/…/<ELEM>.vmdk     the caller's disks (DiskPath)
const (
	bootDir  = "boot"
	imageDir = "images"
)

// ISOLINUX's files in Debian's isolinux and syslinux-common packages,
// which ImportBoot puts in its ISO as its boot loader.
var (
	isolinuxBin = "/usr/lib/ISOLINUX/isolinux.bin"
	ldlinuxC32  = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
)

// BootArgs are the kernel arguments ImportBoot's ISO boots with: tether's
// channel is the VM's serial port (its one serial port, COM1), and
// Spec.Cmdline reaches the guest in guestinfo.
const BootArgs = "console=tty0 vch.channel=serial vch.channel.device=ttyS0"

var validDiskName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

const maxDiskName = 128

// ImportBoot builds an ISO 9660 image that boots the kernel (a bzImage:
// ISOLINUX loads images of the Linux x86 boot protocol, not an ELF
// vmlinux) and initrd host files with ISOLINUX (El Torito, no emulation;
// kernel arguments BootArgs) and uploads it to the image store as boot/<digest>.iso, where
// digest is the first 16 bytes, hex, of SHA-256 over both files. Returns
// that datastore path as specKernel and "" as specInitrd (the ISO holds
// the initramfs, see the package doc). An ISO already there is not built
// again. Unavailable if xorriso or ISOLINUX is missing (Debian's xorriso,
// isolinux and syslinux-common) or vSphere refuses the upload;
// FailedPrecondition before CreateVCH made the image store.
func (d *Driver) ImportBoot(ctx context.Context, kernel, initrd string) (string, string, error) {
	h := sha256.New()
	for _, f := range []string{kernel, initrd} {
		if err := hashFile(h, f); err != nil {
			return "", "", fmt.Errorf("vsphere: boot file: %w", err)
		}
	}
	iso := d.imageDir + "/" + bootDir + "/" + hex.EncodeToString(h.Sum(nil)[:16]) + ".iso"
	p, _ := dsPath(iso, ".iso")
	if _, err := d.ds.Stat(ctx, p.Path); err == nil {
		return iso, "", nil
	} else if !isNotFound(err) {
		return "", "", d.fail("boot ISO "+iso, err)
	}
	xorriso, err := exec.LookPath("xorriso")
	if err != nil {
		return "", "", fmt.Errorf("vsphere: boot ISO: xorriso not found (install the Debian package xorriso): %w", errdefs.ErrUnavailable)
	}
	for _, f := range []string{isolinuxBin, ldlinuxC32} {
		if _, err := os.Stat(f); err != nil {
			return "", "", fmt.Errorf("vsphere: boot ISO: %s missing (install the Debian packages isolinux and syslinux-common): %w", f, errdefs.ErrUnavailable)
		}
	}
	tmp, err := os.MkdirTemp("", "vch-boot-")
	if err != nil {
		return "", "", fmt.Errorf("vsphere: boot ISO: %w", err)
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "tree")
	cfg := "DEFAULT vch\nPROMPT 0\nTIMEOUT 0\nLABEL vch\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND " + BootArgs + "\n"
	if err := os.MkdirAll(filepath.Join(tree, "isolinux"), 0o755); err != nil {
		return "", "", fmt.Errorf("vsphere: boot ISO: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tree, "isolinux", "isolinux.cfg"), []byte(cfg), 0o644); err != nil {
		return "", "", fmt.Errorf("vsphere: boot ISO: %w", err)
	}
	local := filepath.Join(tmp, "boot.iso")
	out, err := exec.CommandContext(ctx, xorriso, "-as", "mkisofs", "-quiet", "-o", local,
		"-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"-R", "-J", "-V", "VCH_BOOT", "-graft-points",
		"/vmlinuz="+kernel, "/initrd.img="+initrd, "/isolinux/isolinux.bin="+isolinuxBin, "/isolinux/ldlinux.c32="+ldlinuxC32,
		"/="+tree).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("vsphere: boot ISO: xorriso: %s: %w: %w", strings.TrimSpace(string(out)), err, errdefs.ErrUnavailable)
	}
	if err := d.upload(ctx, local, p); err != nil {
		return "", "", err
	}
	d.logger.Info("boot ISO uploaded", "iso", iso)
	return iso, "", nil
}

// upload puts the host file local at p on the image store's datastore
// through a temporary name, so that p never holds part of a file.
func (d *Driver) upload(ctx context.Context, local string, p object.DatastorePath) error {
	if _, _, err := d.vch(); err != nil {
		return err
	}
	if dir := pathDir(p); dir != "" {
		if err := object.NewFileManager(d.client).MakeDirectory(ctx, d.ds.Path(dir), d.dc, true); err != nil && !isAlreadyExists(err) {
			return d.fail("upload directory", err)
		}
	}
	tmp := p.Path + ".part"
	up := soap.DefaultUpload
	if err := d.ds.UploadFile(ctx, local, tmp, &up); err != nil {
		return fmt.Errorf("%w: %w", d.fail("upload "+p.String(), err), errdefs.ErrUnavailable)
	}
	t, err := object.NewFileManager(d.client).MoveDatastoreFile(ctx, d.ds.Path(tmp), d.dc, p.String(), d.dc, true)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", d.fail("move upload to "+p.String(), err), errdefs.ErrUnavailable)
	}
	return nil
}

// ImportDisk converts the raw disk image src to a streamOptimized VMDK
// (qemu-img) and imports it to the image store as images/<name>.vmdk
// with vSphere's OVF import (an NFC upload, as govc import.vmdk does;
// see importVMDK), a thin disk. A disk of that name already there is returned as it is;
// concurrent imports of one name share one upload. Returns the disk,
// Format "vmdk", ReadOnly. InvalidArgument for a bad name; NotFound if
// src is missing; FailedPrecondition before CreateVCH; Unavailable if
// qemu-img is missing or vSphere refuses the import.
func (d *Driver) ImportDisk(ctx context.Context, src, name string) (hypervisor.Disk, error) {
	if !validDiskName.MatchString(name) || len(name) > maxDiskName {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: disk name %q: want 1 to %d letters, digits, '_', '.', '-': %w", name, maxDiskName, errdefs.ErrInvalidArgument)
	}
	disk := hypervisor.Disk{Path: d.imageDir + "/" + imageDir + "/" + name + ".vmdk", Format: "vmdk", ReadOnly: true}
	if _, err := os.Stat(src); err != nil {
		return hypervisor.Disk{}, fmt.Errorf("vsphere: disk %s: %w: %w", name, err, errdefs.ErrNotFound)
	}
	pool, folder, err := d.vch()
	if err != nil {
		return hypervisor.Disk{}, err
	}
	d.importMu.Lock()
	mu, ok := d.imports[name]
	if !ok {
		mu = &chanMutex{ch: make(chan struct{}, 1)}
		d.imports[name] = mu
	}
	d.importMu.Unlock()
	if err := mu.lock(ctx); err != nil {
		return hypervisor.Disk{}, err
	}
	defer mu.unlock()

	target, _ := dsPath(disk.Path, ".vmdk")
	if _, err := d.ds.Stat(ctx, target.Path); err == nil {
		return disk, nil
	} else if !isNotFound(err) {
		return hypervisor.Disk{}, d.fail("disk "+disk.Path, err)
	}
	if err := d.importRaw(ctx, src, name, target, pool, folder); err != nil {
		return hypervisor.Disk{}, err
	}
	d.logger.Info("disk imported", "disk", disk.Path)
	return disk, nil
}

// importRaw converts the raw disk image src to a streamOptimized VMDK
// (qemu-img, in a temporary directory) and imports it as target
// (importVMDK). Unavailable if qemu-img is missing or vSphere refuses.
func (d *Driver) importRaw(ctx context.Context, src, name string, target object.DatastorePath, pool *object.ResourcePool, folder *object.Folder) error {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return fmt.Errorf("vsphere: disk %s: qemu-img not found (install the Debian package qemu-utils): %w", name, errdefs.ErrUnavailable)
	}
	tmp, err := os.MkdirTemp("", "vch-disk-")
	if err != nil {
		return fmt.Errorf("vsphere: disk %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	local := filepath.Join(tmp, name+".vmdk")
	if out, err := exec.CommandContext(ctx, qemuImg, "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src, local).CombinedOutput(); err != nil {
		return fmt.Errorf("vsphere: disk %s: qemu-img convert: %s: %w: %w", name, strings.TrimSpace(string(out)), err, errdefs.ErrUnavailable)
	}
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), importTimeout)
	defer cancel()
	return d.importVMDK(vctx, local, name, target, pool, folder)
}

// importVMDK imports the streamOptimized VMDK host file local with
// vSphere's OVF import: an import spec for one VM with that one disk
// (ovf.Manager.CreateImportSpec over vmdk.Info's OVF), ImportVApp, the
// NFC upload of the file, and then, unlike vmdk.Import, the disk is
// detached and moved to target before the import's VM is destroyed: a
// VM's destruction deletes its directory in the simulator.
func (d *Driver) importVMDK(ctx context.Context, local, name string, target object.DatastorePath, pool *object.ResourcePool, folder *object.Folder) error {
	fail := func(what string, err error) error {
		return fmt.Errorf("%w: %w", d.fail("import disk "+name+": "+what, err), errdefs.ErrUnavailable)
	}
	info, err := vmdk.Stat(local)
	if err != nil {
		return fail("read the converted disk", err)
	}
	descriptor, err := info.OVF()
	if err != nil {
		return fail("OVF descriptor", err)
	}
	// The import's VM and directory are named after the disk, with a
	// prefix no container VM's name has.
	entity := "_vch-import-" + name
	spec, err := ovf.NewManager(d.client).CreateImportSpec(ctx, descriptor, pool, d.ds, &types.OvfCreateImportSpecParams{
		DiskProvisioning: string(types.VirtualDiskTypeThin), EntityName: entity,
	})
	if err != nil {
		return fail("import spec", err)
	}
	if len(spec.Error) > 0 {
		return fail("import spec", errors.New(spec.Error[0].LocalizedMessage))
	}
	lease, err := pool.ImportVApp(ctx, spec.ImportSpec, folder, nil)
	if err != nil {
		return fail("ImportVApp", err)
	}
	li, err := lease.Wait(ctx, spec.FileItem)
	if err != nil {
		return fail("lease", err)
	}
	f, err := os.Open(local)
	if err != nil {
		return fail("open", err)
	}
	defer f.Close()
	u := lease.StartUpdater(ctx, li)
	err = lease.Upload(ctx, li.Items[0], f, soap.Upload{ContentLength: info.Size})
	u.Done()
	if err != nil {
		_ = lease.Abort(ctx, nil)
		return fail("upload", err)
	}
	if err := lease.Complete(ctx); err != nil {
		return fail("complete", err)
	}
	vm := object.NewVirtualMachine(d.client, li.Entity)
	defer func() {
		if t, err := vm.Destroy(ctx); err == nil {
			_ = t.Wait(ctx)
		}
		if _, err := d.RemoveDirectoryIfEmpty(ctx, d.ds.Path(entity)); err != nil {
			d.logger.Warn("import directory left", "dir", d.ds.Path(entity), "err", err)
		}
	}()
	devices, err := vm.Device(ctx)
	if err != nil {
		return fail("the import's VM", err)
	}
	disks := devices.SelectByType((*types.VirtualDisk)(nil))
	if len(disks) != 1 {
		return fail("the import's VM", fmt.Errorf("%d disks, want 1", len(disks)))
	}
	b, ok := disks[0].GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo)
	if !ok {
		return fail("the import's disk", fmt.Errorf("backing %T", disks[0].GetVirtualDevice().Backing))
	}
	imported := b.GetVirtualDeviceFileBackingInfo().FileName
	if err := vm.RemoveDevice(ctx, true, disks...); err != nil {
		return fail("detach", err)
	}
	if dir := pathDir(target); dir != "" {
		dirPath := object.DatastorePath{Datastore: target.Datastore, Path: dir}
		if err := object.NewFileManager(d.client).MakeDirectory(ctx, dirPath.String(), d.dc, true); err != nil && !isAlreadyExists(err) {
			return fail("disk directory", err)
		}
	}
	t, err := object.NewVirtualDiskManager(d.client).MoveVirtualDisk(ctx, imported, d.dc, target.String(), d.dc, false)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		return fail("move to "+target.String(), err)
	}
	return nil
}

// importTimeout bounds one disk import's vSphere calls.
const importTimeout = 30 * time.Minute

// DiskPath is "[DATASTORE] STORE/ELEM/…/ELEM.vmdk" on the image store,
// STORE its directory: elems ("containers", ID, "rw") name directories
// and, last, the file.
func (d *Driver) DiskPath(elems ...string) string {
	return d.imageDir + "/" + path.Join(elems...) + ".vmdk"
}

// RemoveDisk deletes the disk at the datastore path p (its descriptor
// and extents, VirtualDiskManager) and then its directory if that is left
// empty and is not the image store's own. A disk already gone is no
// error. InvalidArgument for a path outside the image store; Unavailable
// if vSphere refuses (a VM still uses the disk).
func (d *Driver) RemoveDisk(ctx context.Context, p string) error {
	dp, ok := dsPath(p, ".vmdk")
	if !ok || !strings.HasPrefix(p, d.imageDir+"/") {
		return fmt.Errorf("vsphere: disk %q: want a disk under %s: %w", p, d.imageDir, errdefs.ErrInvalidArgument)
	}
	if err := d.deleteDisk(ctx, p); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.chains, p)
	d.mu.Unlock()
	if dir := pathDir(dp); dir != "" && d.ds.Path(dir) != d.imageDir {
		if _, err := d.RemoveDirectoryIfEmpty(ctx, d.ds.Path(dir)); err != nil {
			d.logger.Warn("disk directory left", "dir", d.ds.Path(dir), "err", err)
		}
	}
	return nil
}

// chanMutex is a mutex whose Lock gives up when ctx ends.
type chanMutex struct{ ch chan struct{} }

func (m *chanMutex) lock(ctx context.Context) error {
	select {
	case m.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *chanMutex) unlock() { <-m.ch }

func hashFile(h io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}
