// Package hypervisor is the driver contract: run one VM described by a
// [Spec], watch it, and stop it. It knows nothing of containers or Docker.
//
// Drivers (qemu, later vsphere) live in sub-packages; hvtest holds the
// conformance suite every driver runs. Extras that not every driver has are
// reported through [Capabilities], never by type switches.
package hypervisor

import (
	"context"
	"net"
	"os"
	"time"
)

// Disk is one block device given to the guest, in the order of the slice
// (the first is /dev/vda in a Linux guest).
type Disk struct {
	// Path is the host path of the disk file.
	Path string
	// Format is the file's format: "raw" or "qcow2".
	Format string
	// ReadOnly exposes the disk read-only to the guest.
	ReadOnly bool
	// Serial is the disk's serial number as the guest sees it (virtio-blk:
	// /sys/block/vdX/serial), at most MaxDiskSerial ASCII letters, digits,
	// '-' or '_'; empty means none. Guests find their disks by serial,
	// since the order devices are probed in is not a contract.
	Serial string
}

// NIC is one network interface given to the guest, in the order of the
// slice. The driver passes File to the VMM (a tap device for QEMU).
type NIC struct {
	// File is the open host device backing the NIC; the caller keeps
	// ownership and may close it once Start returned.
	File *os.File
	// MAC is the interface's hardware address, "02:42:ac:11:00:02" form.
	MAC string
}

// Share is a host directory given to the guest as a filesystem.
type Share struct {
	// Tag is the name the guest mounts it by (virtio-9p mount_tag): at
	// most MaxShareTag ASCII letters, digits, '-' or '_', unique in a Spec.
	Tag string
	// Path is the absolute host path of the directory.
	Path string
	// ReadOnly refuses the guest's writes in the VMM as well.
	ReadOnly bool
}

// MaxShareTag is the longest Share.Tag: virtio-9p's config space holds a
// 16-bit length, QEMU refuses tags longer than 31 bytes.
const MaxShareTag = 31

// MaxDiskSerial is the longest Disk.Serial: virtio-blk's ID field holds
// 20 bytes (virtio spec 1.2, 5.2.6 "VIRTIO_BLK_T_GET_ID").
const MaxDiskSerial = 20

// Spec describes a VM. It is a value: drivers copy what they need.
type Spec struct {
	// Name identifies the VM for logs and for the driver's runtime files;
	// it must be unique among running VMs of one driver (use the container ID).
	Name string
	// Kernel and Initrd are host paths of the guest kernel (bzImage) and
	// initramfs (newc cpio, optionally compressed).
	Kernel, Initrd string
	// Cmdline is appended to the driver's own kernel arguments.
	Cmdline string
	// MemoryMiB is guest RAM in MiB (16..65536).
	MemoryMiB int
	// CPUs is the number of vCPUs (1..64).
	CPUs int
	// ChannelName names the virtio-serial port that carries the guest
	// channel (the guest finds it in /sys/class/virtio-ports/*/name).
	ChannelName string
	// Disks are attached in order.
	Disks []Disk
	// Shares are host directories the guest mounts (virtio-9p; the guest
	// kernel needs 9p support). Drivers without them refuse a spec that
	// has any (Capabilities.Shares).
	Shares []Share
	// NICs are attached in order.
	NICs []NIC
	// RuntimeDir is a private host directory where the driver keeps sockets,
	// console log and pid files for this VM. It must exist.
	RuntimeDir string
}

// Limits of Spec fields, each with its reason.
const (
	// MinMemoryMiB: below this the Debian guest kernel does not finish booting.
	MinMemoryMiB = 64
	// MaxMemoryMiB: a sanity bound well above what one host can give one VM.
	MaxMemoryMiB = 65536
	// MaxCPUs: QEMU microvm's practical vCPU bound.
	MaxCPUs = 64
)

