package vsphere

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"

	"github.com/vchproject/vch/internal/hypervisor"
)

// TestAdmin: what vch create, configure and delete ask of the driver
// beyond CreateVCH and DeleteVCH.
func TestAdmin(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	d := e.driver(func(c *Config) { c.BridgePortgroup = "" })

	want := VCHPaths{ResourcePool: simCluster + "/Resources/" + testVCH, VMFolder: "/" + simDC + "/vm/" + testVCH, ImageStore: "[" + simDS + "] " + testVCH}
	if got := d.Paths(); got != want {
		t.Errorf("Paths = %+v, want %+v", got, want)
	}
	if mhz, err := d.CoreMHz(ctx); err != nil || mhz <= 0 {
		t.Errorf("CoreMHz = %d, %v", mhz, err)
	}
	if err := d.SetPoolLimits(ctx, 1000, 1024); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("SetPoolLimits before CreateVCH: %v, want FailedPrecondition", err)
	}
	if err := d.CreateVCH(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPoolLimits(ctx, 3000, 0); err != nil {
		t.Fatal(err)
	}
	pool, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).ResourcePool(ctx, want.ResourcePool)
	if err != nil {
		t.Fatal(err)
	}
	var p mo.ResourcePool
	if err := pool.Properties(ctx, pool.Reference(), []string{"config"}, &p); err != nil {
		t.Fatal(err)
	}
	if l := p.Config.CpuAllocation.Limit; l == nil || *l != 3000 {
		t.Errorf("pool CPU limit = %v, want 3000", l)
	}
	if l := p.Config.MemoryAllocation.Limit; l == nil || *l != -1 {
		t.Errorf("pool memory limit = %v, want -1 (unlimited)", l)
	}
	if err := d.SetPoolLimits(ctx, -1, 0); !errdefs.IsInvalidArgument(err) {
		t.Errorf("negative limit: %v", err)
	}

	if err := d.CheckNetwork(ctx, simPG); err != nil {
		t.Errorf("CheckNetwork(%s): %v", simPG, err)
	}
	if err := d.CheckNetwork(ctx, "no-such-pg"); !errdefs.IsNotFound(err) {
		t.Errorf("CheckNetwork of a missing network: %v, want NotFound", err)
	}
	s := spec("nic")
	s.NICs = []hypervisor.NIC{{MAC: "02:00:00:00:00:01"}}
	if _, err := d.Start(ctx, s); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start with a NIC and no bridge portgroup: %v, want FailedPrecondition", err)
	}
	if e.vm("nic") != nil {
		t.Error("a refused Start left its VM")
	}

	dir := "[" + simDS + "] volumes/fast"
	if made, err := d.MakeDirectory(ctx, dir); err != nil || !slices.Equal(made, []string{"[" + simDS + "] volumes", dir}) {
		t.Fatalf("MakeDirectory = %v, %v; want it and its parent made", made, err)
	}
	if made, err := d.MakeDirectory(ctx, dir); err != nil || made != nil {
		t.Errorf("MakeDirectory of an existing directory = %v, %v; want nil, nil", made, err)
	}
	if made, err := d.MakeDirectory(ctx, "["+simDS+"] volumes/slow"); err != nil || !slices.Equal(made, []string{"[" + simDS + "] volumes/slow"}) {
		t.Errorf("MakeDirectory beside = %v, %v; want only the new one made", made, err)
	}
	for _, bad := range []string{"volumes/fast", "[" + simDS + "] ", "[" + simDS + "] a/../b", "[" + simDS + "] /abs"} {
		if _, err := d.MakeDirectory(ctx, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("MakeDirectory(%q): %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := d.MakeDirectory(ctx, "[NoSuchDS] x"); !errdefs.IsNotFound(err) {
		t.Errorf("MakeDirectory on a missing datastore: %v, want NotFound", err)
	}
	if err := e.ds.Upload(ctx, strings.NewReader("a volume"), "volumes/fast/vol.data", &soap.DefaultUpload); err != nil {
		t.Fatal(err)
	}
	if _, err := d.MakeDirectory(ctx, "["+simDS+"] volumes/fast/vol.data/x"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("MakeDirectory over a file: %v, want FailedPrecondition", err)
	}
	if removed, err := d.RemoveDirectoryIfEmpty(ctx, dir); err != nil || removed {
		t.Errorf("RemoveDirectoryIfEmpty of a full directory = %v, %v; want false, nil", removed, err)
	}
	if !e.exists("[" + simDS + "] volumes/fast/vol.data") {
		t.Fatal("RemoveDirectoryIfEmpty removed a file")
	}
	if err := e.ds.NewFileManager(e.dc, true).Delete(ctx, "volumes/fast/vol.data"); err != nil {
		t.Fatal(err)
	}
	if removed, err := d.RemoveDirectoryIfEmpty(ctx, dir); err != nil || !removed {
		t.Errorf("RemoveDirectoryIfEmpty of an empty directory = %v, %v", removed, err)
	}
	if e.exists(dir) {
		t.Error("the empty directory is still there")
	}
	if removed, err := d.RemoveDirectoryIfEmpty(ctx, dir); err != nil || removed {
		t.Errorf("RemoveDirectoryIfEmpty of a missing directory = %v, %v; want false, nil", removed, err)
	}
}
