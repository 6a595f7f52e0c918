package wire

import "fmt"

// # Templates: a guest saved before it knows its container
//
// A VM may start from a template instead of booting: a guest that booted
// once with [TemplateCmdline] on its kernel command line, bound only the
// drivers its channel needs ([ChannelModules]), opened the port, wrote
// [TemplateReady] and then waited, was frozen and saved by the VMM. Every
// VM restored from that template resumes inside that wait, with the
// template's kernel state, clock and randomness, and before anything else
// the host writes one [Wake] as a single JSON line ending in '\n' on the
// channel. The guest applies it (entropy, clock, binding its device
// drivers to this VM's own devices, its NICs' addresses), answers [Awake]
// and only then serves sessions as a booted guest does: everything about
// the container comes after the wake.

// TemplateCmdline is the kernel argument that boots a guest as a template.
const TemplateCmdline = "vch.template=1"

// TemplateReady is what a template guest writes on the channel once it
// waits for its [Wake]: the moment to save it.
const TemplateReady = "vch-template-ready\n"

// Awake is what a restored guest writes after it applied its [Wake],
// before it serves sessions.
const Awake = "vch-awake\n"

// MaxWakeBytes bounds one [Wake] line: a seed and a few MACs fit many
// times over, and the guest reads it byte by byte.
const MaxWakeBytes = 4096

// EntropyBytes is how much fresh host entropy a [Wake] carries: 64 bytes,
// twice the 256 bits the guest's CRNG keys itself from.
const EntropyBytes = 64

// ChannelModules are the modules (in load order) a template guest loads
// first: the virtio-mmio transport and virtio-serial, for its channel,
// and the memory balloon (free page reporting), which knows nothing of a
// container and so binds in the template.
// Block, network, 9p and other device drivers are loaded after them with
// the virtio bus's autoprobe off (or, where it cannot be turned off,
// after the wake), and bind after the wake, so they probe the restored
// VM's own disks, NICs and shares, never the template's placeholders.
var ChannelModules = []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_console", "virtio_balloon"}

// Wake is the first message to a guest restored from a template.
type Wake struct {
	// TimeUnixNano is the host's clock when it sent the wake; the guest
	// sets its own from it (a restored clock continues from the save).
	TimeUnixNano int64 `json:"time_unix_nano"`
	// Entropy is fresh host randomness ([EntropyBytes] of it), credited to
	// the guest kernel's pool and used to reseed its CRNG, so clones of
	// one template never share random numbers.
	Entropy []byte `json:"entropy"`
	// BootMACs are the hardware addresses of this VM's NICs, in device
	// order: the guest sees NIC i with [TemplateMAC](i), the template's
	// address, and treats it as the NIC whose [Interface.BootMAC] is
	// BootMACs[i].
	BootMACs []string `json:"boot_macs,omitempty"`
	// Deferred wakes a VM kept ready for a container not yet known (a
	// warm VM): the guest takes the entropy and clock, answers [Awake] and
	// serves sessions, but binds no disk, NIC or share and mounts no root
	// until a [RequestClaim] gives it the container's wake. Until then it
	// refuses [RequestSetup] and processes.
	Deferred bool `json:"deferred,omitempty"`
}

// RequestClaim is a global request to a guest woken with [Wake.Deferred]:
// its payload is the [Wake] of the container the VM now belongs to
// (fresh entropy, the clock, the NICs' boot MACs; Deferred false). The
// guest reseeds its CRNG again, sets its clock, binds its root disk and
// shares, mounts the root and replies once it can take [RequestSetup].
// A guest not woken deferred, or already claimed, refuses it.
const RequestClaim = "claim@vch-" + Version3

// TemplateMAC is the hardware address a template gives its NIC i (0..255):
// locally administered, never a container's (those come from the VCH's
// networks), the same for every template so the guest can find NIC i in
// a restored VM.
func TemplateMAC(i int) string { return fmt.Sprintf("02:76:63:68:ff:%02x", i&0xff) }