// Capabilities says what a driver can do beyond the contract.
type Capabilities struct {
	// Pause: the VM can be frozen and resumed.
	Pause bool
	// Accelerator names the accelerator in use ("kvm", "tcg", "vsphere").
	Accelerator string
	// Adopt: VMs outlive the process that started them, and a new driver
	// (the daemon restarted) takes them back with [Adopter].
	Adopt bool
	// Shares: Spec.Shares are supported (host directories over virtio-9p).
	Shares bool
	// Templates: VMs can be saved as templates and restored from them
	// instead of booting ([Templater]).
	Templates bool
	// WarmRestore: VMs can be restored from a template before their
	// disks are known, and get them later ([WarmRestorer]).
	WarmRestore bool
	// TransferDisk: every VM has a transfer disk ([Transferrer]).
	TransferDisk bool
}

// ExitStatus is how a VM ended.
type ExitStatus struct {
	// Err is nil when the guest powered off by itself; otherwise it says why
	// the VMM ended (killed, crashed).
	Err error
	// At is when the driver saw the VM end.
	At time.Time
}

// VM is a running virtual machine.
type VM interface {
	// Channel returns the guest channel: a byte stream to the guest agent
	// (a virtio-serial port). Call it once; the driver owns its lifetime.
	Channel() net.Conn
	// Pid is the host PID of the VMM process, 0 where there is none.
	Pid() int
	// Done is closed when the VM has ended and its resources are released.
	Done() <-chan struct{}
	// Status reports how the VM ended; valid after Done is closed.
	Status() ExitStatus
	// Kill ends the VM at once (power cut). Idempotent.
	Kill() error
}

// Pauser is implemented by the VMs of drivers whose Capabilities report
// Pause: the whole VM (every vCPU and device) is frozen and resumed.
type Pauser interface {
	// Pause freezes the VM. Unavailable if the VMM does not answer.
	Pause(ctx context.Context) error
	// Resume continues a frozen VM.
	Resume(ctx context.Context) error
}

// DiskStaller is implemented by the VMs of drivers whose VMM stops the
// whole VM, rather than failing the guest's request, when a write to a
// disk's host file fails for lack of space (QEMU's werror=enospc, its
// default): nothing the guest wrote is lost, and the write is retried
// when the VM runs again (Pauser.Resume), stopping it again if space is
// still short.
type DiskStaller interface {
	// DiskStalled reports whether the VM is stopped on such a write.
	// Unavailable if the VMM does not answer.
	DiskStalled(ctx context.Context) (bool, error)
}

// Adopter is implemented by drivers whose Capabilities report Adopt: their
// VMs keep running when the daemon that started them stops or dies, and
// the next daemon takes them back.
type Adopter interface {
	// Adopt takes back the running VM that was started with spec and
	// returns it as Start does: its guest channel connected again (the
	// guest agent on the other end is the one that already runs, with
	// its state), Pid, Done, Status and Kill working although the VMM is
	// not the caller's child. Only spec.Name and spec.RuntimeDir are used:
	// they find the VM. The VM is returned running: one found paused
	// (Pauser) is resumed first, as a frozen guest cannot take its
	// channel back; a caller that wants it paused pauses it again.
	// Status of an adopted VM: Err nil when the VMM
	// exited cleanly (a guest power-off), otherwise why it ended as far as
	// the driver can tell.
	//
	// NotFound if no VM of that spec runs (its VMM has ended, or the
	// process found is not this VM's VMM). Unavailable if it runs but its
	// channel does not connect within the driver's bound; the VM is then
	// killed, so no VM runs that nobody supervises. Safe to call for a VM
	// whose previous channel is still open: the driver waits (bounded by
	// ctx) until the VMM connects again.
	Adopt(ctx context.Context, spec Spec) (VM, error)
}

// Placer is implemented by the VMs of drivers that run VMs on one of
// several hosts (vSphere's ESX hosts), for docker info and inspect.
type Placer interface {
	// Host is the host the VM runs on (the driver's name for it, an ESX
	// host's inventory name for vSphere), "" if the driver does not say
	// (not known yet).
	Host() string
}

