package vsphere

import (
	"context"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// CreateVCH creates what the VCH owns: its resource pool under the compute
// resource's root pool, with the Config's CPU limit (MHz) and memory limit
// (MiB), unlimited where 0; its VM folder under the datacenter's VM
// folder; and the image store's directory on its datastore (with its
// parents). All or nothing: what was made is removed again if a later
// step fails. AlreadyExists if any of the three exists (the VCH would
// otherwise take, and DeleteVCH later delete, what is not its own);
// Unavailable if vSphere fails.
func (d *Driver) CreateVCH(ctx context.Context) error {
	pool, folder, err := d.findVCH(ctx)
	if err != nil {
		return err
	}
	switch {
	case pool != nil:
		return fmt.Errorf("vsphere: resource pool %s exists: %w", d.cfg.ResourcePool, errdefs.ErrAlreadyExists)
	case folder != nil:
		return fmt.Errorf("vsphere: VM folder %s exists: %w", d.cfg.VMFolder, errdefs.ErrAlreadyExists)
	}
	dir, _ := dsPathAny(d.imageDir)
	if _, err := d.ds.Stat(ctx, dir.Path); err == nil {
		return fmt.Errorf("vsphere: image store %s exists: %w", d.imageDir, errdefs.ErrAlreadyExists)
	} else if !isNotFound(err) {
		return d.fail("image store "+d.imageDir, err)
	}

	undo := []func(context.Context){}
	rollback := func(err error) error {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
		for _, u := range slices.Backward(undo) {
			u(uctx)
		}
		return err
	}
	spec := types.DefaultResourceConfigSpec()
	spec.CpuAllocation.Limit = limit(d.cfg.CPULimitMHz)
	spec.MemoryAllocation.Limit = limit(d.cfg.MemoryLimitMiB)
	if pool, err = d.rootPool.Create(ctx, d.cfg.ResourcePool, spec); err != nil {
		return d.fail("create resource pool "+d.cfg.ResourcePool, err)
	}
	undo = append(undo, func(ctx context.Context) { d.destroy(ctx, pool.Reference(), "resource pool") })
	if folder, err = d.dcFolders.VmFolder.CreateFolder(ctx, d.cfg.VMFolder); err != nil {
		return rollback(d.fail("create VM folder "+d.cfg.VMFolder, err))
	}
	undo = append(undo, func(ctx context.Context) { d.destroy(ctx, folder.Reference(), "VM folder") })
	if err := object.NewFileManager(d.client).MakeDirectory(ctx, d.imageDir, d.dc, true); err != nil {
		return rollback(d.fail("create image store "+d.imageDir, err))
	}
	d.mu.Lock()
	d.pool, d.folder = pool, folder
	d.mu.Unlock()
	d.logger.Info("VCH created", "pool", d.cfg.ResourcePool, "folder", d.cfg.VMFolder, "image_store", d.imageDir)
	return nil
}

// limit is a pool limit for vSphere: -1 (unlimited) for 0.
func limit(v int64) *int64 {
	if v == 0 {
		return types.NewInt64(-1)
	}
	return types.NewInt64(v)
}

// dsPathAny parses a datastore path of any file or directory.
func dsPathAny(s string) (object.DatastorePath, bool) {
	var p object.DatastorePath
	return p, p.FromString(s)
}

// destroy destroys the managed entity ref (a pool or folder), logging a
// failure: for rollbacks.
func (d *Driver) destroy(ctx context.Context, ref types.ManagedObjectReference, what string) {
	t, err := object.NewCommon(d.client, ref).Destroy(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		d.logger.Error("rollback left behind", "what", what, "moref", ref.Value, "err", d.fail("destroy", err))
	}
}

// DeleteVCH removes what CreateVCH made: every VM in the VCH's folder
// (VMs of this driver are killed, Done closed with ErrKilled; others
// powered off), the folder, the pool, and the image store's directory with
// everything in it. A VM's disks outside the image store are detached
// before the VM is destroyed, and stay. FailedPrecondition, before
// anything is removed, if the folder holds anything but VMs or the pool
// holds a child pool or a VM outside the folder: those are not the
// VCH's. What does not exist is skipped: DeleteVCH of a deleted VCH
// returns nil. Unavailable if vSphere fails (what was removed stays
// removed; DeleteVCH may be called again).
func (d *Driver) DeleteVCH(ctx context.Context) error {
	pool, folder, err := d.findVCH(ctx)
	if err != nil {
		return err
	}
	var vms []types.ManagedObjectReference
	if folder != nil {
		var f mo.Folder
		if err := folder.Properties(ctx, folder.Reference(), []string{"childEntity"}, &f); err != nil {
			return d.fail("VM folder", err)
		}
		for _, c := range f.ChildEntity {
			if c.Type != "VirtualMachine" {
				return fmt.Errorf("vsphere: VM folder %s holds %s %s, which is not the VCH's: %w", d.cfg.VMFolder, c.Type, c.Value, errdefs.ErrFailedPrecondition)
			}
			vms = append(vms, c)
		}
	}
	if pool != nil {
		var p mo.ResourcePool
		if err := pool.Properties(ctx, pool.Reference(), []string{"resourcePool", "vm"}, &p); err != nil {
			return d.fail("resource pool", err)
		}
		if len(p.ResourcePool) > 0 {
			return fmt.Errorf("vsphere: resource pool %s holds child pools, which are not the VCH's: %w", d.cfg.ResourcePool, errdefs.ErrFailedPrecondition)
		}
		for _, ref := range p.Vm {
			if !slices.Contains(vms, ref) {
				return fmt.Errorf("vsphere: resource pool %s holds VM %s outside the VCH's folder: %w", d.cfg.ResourcePool, ref.Value, errdefs.ErrFailedPrecondition)
			}
		}
	}

	d.mu.Lock()
	mine := make([]*vm, 0, len(d.vms))
	for _, v := range d.vms {
		mine = append(mine, v)
	}
	d.mu.Unlock()
	for _, v := range mine {
		if err := v.Kill(); err != nil {
			return err
		}
	}
	for _, ref := range vms {
		obj := object.NewVirtualMachine(d.client, ref)
		t, err := obj.PowerOff(ctx)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil && !fault.IsAlreadyPoweredOffError(err) && !isNotFound(err) {
			return d.fail("power off VM "+ref.Value, err)
		}
		if err := d.destroyKeepingDisks(ctx, obj); err != nil && !isNotFound(err) {
			return d.fail("destroy VM "+ref.Value, err)
		}
	}
	var entities []types.ManagedObjectReference // folder first: the pool's VMs are gone with it
	if folder != nil {
		entities = append(entities, folder.Reference())
	}
	if pool != nil {
		entities = append(entities, pool.Reference())
	}
	for _, ref := range entities {
		t, err := object.NewCommon(d.client, ref).Destroy(ctx)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil && !isNotFound(err) {
			return d.fail("destroy "+ref.Type+" "+ref.Value, err)
		}
	}
	t, err := object.NewFileManager(d.client).DeleteDatastoreFile(ctx, d.imageDir, d.dc)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil && !isNotFound(err) {
		return d.fail("delete image store "+d.imageDir, err)
	}
	d.mu.Lock()
	d.pool, d.folder = nil, nil
	clear(d.chains)
	d.mu.Unlock()
	d.logger.Info("VCH deleted", "pool", d.cfg.ResourcePool, "folder", d.cfg.VMFolder, "image_store", d.imageDir)
	return nil
}
