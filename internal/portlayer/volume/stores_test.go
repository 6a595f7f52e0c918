package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// TestVolumeStores: --opt volume-store=NAME (or VIC's VolumeStore, any
// case) puts the disk in that store; the default store is Root; an
// unknown store is InvalidArgument naming the stores; volumes in every
// store survive a reopen and are removed from their own store.
func TestVolumeStores(t *testing.T) {
	needE2fsprogs(t)
	root, fast := t.TempDir(), filepath.Join(t.TempDir(), "fast")
	cfg := Config{Root: root, Stores: map[string]string{"fast": fast}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Stores(); len(got) != 2 || got[DefaultStore] != root || got["fast"] != fast {
		t.Fatalf("Stores() = %v", got)
	}
	ctx := t.Context()
	def, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	if def.Mountpoint != filepath.Join(root, "plain") || def.Options != nil {
		t.Fatalf("default volume: mountpoint %s options %v", def.Mountpoint, def.Options)
	}
	for name, key := range map[string]string{"a1": "volume-store", "a2": "VolumeStore", "a3": "VOLUME_STORE"} {
		v, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: name, Options: map[string]string{key: "fast", "size": "64m"}})
		if err != nil {
			t.Fatalf("create with %s: %v", key, err)
		}
		if v.Mountpoint != filepath.Join(fast, name) || v.Options[StoreOption] != "fast" || v.Options["size"] != "64m" || len(v.Options) != 2 {
			t.Fatalf("%s: mountpoint %s options %v", key, v.Mountpoint, v.Options)
		}
		if _, err := os.Stat(filepath.Join(fast, name, diskFile)); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "x1", Options: map[string]string{"volume-store": "slow"}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `no volume store named "slow": this VCH has default, fast`) {
		t.Fatalf("unknown store: %v", err)
	}

	s2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s2.InspectVolume(ctx, "a2")
	if err != nil || v.Mountpoint != filepath.Join(fast, "a2") {
		t.Fatalf("after reopen: %+v %v", v, err)
	}
	if err := s2.RemoveVolume(ctx, "a2", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(fast, "a2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed volume's directory: %v", err)
	}
	if vs, _ := s2.ListVolumes(ctx); len(vs) != 3 {
		t.Fatalf("list: %d volumes, want 3", len(vs))
	}

	for _, bad := range []map[string]string{{"fast": "relative/dir"}, {"a b": "/x"}, {"other": root}} {
		if _, err := New(Config{Root: t.TempDir() + "/r", Stores: bad}, nil); err == nil && bad["other"] == "" {
			t.Errorf("New with stores %v succeeded", bad)
		}
	}
	if _, err := New(Config{Root: root, Stores: map[string]string{"other": root}}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("two stores in one directory: %v", err)
	}
}

func TestParseStore(t *testing.T) {
	if n, p, err := ParseStore("fast:/srv/vch/fast/"); err != nil || n != "fast" || p != "/srv/vch/fast" {
		t.Fatalf("ParseStore = %q %q %v", n, p, err)
	}
	if n, p, err := ParseStore("vmfs:ds://ds1/vch/vols/"); err != nil || n != "vmfs" || p != "ds://ds1/vch/vols" {
		t.Fatalf("ParseStore of a datastore store = %q %q %v", n, p, err)
	}
	for _, bad := range []string{"fast", "fast:rel", ":/x", "a b:/x", "v:ds://", "v:ds://ds1", "v:ds://ds1/../x", "v:ds://[ds1]/x", "v:ds:///x"} {
		if _, _, err := ParseStore(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseStore(%q) = %v", bad, err)
		}
	}
}

// fakeDisks is a hypervisor.VolumeStore keeping disks as host files in
// dir, named as vSphere's: "[ds1] PATH/NAME/NAME.vmdk".
type fakeDisks struct {
	dir     string
	imports map[string][]byte // Disk.Path -> content imported
	removed []string
	failRm  error
}

func (f *fakeDisks) ImportVolume(_ context.Context, src, dir, name string) (hypervisor.Disk, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return hypervisor.Disk{}, err
	}
	p := dir + "/" + name + "/" + name + ".vmdk"
	f.imports[p] = b[:1024]
	return hypervisor.Disk{Path: p, Format: "vmdk"}, nil
}

func (f *fakeDisks) RemoveVolume(_ context.Context, p string) error {
	if f.failRm != nil {
		return f.failRm
	}
	f.removed = append(f.removed, p)
	return nil
}

// TestDatastoreStore: a ds:// store hands each new disk (an ext4 image
// made here) to the hypervisor and keeps no host copy; the volume's disk
// is the hypervisor's path, vmdk; its record survives a reopen; removal
// deletes the hypervisor's disk first and keeps the volume if that
// fails; a ds:// store without a hypervisor store is refused.
func TestDatastoreStore(t *testing.T) {
	needE2fsprogs(t)
	root := t.TempDir()
	if _, err := New(Config{Root: root, Stores: map[string]string{"vmfs": "ds://ds1/vols"}}, nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("a ds:// store without Disks: %v; want InvalidArgument", err)
	}
	disks := &fakeDisks{imports: map[string][]byte{}}
	cfg := Config{Root: root, Stores: map[string]string{"vmfs": "ds://ds1/vols"}, Disks: disks}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Stores(); got["vmfs"] != "ds://ds1/vols" || got[DefaultStore] != root {
		t.Errorf("Stores() = %v; want the datastore store's location", got)
	}
	ctx := t.Context()
	v, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "dv", Options: map[string]string{"volume-store": "vmfs", "size": "32m"}})
	if err != nil {
		t.Fatal(err)
	}
	const want = "[ds1] vols/dv/dv.vmdk"
	if v.DiskPath != want || v.DiskFormat != "vmdk" || v.SizeBytes != 32<<20 {
		t.Fatalf("volume on the datastore store: disk %s (%s), size %d; want %s, vmdk", v.DiskPath, v.DiskFormat, v.SizeBytes, want)
	}
	if b, ok := disks.imports[want]; !ok || len(b) != 1024 {
		t.Fatalf("imports %v: want the disk", disks.imports)
	}
	if _, err := os.Stat(filepath.Join(v.Mountpoint, diskFile)); !os.IsNotExist(err) {
		t.Errorf("a host copy of the imported disk: %v; want none", err)
	}
	if local, _ := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "lv"}); local.DiskFormat != "raw" || !strings.HasPrefix(local.DiskPath, root) {
		t.Errorf("a volume on the default store: %s (%s)", local.DiskPath, local.DiskFormat)
	}
	s2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.InspectVolume(ctx, "dv"); err != nil || got.DiskPath != want {
		t.Fatalf("after a reopen: %+v, %v", got, err)
	}
	disks.failRm = portlayer.Errorf(portlayer.ClassUnavailable, "a VM uses it")
	if err := s2.RemoveVolume(ctx, "dv", false); !errdefs.IsUnavailable(err) {
		t.Fatalf("remove with the datastore refusing: %v; want Unavailable", err)
	}
	if _, err := s2.InspectVolume(ctx, "dv"); err != nil {
		t.Fatalf("the volume after a refused removal: %v; want it kept", err)
	}
	disks.failRm = nil
	if err := s2.RemoveVolume(ctx, "dv", false); err != nil {
		t.Fatal(err)
	}
	if len(disks.removed) != 1 || disks.removed[0] != want {
		t.Errorf("disks removed %v; want %s", disks.removed, want)
	}
	if _, err := s2.InspectVolume(ctx, "dv"); !errdefs.IsNotFound(err) {
		t.Errorf("after removal: %v; want NotFound", err)
	}
}