// Templater is implemented by drivers whose Capabilities report
// Templates: a VM is booted once as a template, saved at a moment the
// guest chooses, and VMs of the same shape are then restored from it
// instead of booting, sharing its unmodified memory.
//
// A template never holds anything of one VM's own: its disks, NICs and
// shares are placeholders, so the guest must not touch them before it is
// saved, and after a restore it finds the VM's own devices (as a guest
// does that loads their drivers only then).
type Templater interface {
	// TemplateKey names the template spec needs, in letters and digits:
	// equal for specs of one shape — the same kernel and initrd contents,
	// Cmdline, MemoryMiB, CPUs, ChannelName and number of Disks, NICs and
	// Shares, on this driver, VMM and host — and different otherwise.
	// Name, RuntimeDir, paths, serials, read-only flags, NIC files and
	// MACs do not count. Unavailable if the boot files cannot be read.
	TemplateKey(spec Spec) (string, error)
	// SaveTemplate boots spec as a template whose files go into dir (an
	// existing directory the caller owns, holding nothing else); only the
	// shape of spec's Disks, NICs and Shares is used, with placeholders
	// in their place (NIC i keeps NICs[i].MAC; its File is not used).
	// ready is called with the guest channel and returns once the guest
	// waits to be saved; then the VM is frozen, saved into dir and ended.
	// ready's error is returned as it is; InvalidArgument for a bad spec;
	// Unavailable if the VMM fails. Spec.RuntimeDir holds the template
	// VM's runtime files as for Start.
	SaveTemplate(ctx context.Context, spec Spec, dir string, ready func(ctx context.Context, channel net.Conn) error) error
	// Restore starts a VM of spec from the template saved in dir, as Start
	// does, but the guest resumes where ready left it, with spec's own
	// disks, NICs and shares (the guest runs the template's kernel with
	// the template's Cmdline). It returns once the channel is connected.
	// FailedPrecondition if dir holds no template, or one whose key is
	// not spec's (the caller may Start the VM instead); InvalidArgument
	// for a bad spec; Unavailable if the VMM fails (a state that does not
	// load ends the VM: Done is closed).
	Restore(ctx context.Context, spec Spec, dir string) (VM, error)
}

// WarmRestorer is implemented by drivers whose Capabilities report
// WarmRestore: a VM is restored from a template ahead of need, before the
// disks of the container it will run are known, and is given them when
// it is claimed ([DiskPlugger]). Its NICs and shares are spec's from the
// start (a VMM cannot swap those under a running device).
type WarmRestorer interface {
	// RestoreWarm restores as Templater.Restore does, except that spec's
	// Disks give each slot's shape (ReadOnly and Serial) and, optionally,
	// the image it starts as (Path and Format, raw or qcow2: a rehearsal
	// image made for this VM alone, which PlugDisks removes); a slot
	// without a Path starts as an empty placeholder in spec.RuntimeDir.
	// The guest must not have a slot's device bound when PlugDisks
	// replaces its image. Errors are Restore's, and InvalidArgument for a
	// slot image of another format.
	RestoreWarm(ctx context.Context, spec Spec, dir string) (VM, error)
}

// TransferDiskSerial is the serial of a VM's transfer disk ([Transferrer]),
// as the guest sees it.
const TransferDiskSerial = "vch-transfer"

// TransferDiskBytes is the capacity of a transfer disk as the guest sees
// it, whatever image it holds (1 GiB): every image is extended to this
// size, since a virtio-blk guest reads a disk's capacity when it binds the
// device and again only on a resize, not when the image under it changes.
const TransferDiskBytes = 1 << 30

// Transferrer is implemented by the VMs of drivers whose Capabilities
// report TransferDisk: every VM has a transfer disk, a read-only disk
// after Spec's own disks, shares and NICs, with serial
// [TransferDiskSerial], whose image the host changes while the VM runs. It carries bulk data into the guest at disk speed
// (docker cp into a container) instead of over the guest channel, whose
// host-to-guest direction the guest's one-page reads bound.
type Transferrer interface {
	// LoadTransfer makes the raw file at path the transfer disk's image,
	// in place of the one before (which the VMM then no longer holds
	// open), or an empty one for path "". The file must hold at most
	// TransferDiskBytes bytes; LoadTransfer extends it, sparse, to that
	// size. The guest must read the disk with direct I/O (O_DIRECT): what
	// its page cache holds of an earlier image is stale. InvalidArgument
	// for a file too large; FailedPrecondition if the VM has no transfer
	// disk (a VM started before drivers had one); Unavailable if the VMM
	// does not answer.
	LoadTransfer(ctx context.Context, path string) error
}

