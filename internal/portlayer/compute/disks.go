package compute

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
)

// diskPlace says where a container's root disks are: host files (a
// qcow2 overlay in the container's directory over the image's raw rootfs
// disk, as the rootfs store built it) or, for a driver that keeps its own
// (hypervisor.DiskStore, vSphere's datastores), the driver's copies: the
// image's disk imported once per image, the overlay at the driver's path.
type diskPlace struct {
	root  string               // compute's root directory
	store hypervisor.DiskStore // nil: host files
}

// rw is container id's copy-on-write root disk.
func (p diskPlace) rw(id string) hypervisor.Disk {
	if p.store != nil {
		return hypervisor.Disk{Path: p.store.DiskPath("containers", id, "rw"), Format: "vmdk", Serial: wire.RootSerial}
	}
	return hypervisor.Disk{Path: filepath.Join(p.root, "containers", id, "rw.qcow2"), Format: "qcow2", Serial: wire.RootSerial}
}

// base is the read-only disk of the image whose rootfs disk is the host
// file local (named by the image's ID there): local itself, or the
// store's import of it, named by the file's base name (the image ID's
// hex), made on first use.
func (p diskPlace) base(ctx context.Context, local string) (hypervisor.Disk, error) {
	if p.store == nil {
		return hypervisor.Disk{Path: local, Format: "raw", ReadOnly: true}, nil
	}
	name := strings.TrimSuffix(filepath.Base(local), filepath.Ext(local))
	return p.store.ImportDisk(ctx, local, name)
}

// removeRW deletes container id's root disk from the driver's store; a
// host file goes with the container's directory.
func (p diskPlace) removeRW(ctx context.Context, id string) error {
	if p.store == nil {
		return nil
	}
	return p.store.RemoveDisk(ctx, p.rw(id).Path)
}
