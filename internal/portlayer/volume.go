package portlayer

import (
	"context"
	"time"
)

// VolumeSpec describes a volume to create (by CreateVolume, or for a
// volume named by a container's mount that does not exist yet).
type VolumeSpec struct {
	// Name is the volume's name: two or more characters of
	// [a-zA-Z0-9][a-zA-Z0-9_.-]. Empty means a new anonymous volume named
	// with 64 lowercase hex digits.
	Name string
	// Labels are kept verbatim; the port layer never interprets them.
	Labels map[string]string
	// Options are driver options. The only one is "size": the disk's
	// size, a number with an optional unit k, m, g, t or p (any case,
	// powers of 1024, "i" and "b" optional: "512m", "20g", "1.5GiB");
	// absent means the store's default. InvalidArgument for any other key.
	Options map[string]string
	// Anonymous marks a volume created for one container's mount (a mount
	// without a source, an image config's Volumes entry). The port layer
	// only records it: it lets a front end prune only anonymous volumes
	// unless asked for all, and remove a container's with the container.
	Anonymous bool
}

// Volume is a volume's record. A volume is a sparse ext4 disk image that a
// container VM attaches as an extra disk and mounts; data on it outlives
// every container.
type Volume struct {
	// Name is the volume's name (64 hex digits for anonymous volumes).
	Name string
	// Driver is "local", the only driver.
	Driver string
	// Mountpoint is the host path of the volume's directory, which holds
	// its disk image (not a directory of the volume's files, which live
	// inside the disk and are seen only by the container VMs).
	Mountpoint string
	// DiskPath is the volume's ext4 disk: the host path of a raw disk
	// image, or, on a datastore volume store, the hypervisor's path of
	// its disk ("[DATASTORE] PATH/NAME/NAME.vmdk").
	DiskPath string
	// DiskFormat is DiskPath's format: "raw" (a host file) or "vmdk" (a
	// datastore's disk).
	DiskFormat string
	CreatedAt  time.Time
	Labels     map[string]string
	// Options are the driver options the volume was created with.
	Options map[string]string
	// SizeBytes is the disk's size (its capacity, not its use on the host).
	SizeBytes int64
	// DiskUsageBytes is the space the sparse disk takes on the host (its
	// allocated blocks) when the record was read.
	DiskUsageBytes int64
	Anonymous      bool
}

// Volumes is the volume store: create, inspect, list and remove.
// Safe for concurrent use.
type Volumes interface {
	// CreateVolume creates a volume and returns its record. Creating a
	// volume whose name exists returns the existing volume unchanged, so
	// creates by name are idempotent. InvalidArgument for a bad name or
	// option.
	CreateVolume(ctx context.Context, spec VolumeSpec) (Volume, error)
	// InspectVolume returns one volume. NotFound if there is none.
	InspectVolume(ctx context.Context, name string) (Volume, error)
	// ListVolumes returns every volume, by name.
	ListVolumes(ctx context.Context) ([]Volume, error)
	// RemoveVolume deletes a volume and its disk. NotFound if there is
	// none (nil with force); Conflict (VolumeInUse: reason in_use, the
	// containers' IDs) if a container, running or not, uses it — force
	// does not override that.
	RemoveVolume(ctx context.Context, name string, force bool) error
}

// MountType is the kind of a container mount.
type MountType string

// Mount types; the spellings are the Engine API's Mount.Type values.
const (
	// MountVolume mounts a volume (its disk) at the target.
	MountVolume MountType = "volume"
	// MountTmpfs mounts a fresh tmpfs (memory of the container VM).
	MountTmpfs MountType = "tmpfs"
	// MountBind mounts a host directory, shared with the VM over
	// virtio-9p; the container sees and changes the host's files.
	MountBind MountType = "bind"
	// MountImage mounts an image's root filesystem, read-only: its
	// rootfs disk (RootfsStore.Rootfs), attached read-only to the
	// container's VM (Docker's Mount.Type "image", Engine API 1.48).
	MountImage MountType = "image"
)

// MountSpec is one filesystem mounted into a container: a volume (also
// one for an image config's Volumes entry), a tmpfs, a host directory or
// an image's root filesystem.
type MountSpec struct {
	Type MountType
	// Source is the volume's name for MountVolume; empty at create means a
	// new anonymous volume, which the port layer names (and records here).
	// For MountBind, the absolute host path of a directory, which must lie
	// under one of the host directories the VCH allows (PermissionDenied
	// otherwise). For MountImage, the image's ID ("sha256:" plus 64 hex):
	// a front end resolves the reference its user gave. Empty for
	// MountTmpfs.
	Source string
	// Target is the absolute, clean path inside the container; not "/".
	Target string
	// ReadOnly mounts read-only; enforced by the guest's kernel. Always
	// true for MountImage (the port layer sets it).
	ReadOnly bool
	// NoCopy skips the copy-up: by default an empty volume is filled,
	// when mounted, with what the container's image has at Target (owner
	// and mode of the directory included).
	NoCopy bool
	// Anonymous marks a volume created for this container (a front end
	// may remove it with the container). Set by the port layer for an
	// empty Source.
	Anonymous bool
	// Options are, for MountTmpfs, comma-separated mount options: flags
	// (ro, noexec, nosuid, nodev and their opposites, …) and data
	// (size=64m, mode=1777, …); when an option repeats or comes with its
	// opposite, the later wins. Front ends put their defaults first
	// (e.g. noexec,nosuid,nodev). Empty for volumes.
	Options string
	// CreateHostDir creates a missing bind source directory (mode 0755,
	// parents too); without it a missing source is InvalidArgument.
	CreateHostDir bool
	// Subpath, for a named MountVolume, is a path inside the volume
	// (relative and lexically local: no "..", not absolute) mounted at
	// Target instead of the volume's root; a directory or a file, its
	// symlinks followed while they stay inside the volume (Docker's
	// VolumeOptions.Subpath). Checked when the container starts: a
	// subpath that names nothing fails the start with ClassNotFound,
	// ReasonMissing; one whose links lead out of the volume with
	// ClassInvalidArgument, ReasonEscapes (KindMount, Field "Subpath",
	// Value the subpath, Name the volume). At create, a subpath that is
	// not lexically local is ReasonInvalid and one on an anonymous volume
	// or a tmpfs or bind mount ReasonExclusive. For MountImage, the same
	// inside the image's root filesystem (Docker's ImageOptions.Subpath;
	// the errors' Name is then the image's ID).
	Subpath string
	// VolumeLabels and VolumeOptions create a missing named volume (or the
	// anonymous one) with these labels and driver options (as
	// VolumeSpec's Labels and Options).
	VolumeLabels  map[string]string
	VolumeOptions map[string]string
}