// DiskPlugger is implemented by the VMs RestoreWarm returns.
type DiskPlugger interface {
	// PlugDisks puts disks in the VM's disk slots, in order, in place of
	// the placeholders: one per slot, each with its slot's ReadOnly and
	// Serial. Call it once, before the guest binds the disks' drivers.
	// InvalidArgument if disks do not match the slots; Unavailable if the
	// VMM refuses (the VM is then the caller's to kill).
	PlugDisks(ctx context.Context, disks []Disk) error
}

// DiskStore is implemented by drivers whose VMs cannot use host files:
// their disks and boot files live in the driver's own store (vSphere: a
// datastore), named by the driver's paths. A caller that finds it gives
// such a driver only paths it returned: Spec.Kernel and Spec.Initrd from
// ImportBoot, base disks from ImportDisk, overlays at DiskPath (made with
// Driver.CreateOverlay). Host paths are still right for drivers without
// it (qemu).
type DiskStore interface {
	// ImportBoot copies the guest kernel (bzImage) and initramfs host
	// files into the store and returns the Spec.Kernel and Spec.Initrd
	// that boot them. Idempotent: the same files give the same paths and
	// are copied once. Unavailable if a tool the copy needs is missing
	// (the message names its package).
	ImportBoot(ctx context.Context, kernel, initrd string) (specKernel, specInitrd string, err error)
	// ImportDisk copies the raw disk image host file src into the store
	// as the read-only base disk name (letters, digits, '-', '_', '.';
	// at most 128 bytes) and returns it. The copy is made once: a disk
	// of that name already in the store is returned as it is, so name
	// must change when the content does (a digest). InvalidArgument for
	// a bad name; NotFound if src is missing.
	ImportDisk(ctx context.Context, src, name string) (Disk, error)
	// DiskPath is the store's path of the caller's disk named by elems
	// ("containers", ID, "rw"): where Driver.CreateOverlay may make it.
	// Each elem is a name as for ImportDisk.
	DiskPath(elems ...string) string
	// RemoveDisk deletes a disk of the store that no running VM uses
	// (an overlay at DiskPath) and the directory DiskPath made for it
	// when that is left empty. A disk already gone is no error.
	RemoveDisk(ctx context.Context, path string) error
}

// VolumeStore is implemented by DiskStore drivers whose volume stores are
// directories of their own store too (vSphere: "[DATASTORE] PATH", a
// --volume-store NAME:ds://DATASTORE/PATH). The volume store makes each
// volume's disk as a host file and hands it over; the driver's copy is
// then the volume, attached read-write to the VMs that mount it.
type VolumeStore interface {
	// ImportVolume copies the raw disk image host file src into the
	// store directory dir (the driver's form; "[DATASTORE] PATH" on
	// vSphere) as the writable disk of the volume name (letters, digits,
	// '_', '.', '-'), DIR/NAME/NAME.vmdk on vSphere, and returns it. A
	// disk left at that path by an import cut short is replaced.
	// InvalidArgument for a bad dir or name; NotFound if src or dir's
	// datastore is missing; Unavailable if the store refuses.
	ImportVolume(ctx context.Context, src, dir, name string) (Disk, error)
	// RemoveVolume deletes a disk ImportVolume returned (path is its
	// Disk.Path) and the directory it made for it. A disk already gone
	// is no error; Unavailable if the store refuses (a VM uses it).
	RemoveVolume(ctx context.Context, path string) error
}

// Driver runs VMs. Safe for concurrent use.
type Driver interface {
	// Start boots a VM and returns when its guest channel is connected.
	// InvalidArgument for a bad spec; Unavailable if the VMM cannot start
	// (missing binary, kernel or accelerator).
	Start(ctx context.Context, spec Spec) (VM, error)
	// CreateOverlay creates a copy-on-write disk at path over the read-only
	// base disk (never a copy of it), growing to sizeBytes at most. Returns
	// the new disk's format.
	CreateOverlay(ctx context.Context, base Disk, path string, sizeBytes int64) (Disk, error)
	// Capabilities reports what this driver supports on this host.
	Capabilities() Capabilities
}
