package vsphere

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// What the operator's side (vch create, configure, delete) asks of a
// driver beyond CreateVCH and DeleteVCH. Every error is the driver's own:
// classified, with the credentials redacted.

// VCHPaths are where the VCH's objects are, or will be once CreateVCH
// made them.
type VCHPaths struct {
	// ResourcePool is the pool's inventory path,
	// "/DC/host/CLUSTER/Resources/NAME".
	ResourcePool string `json:"resource_pool"`
	// VMFolder is the folder's inventory path, "/DC/vm/NAME".
	VMFolder string `json:"vm_folder"`
	// ImageStore is the image store directory's datastore path,
	// "[DATASTORE] PATH".
	ImageStore string `json:"image_store"`
}

// Paths returns the inventory paths of the VCH's pool and folder and the
// datastore path of its image store.
func (d *Driver) Paths() VCHPaths {
	return VCHPaths{
		ResourcePool: strings.TrimSuffix(d.cfg.ComputeResource, "/") + "/Resources/" + d.cfg.ResourcePool,
		VMFolder:     strings.TrimSuffix(d.dc.InventoryPath, "/") + "/vm/" + d.cfg.VMFolder,
		ImageStore:   d.imageDir,
	}
}

// CoreMHz is the clock of one CPU core of the compute resource, in MHz:
// its total CPU capacity divided by its cores (the mean over a cluster's
// hosts). It turns a limit in vCPUs into a pool limit in MHz.
// Unavailable if vSphere does not say.
func (d *Driver) CoreMHz(ctx context.Context) (int64, error) {
	var cr mo.ComputeResource
	if err := d.cr.Properties(ctx, d.cr.Reference(), []string{"summary"}, &cr); err != nil {
		return 0, d.fail("compute resource summary", err)
	}
	if cr.Summary == nil {
		return 0, fmt.Errorf("vsphere: compute resource %s has no summary: %w", d.cfg.ComputeResource, errdefs.ErrUnavailable)
	}
	s := cr.Summary.GetComputeResourceSummary()
	if s.TotalCpu <= 0 || s.NumCpuCores <= 0 {
		return 0, fmt.Errorf("vsphere: compute resource %s reports %d MHz over %d cores: %w", d.cfg.ComputeResource, s.TotalCpu, s.NumCpuCores, errdefs.ErrUnavailable)
	}
	return int64(s.TotalCpu) / int64(s.NumCpuCores), nil
}

// SetPoolLimits sets the VCH's pool's CPU limit (MHz) and memory limit
// (MiB); 0 is unlimited. FailedPrecondition before CreateVCH;
// InvalidArgument for a negative limit; Unavailable if vSphere fails.
func (d *Driver) SetPoolLimits(ctx context.Context, cpuMHz, memoryMiB int64) error {
	if cpuMHz < 0 || memoryMiB < 0 {
		return fmt.Errorf("vsphere: negative pool limit: %w", errdefs.ErrInvalidArgument)
	}
	pool, _, err := d.vch()
	if err != nil {
		return err
	}
	spec := types.DefaultResourceConfigSpec()
	spec.CpuAllocation.Limit = limit(cpuMHz)
	spec.MemoryAllocation.Limit = limit(memoryMiB)
	if err := pool.UpdateConfig(ctx, "", &spec); err != nil {
		return d.fail("update resource pool "+d.cfg.ResourcePool, err)
	}
	d.mu.Lock()
	d.cfg.CPULimitMHz, d.cfg.MemoryLimitMiB = cpuMHz, memoryMiB
	d.mu.Unlock()
	d.logger.Info("pool limits set", "pool", d.cfg.ResourcePool, "cpu_mhz", cpuMHz, "memory_mib", memoryMiB)
	return nil
}

// CheckNetwork returns nil if the datacenter has a network (standard or
// distributed portgroup) named name; NotFound if not.
func (d *Driver) CheckNetwork(ctx context.Context, name string) error {
	if _, err := d.finder().Network(ctx, name); err != nil {
		return d.fail("network "+name, err)
	}
	return nil
}

// MakeDirectory makes the directory at the datastore path p
// ("[DATASTORE] PATH", PATH relative and not empty) with its parents. made
// are the datastore paths of the directories it made, parents first: nil
// if p existed already. InvalidArgument for a bad path; NotFound if the
// datastore does not exist; FailedPrecondition if p or a parent is a
// file.
func (d *Driver) MakeDirectory(ctx context.Context, p string) (made []string, err error) {
	dp, ds, err := d.dirPath(ctx, p)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(dp.Path, "/")
	first := len(parts) // the first missing component
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		info, err := ds.Stat(ctx, sub)
		if isNotFound(err) {
			first = i
			break
		}
		if err != nil {
			return nil, d.fail("stat "+ds.Path(sub), err)
		}
		if _, ok := info.(*types.FolderFileInfo); !ok {
			return nil, fmt.Errorf("vsphere: %s is a file, not a directory: %w", ds.Path(sub), errdefs.ErrFailedPrecondition)
		}
	}
	if first == len(parts) {
		return nil, nil
	}
	if err := object.NewFileManager(d.client).MakeDirectory(ctx, dp.String(), d.dc, true); err != nil {
		return nil, d.fail("make directory "+p, err)
	}
	for i := first; i < len(parts); i++ {
		made = append(made, ds.Path(strings.Join(parts[:i+1], "/")))
	}
	return made, nil
}

// RemoveDirectoryIfEmpty removes the directory at the datastore path p if
// it holds nothing; removed is false if it holds files (it is left as it
// is) or does not exist. InvalidArgument for a bad path.
func (d *Driver) RemoveDirectoryIfEmpty(ctx context.Context, p string) (removed bool, err error) {
	dp, ds, err := d.dirPath(ctx, p)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	b, err := ds.Browser(ctx)
	if err != nil {
		return false, d.fail("datastore browser", err)
	}
	t, err := b.SearchDatastore(ctx, dp.String(), &types.HostDatastoreBrowserSearchSpec{MatchPattern: []string{"*"}})
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, d.fail("list "+p, err)
	}
	res, err := t.WaitForResult(ctx)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, d.fail("list "+p, err)
	}
	if r, ok := res.Result.(types.HostDatastoreBrowserSearchResults); ok && len(r.File) > 0 {
		return false, nil
	}
	t, err = object.NewFileManager(d.client).DeleteDatastoreFile(ctx, dp.String(), d.dc)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, d.fail("delete directory "+p, err)
	}
	return true, nil
}

// dirPath parses a directory's datastore path and finds its datastore.
func (d *Driver) dirPath(ctx context.Context, p string) (object.DatastorePath, *object.Datastore, error) {
	dp, ok := dsPathAny(p)
	clean := strings.Trim(path.Clean("/"+dp.Path), "/")
	if !ok || dp.Datastore == "" || dp.Path == "" || clean != dp.Path {
		return dp, nil, fmt.Errorf("vsphere: datastore path %q: want [DATASTORE] DIR (relative, clean, not the datastore's root): %w", p, errdefs.ErrInvalidArgument)
	}
	ds, err := d.finder().Datastore(ctx, dp.Datastore)
	if err != nil {
		return dp, nil, d.fail("datastore "+dp.Datastore, err)
	}
	return dp, ds, nil
}

// finder is a finder in the driver's datacenter.
func (d *Driver) finder() *find.Finder {
	return find.NewFinder(d.client, false).SetDatacenter(d.dc)
}
