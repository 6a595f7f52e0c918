// Package portlayer is the Port Layer contract: a small, general container
// backend that front ends call (the Docker personality and vch ctl are
// two).
//
// It owns the value types that cross the seam (container specs and states,
// image records, log messages, pull progress) and one interface per area:
// [Compute] for container lifecycle as VMs, [Interaction] for attach and logs,
// and [Images] for the image store. Implementations live in sub-packages
// (compute, storage); nothing here knows about HTTP, a front end's JSON or
// QEMU.
//
// Errors are classified with github.com/containerd/errdefs sentinels and
// wrapped with %w: NotFound (no such container or image), AlreadyExists
// (name in use), Conflict (wrong state for the operation), InvalidArgument
// (bad spec), Unavailable (the VM or guest does not answer). Front ends map
// those classes to their own codes and texts.
package portlayer

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/containerd/errdefs"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ContainerSpec describes the container to create. Front-end semantics (how
// an image config's Entrypoint and Cmd combine with the caller's, defaults
// from the image) are resolved before the spec reaches the port layer: Args
// is the final argv.
type ContainerSpec struct {
	// Name is a unique, user-chosen name without a leading slash; empty
	// names the container by its short ID (12 hex digits). AlreadyExists
	// (Reason name_in_use, ID the other container's) if another has it.
	Name string
	// Image is the image's ID, "sha256:" plus 64 hex digits.
	Image string
	// ImageRef is the reference the user asked for (e.g. "busybox:latest"),
	// kept for display only.
	ImageRef string
	// Args is the process's argv; Args[0] is looked up in the guest's PATH
	// when it has no slash. Must not be empty.
	Args []string
	// Env holds "KEY=value" entries, image entries first, later ones win.
	Env []string
	// WorkingDir is an absolute path inside the container; empty means "/".
	WorkingDir string
	// User is "name", "uid", "name:group" or "uid:gid", resolved against the
	// container's own /etc/passwd and /etc/group; empty means root.
	User string
	// GroupAdd are supplementary groups the container's processes (its
	// main process and every exec) get besides the user's own: group
	// names or numeric IDs, names resolved against the container's
	// /etc/group at each start (OCI runtime-spec process.user.additionalGids).
	GroupAdd []string
	// Hostname is the guest's hostname; empty means the first 12 hex digits
	// of the container ID.
	Hostname string
	// Domainname is the guest's NIS domain name; may be empty.
	Domainname string
	// Tty allocates a pseudo-terminal for the process; stdout and stderr are
	// then one stream.
	Tty bool
	// ConsoleRows and ConsoleCols are the TTY's initial size in character
	// cells (with Tty); 0 is the guest's 24×80 until a resize.
	ConsoleRows, ConsoleCols uint
	// OpenStdin keeps the process's stdin open for attach.
	OpenStdin bool
	// StdinOnce closes stdin after the first attached client detaches.
	StdinOnce bool
	// StopSignal is the signal number sent by Stop; 0 means SIGTERM (15).
	StopSignal int
	// StopTimeout is how long Stop waits before killing; nil means 10 s.
	StopTimeout *time.Duration
	// MemoryMiB is the guest RAM in MiB; 0 sizes it from Limits (see
	// VMMemoryMiB).
	MemoryMiB int
	// CPUs is the number of vCPUs; 0 sizes it from Limits (see VMCPUs).
	CPUs int
	// Limits bound the container's processes inside their VM.
	Limits ResourceLimits
	// NoNewPrivileges keeps every process of the container from gaining
	// privileges (PR_SET_NO_NEW_PRIVS: setuid bits and file capabilities
	// are ignored).
	NoNewPrivileges bool
	// WritableCgroup lets the container write its own cgroup files (its
	// /sys/fs/cgroup is read-only otherwise).
	WritableCgroup bool
	// Seccomp is a syscall filter for every process of the container: an
	// OCI runtime-spec linux.seccomp object, JSON; nil: none.
	Seccomp []byte
	// MaskedPaths are container paths hidden from its processes and
	// ReadonlyPaths ones they cannot write (OCI runtime-spec
	// linux.maskedPaths and linux.readonlyPaths); nil: none.
	MaskedPaths, ReadonlyPaths []string
	// Init runs a minimal init as the container's PID 1 that forwards
	// signals and reaps zombies, for programs not written to be PID 1.
	Init bool
	// ShmSizeBytes sizes /dev/shm (a tmpfs); 0 means the default, 64 MiB.
	ShmSizeBytes int64
	// Sysctls are kernel parameters set in the guest before the process
	// starts: "net.ipv4.ip_forward" → "1" (dots name /proc/sys paths).
	// The guest kernel is the container's own, so any writable parameter
	// may be set.
	Sysctls map[string]string
	// LogMaxSizeBytes rotates the log file when it would grow past this
	// many bytes; 0 means the VCH default (10 MiB).
	LogMaxSizeBytes int64
	// LogMaxFiles is how many log files (current plus rotated) are kept;
	// 0 means the VCH default (3). With LogMaxSizeBytes: the json-file log
	// format's max-size and max-file rotation.
	LogMaxFiles int
	// NoLog keeps no log of the output (Docker's "none" logging driver):
	// attached clients still receive it as it comes, and what no client
	// reads is dropped; Logs, and Attach with Logs, fail with
	// ClassFailedPrecondition, ReasonNoLog. The log size fields are then
	// ignored.
	NoLog bool
	// AutoRemove removes the container once it has exited and its exit has
	// been delivered to waiters.
	AutoRemove bool
	// Networks are joined at each start in order (the first is eth0 and
	// carries published ports). Empty means loopback only.
	Networks []EndpointSpec
	// NoNetwork marks a loopback-only container (--network none): it can
	// never be connected to a network.
	NoNetwork bool
	// Ports are published on the host while the container runs.
	Ports []PortBinding
	// DNS, DNSSearch and DNSOptions replace the nameserver, search and
	// options lines of the container's resolv.conf (resolv.conf(5));
	// empty keeps the default.
	DNS, DNSSearch, DNSOptions []string
	// ExtraHosts are "name:address" lines added to /etc/hosts (--add-host).
	ExtraHosts []string
	// Mounts are mounted in the guest in order (see volume.go).
	Mounts []MountSpec
	// ReadOnlyRootfs mounts the root filesystem read-only (--read-only).
	ReadOnlyRootfs bool
	// RestartPolicy says when the port layer starts the container again
	// after it exits, and after the VCH itself restarts. The zero value
	// never restarts. Incompatible with AutoRemove (InvalidArgument).
	RestartPolicy RestartPolicy
	// CaptureChanges takes the container's changes layer in the guest when
	// its main process exits and keeps it until the next start, so that
	// Archives.ChangesLayer after the exit boots no VM (a builder's RUN
	// step commits each exited container).
	CaptureChanges bool
	// Annotations is front-end data kept verbatim with the record (a front
	// end keeps its own form of the container here). Keys are namespaced
	// by front end, e.g. "docker.config". The port layer never interprets
	// them.
	Annotations map[string][]byte
}

// Restart policy names, the values of RestartPolicy.Name.
const (
	RestartNo            = "no"
	RestartAlways        = "always"
	RestartUnlessStopped = "unless-stopped"
	RestartOnFailure     = "on-failure"
)

// RestartPolicy is when the port layer starts a container again by
// itself (the rules are those of the Engine API's
// HostConfig.RestartPolicy, v1.50, which users of restart policies
// know):
//
//   - RestartAlways: after every exit, unless stopped by hand (Stop or
//     Kill); after the VCH restarts, even if stopped by hand.
//   - RestartUnlessStopped: as always, but a container stopped by hand
//     stays stopped across VCH restarts too.
//   - RestartOnFailure: after a non-zero exit, at most MaximumRetryCount
//     times in a row (0: no limit), unless stopped by hand.
//   - RestartNo or "": never.
//
// Restarts wait 100 ms, doubling after each one up to 1 min, and back to
// 100 ms once a run lasted 10 s. Between the exit and the restart the
// container's status is restarting; each restart counts in
// Container.RestartCount, which a start by hand sets back to 0.
type RestartPolicy struct {
	Name              string
	MaximumRetryCount int
}

// Status is a container's lifecycle state; its spellings are part of the
// API (the Engine API's State.Status values).
type Status string

// Container states.
const (
	StatusCreated    Status = "created"
	StatusRunning    Status = "running"
	StatusPaused     Status = "paused"
	StatusRestarting Status = "restarting"
	StatusRemoving   Status = "removing"
	StatusExited     Status = "exited"
	StatusDead       Status = "dead"
)

// State is a container's runtime state.
type State struct {
	Status Status
	// Pid is the host PID of the container's VMM process while running, else 0.
	Pid int
	// ExitCode is the main process's exit status; 128+N when killed by
	// signal N. Valid when Status is exited (or created after a failed start).
	ExitCode int
	// Error is the reason a start failed or the VM died, else empty.
	Error string
	// OOMKilled reports that the guest killed the process for lack of memory.
	OOMKilled bool
	// StartedAt and FinishedAt are zero until the first start/exit.
	StartedAt  time.Time
	FinishedAt time.Time
	// Host is the host the VM of the current run runs on, or the last
	// run ran on, for hypervisors that place VMs over several hosts (an
	// ESX host's inventory name on vSphere, followed as vSphere moves the
	// VM); empty for a VM on the VCH's own host, or before a first start.
	Host string `json:",omitempty"`
}

// Container is a container's record as persisted by the port layer.
type Container struct {
	// ID is 64 lowercase hex digits.
	ID      string
	Created time.Time
	Spec    ContainerSpec
	State   State
	// RestartCount counts restarts done by the port layer since the last
	// start by hand.
	RestartCount int
	// ManuallyStopped is set when a user stopped or signalled the
	// container (through Stop or Kill) and cleared by the next
	// start by hand; restart policies consult it.
	ManuallyStopped bool
	// LogPath is the host path of the container's log file; "" when it
	// keeps none (Spec.NoLog).
	LogPath string
	// Endpoints are the container's live network attachments and Ports its
	// published ports with the host ports chosen; both empty when it does
	// not run.
	Endpoints []Endpoint
	Ports     []PortBinding
}

// WaitCondition selects when Wait reports; the values are the Engine
// API's wait conditions (v1.50, POST /containers/{id}/wait).
type WaitCondition string

// Wait conditions.
const (
	// WaitNotRunning reports at once if the container is not running,
	// otherwise at its next exit.
	WaitNotRunning WaitCondition = "not-running"
	// WaitNextExit reports at the container's next exit.
	WaitNextExit WaitCondition = "next-exit"
	// WaitRemoved reports once the container has been removed.
	WaitRemoved WaitCondition = "removed"
)

// WaitResult is what a waiter receives.
type WaitResult struct {
	ExitCode int
	// Error is non-empty when the wait itself failed (e.g. the daemon stops).
	Error string
}

// Compute runs containers as VMs. All methods are safe for concurrent use.
// idOrName accepts a full ID, a unique ID prefix, or a name.
type Compute interface {
	// Create records a new container in state created and prepares its
	// copy-on-write disk. InvalidArgument for a bad spec, NotFound if the
	// image is missing, AlreadyExists if the name is taken.
	Create(ctx context.Context, spec ContainerSpec) (Container, error)
	// Start boots the container's VM and starts its process; it returns once
	// the process runs. A running container (or one waiting for its
	// restart policy's restart) is left as it is: NotModified, reason
	// ReasonRunning, checked in one step with the start. If the
	// process cannot be started (e.g. executable not found) the error says
	// why in the guest's words and the container records exit code 127 or 126.
	Start(ctx context.Context, idOrName string) error
	// Stop sends the stop signal, waits timeout (nil: the container's
	// StopTimeout; negative: forever) and then kills the VM. A container
	// that does not run is left as it is: NotModified, reason
	// ReasonNotRunning, checked in one step with the stop.
	Stop(ctx context.Context, idOrName string, timeout *time.Duration) error
	// Kill delivers signal (a Linux signal number, 9 if 0) to the main
	// process. Conflict if the container is not running.
	Kill(ctx context.Context, idOrName string, signal int) error
	// Wait returns a channel that receives one result when cond is met.
	// NotFound if there is no such container.
	Wait(ctx context.Context, idOrName string, cond WaitCondition) (<-chan WaitResult, error)
	// Remove deletes the container, its writable disk and runtime files.
	// Conflict if it runs and force is false; with force it is killed first.
	Remove(ctx context.Context, idOrName string, force bool) error
	// Inspect returns one container's record. NotFound if none matches;
	// InvalidArgument if a prefix is ambiguous.
	Inspect(ctx context.Context, idOrName string) (Container, error)
	// List returns all containers, newest first.
	List(ctx context.Context) ([]Container, error)
	// Rename changes a container's name. AlreadyExists if taken.
	Rename(ctx context.Context, idOrName, newName string) error
}

// Pauser freezes and resumes whole container VMs, every process of the
// container at once. Safe for concurrent use.
type Pauser interface {
	// Pause freezes the container's VM; status becomes paused. NotFound;
	// Conflict if it is not running or already paused.
	Pause(ctx context.Context, idOrName string) error
	// Unpause resumes it and resets the guest clock to the host's.
	// NotFound; Conflict if it is not paused.
	Unpause(ctx context.Context, idOrName string) error
}

// ProcessInfo is one process of a running container.
type ProcessInfo struct {
	// PID and PPID are as seen inside the container.
	PID, PPID, UID int
	// Started is when the process started; CPUTime its user+system time.
	Started time.Time
	CPUTime time.Duration
	// TTY is "pts/N" or "?"; Cmd the command line.
	TTY, Cmd string
}

// ResourceLimits bound a container's processes inside its VM, enforced
// by the guest kernel (a cgroup v2 around every process of the
// container: memory.max, memory.swap.max, cpu.max, pids.max). Zero
// fields set no limit. They are limits on the processes, not the size
// of the machine: the VM is sized to hold them (VMMemoryMiB, VMCPUs).
type ResourceLimits struct {
	// MemoryBytes caps the processes' memory (anonymous and page cache),
	// in bytes; past it the kernel reclaims, then kills a process of the
	// container (an OOM kill, reported as State.OOMKilled).
	MemoryBytes int64
	// MemorySwapBytes caps memory plus swap, in bytes (swap alone is it
	// minus MemoryBytes): 0 is twice MemoryBytes, -1 unlimited swap. Only
	// with MemoryBytes.
	MemorySwapBytes int64
	// NanoCPUs caps CPU time in billionths of a CPU (1.5 CPUs is 1.5e9).
	NanoCPUs int64
	// CPUQuotaMicros per CPUPeriodMicros caps CPU time as a CFS quota, in
	// microseconds (cgroup v2 cpu.max "$MAX $PERIOD"; period 0 is
	// 100000). Not with NanoCPUs.
	CPUQuotaMicros, CPUPeriodMicros int64
	// PidsLimit caps the number of tasks (processes and threads).
	PidsLimit int64
}

// VMOverheadMiB is the guest RAM a container VM needs beyond its
// processes' memory limit: the guest kernel, its page tables and slabs,
// tether and the initramfs it runs from (an idle 256 MiB guest has ~180
// MiB available).
const VMOverheadMiB = 96

// VMMemoryMiB is the guest RAM of the container's VM, in MiB: MemoryMiB
// when set (an explicit size); else, with a memory limit, the smallest
// power of two that holds the limit plus VMOverheadMiB, and never less
// than the VCH's default; else the default. Sizes in powers of two keep
// the VM shapes (and the VM templates made for them) few, and leave a
// running container room to raise its limit (Updater) up to its
// VM's size. Guest RAM a VM never touches costs the host only its page
// descriptors (64 bytes per 4 KiB page, 1.6 %).
func (s ContainerSpec) VMMemoryMiB(defaultMiB int) int {
	if s.MemoryMiB > 0 {
		return s.MemoryMiB
	}
	if s.Limits.MemoryBytes <= 0 {
		return defaultMiB
	}
	need := int((s.Limits.MemoryBytes+1<<20-1)>>20) + VMOverheadMiB
	size := 1
	for size < need {
		size <<= 1
	}
	return max(defaultMiB, size)
}

// VMCPUs is the number of vCPUs of the container's VM: CPUs when set,
// else enough for Limits.NanoCPUs (rounded up; the cgroup quota holds
// the processes to the fraction), else the VCH's default.
func (s ContainerSpec) VMCPUs(defaultCPUs int) int {
	switch {
	case s.CPUs > 0:
		return s.CPUs
	case s.Limits.NanoCPUs > 0:
		return int((s.Limits.NanoCPUs + 1e9 - 1) / 1e9)
	}
	return defaultCPUs
}

// StatsSample is one sample of a container VM's resource use.
type StatsSample struct {
	Read time.Time
	// CPUBusyNanos and CPUTotalNanos are cumulative non-idle and total CPU
	// time over the VM's vCPUs, in nanoseconds; OnlineCPUs is their number.
	CPUBusyNanos, CPUTotalNanos uint64
	OnlineCPUs                  int
	// MemUsedBytes is what the container's processes use (their cgroup's
	// memory.current, or the guest's MemTotal − MemAvailable without a
	// cgroup); MemLimitBytes is their memory limit, or the guest's RAM
	// without one; MemInactiveFileBytes is the reclaimable page cache
	// within MemUsedBytes (memory.stat inactive_file), 0 without a
	// cgroup.
	MemUsedBytes, MemLimitBytes, MemInactiveFileBytes uint64
	// DiskReadBytes and DiskWriteBytes count the root disk's I/O.
	DiskReadBytes, DiskWriteBytes uint64
	// Pids counts the container's processes.
	Pids int
	// Networks are per-interface counters by guest interface name.
	Networks map[string]NetStats
}

// NetStats are one interface's cumulative counters.
type NetStats struct {
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Monitor reads what runs inside container VMs. Safe for concurrent use.
type Monitor interface {
	// Top lists the container's processes, PID order. NotFound; Conflict if
	// it is not running.
	Top(ctx context.Context, idOrName string) ([]ProcessInfo, error)
	// Stats samples the container VM. NotFound; Conflict if not running.
	Stats(ctx context.Context, idOrName string) (StatsSample, error)
}

// AttachOptions selects the streams of an attach. Nil writers are not
// attached. Stdin is read until EOF and then closed in the guest when the
// container was created with StdinOnce.
type AttachOptions struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Logs replays the output logged so far before live output.
	Logs bool
	// Stream attaches to live output until the process exits.
	Stream bool
}

// Attachment is a registered attach; output flows into the writers in the
// background.
type Attachment interface {
	// Done is closed when the streams have ended (process exit, Close, or
	// context end); all output written before the exit has been delivered.
	Done() <-chan struct{}
	// Close detaches without touching the container. Idempotent.
	Close() error
}

// LogOptions selects log messages by stream, time and count (the selectors
// of the Engine API's GET /containers/{id}/logs).
type LogOptions struct {
	Stdout, Stderr bool
	// Follow keeps the channel open for new output until the container stops
	// or ctx ends.
	Follow bool
	// Tail keeps only the last Tail messages; negative means all.
	Tail int
	// Since and Until bound message times; zero means unbounded.
	Since, Until time.Time
}

// LogMessage is one chunk of output as logged: usually one line including its
// trailing newline (a final line may lack it).
type LogMessage struct {
	// Stream is "stdout" or "stderr".
	Stream string
	Time   time.Time
	Data   []byte
}

// Interaction connects clients to container streams.
type Interaction interface {
	// Attach registers the streams and returns at once, before any output
	// flows, so a following Start loses nothing. NotFound if no container.
	Attach(ctx context.Context, idOrName string, opts AttachOptions) (Attachment, error)
	// Logs returns the container's logged output; the channel closes at the
	// end (or, with Follow, when the container stops or ctx ends).
	Logs(ctx context.Context, idOrName string, opts LogOptions) (<-chan LogMessage, error)
}

// Image is an image record. IDs are the config digest, "sha256:" plus 64 hex.
type Image struct {
	ID string
	// RepoTags are "name:tag" references, sorted; empty for untagged images.
	RepoTags []string
	// RepoDigests are "name@sha256:…" for images pulled from a registry.
	RepoDigests []string
	// Config is the OCI image configuration (OCI image-spec config.json).
	Config ocispec.Image
	// Layers are the uncompressed layer digests (diff IDs), base first.
	Layers []string
	// LayerSizes are the uncompressed sizes in bytes of Layers, in the
	// same order (same length). A layer shared by several images (same
	// diff ID) is stored once; callers computing shared sizes key on
	// Layers.
	LayerSizes []int64
	// Size is the sum of the uncompressed layer sizes in bytes.
	Size int64
	// Created is when the image was built (from its config).
	Created time.Time
	// Parent is the ID of the image this one was committed on (set by
	// Committer.Commit: a container's commit, each step of a build);
	// empty for pulled, loaded and imported images. Images that are
	// some image's Parent are its "children"'s intermediates.
	Parent string
	// ConfigExtra holds the members of the config's "config" object that
	// the OCI image-spec does not define, verbatim by name (the Docker
	// image config's Healthcheck, OnBuild, Shell, ArgsEscaped); nil if none.
	ConfigExtra map[string]json.RawMessage
}

// Progress is one step of a long image operation, for display.
type Progress struct {
	// ID names what progresses (a short layer digest or a tag); may be empty.
	ID string
	// Status is a short human text ("Pulling fs layer", "Download complete").
	Status string
	// Current and Total are bytes; Total 0 means unknown.
	Current, Total int64
}

// ProgressFunc receives progress; it must not block for long.
type ProgressFunc func(Progress)

// ImageDelete is one line of an image removal report: Untagged (a
// reference, familiar form) or Deleted (an image ID), the other empty.
type ImageDelete struct {
	Untagged string
	Deleted  string
}

// ImportOptions is what an import records besides its layer.
type ImportOptions struct {
	// Config supplies Cmd, Env, Entrypoint and the rest of the image's
	// configuration.
	Config ocispec.ImageConfig
	// Platform is the platform the image claims (its OS, architecture and
	// variant in the image config, OCI image-spec); zero means linux/amd64.
	// The store records what it is given; whether a container may run it
	// is decided when one is created.
	Platform ocispec.Platform
}

// Images is the image store. Images are immutable and content-addressed;
// layers are stored once by digest and shared.
type Images interface {
	// Pull fetches ref ("host[:port]/name[:tag|@digest]") from its registry
	// with auth (zero: anonymous), as Push does. Plain HTTP is used for
	// loopback registries. NotFound if the registry has no such repository
	// or tag; PermissionDenied if it refuses the credentials (or anonymous
	// access); ResourceExhausted if the store's filesystem fills up (the
	// pull then leaves nothing behind).
	Pull(ctx context.Context, ref string, auth RegistryAuth, progress ProgressFunc) (Image, error)
	// Import creates a one-layer image from a tar stream (optionally gzip),
	// tagged ref if ref is not empty, with opts' config and platform.
	Import(ctx context.Context, r io.Reader, ref string, opts ImportOptions, progress ProgressFunc) (Image, error)
	// Load reads an image archive (docker-archive or OCI layout tar)
	// and returns the images it held, with the tags it applied.
	Load(ctx context.Context, r io.Reader, progress ProgressFunc) ([]Image, error)
	// Get resolves a reference, an ID or a unique ID prefix. NotFound if none.
	Get(ctx context.Context, ref string) (Image, error)
	// List returns all images, newest first.
	List(ctx context.Context) ([]Image, error)
	// Tag adds the reference target to the image src.
	Tag(ctx context.Context, src, target string) error
	// Remove untags ref, and deletes the image when no tag is left (or force).
	// Conflict if a container uses it and force is false.
	Remove(ctx context.Context, ref string, force bool) ([]ImageDelete, error)
	// Save writes the images refs name (references or IDs, in that order)
	// to w as one image archive (docker-archive: manifest.json,
	// repositories, configs and uncompressed layer tars, each layer once),
	// which Load and every reader of that format read. A reference's tag is
	// recorded; an ID records none. NotFound if a ref does not resolve
	// (nothing is written then).
	Save(ctx context.Context, refs []string, w io.Writer) error
	// Push uploads the image tagged ref to ref's registry with auth
	// (zero: anonymous). An untagged repository name pushes every tag of
	// that repository. Plain HTTP is used as for Pull. It returns one
	// result per pushed tag. NotFound if no image has such a tag;
	// PermissionDenied if the registry refuses; Unavailable if it cannot
	// be reached.
	Push(ctx context.Context, ref string, auth RegistryAuth, progress ProgressFunc) ([]PushResult, error)
}

// RegistryAuth are credentials for one registry: a username and password,
// or tokens (the fields of the Engine API's X-Registry-Auth). Never logged.
type RegistryAuth struct {
	Username, Password string
	// IdentityToken is an OAuth refresh token; RegistryToken a bearer
	// token sent as is.
	IdentityToken, RegistryToken string
}

// RegistryLogin checks credentials against a registry; nothing is stored.
// The storage area implements it.
type RegistryLogin interface {
	// Login succeeds when the registry at server (host[:port], optionally
	// with a scheme and path: "https://index.docker.io/v1/"; empty: Docker
	// Hub) accepts auth. Unauthenticated when it refuses them.
	Login(ctx context.Context, server string, auth RegistryAuth) error
}

// PushResult is what a push of one tag produced.
type PushResult struct {
	// Tag is the tag pushed ("latest").
	Tag string
	// Digest is the manifest digest the registry holds, "sha256:" + 64 hex.
	Digest string
	// Size is the manifest's size in bytes.
	Size int64
}

// RootfsStore gives compute the disk a container's copy-on-write disk is
// layered over. The storage area implements it.
type RootfsStore interface {
	// Rootfs returns the host path of a read-only raw ext4 disk image that
	// holds image imageID's flattened root filesystem (OCI image-spec layer
	// whiteouts applied). Built on first use, then shared by every container
	// of that image. NotFound if there is no such image.
	Rootfs(ctx context.Context, imageID string) (path string, err error)
}

// BlankRootfsStore is implemented by RootfsStores that can also give a
// disk with an empty filesystem: compute's warm VMs rehearse the mount
// of a container's root on one (package warmpool).
type BlankRootfsStore interface {
	// BlankRootfs returns the host path of a read-only raw ext4 disk image
	// with an empty filesystem, the same kind Rootfs returns. Unavailable
	// if it cannot be made (no mkfs.ext4).
	BlankRootfs(ctx context.Context) (path string, err error)
}

// ExecSpec describes an extra process to run in a running container.
type ExecSpec struct {
	// Args is argv, looked up in the container's PATH. Must not be empty.
	Args []string
	// Env holds "KEY=value" entries added to the container's environment.
	Env []string
	// WorkingDir is an absolute path; empty means the container's.
	WorkingDir string
	// User is as in ContainerSpec; empty means the container's user.
	User string
	// Tty runs the process on a new pseudo-terminal.
	Tty bool
	// ConsoleRows and ConsoleCols are the TTY's initial size in character
	// cells; 0 leaves it to StartExec's options (else the guest's 24×80).
	ConsoleRows, ConsoleCols uint
	// AttachStdin, AttachStdout and AttachStderr select the streams that
	// StartExec connects.
	AttachStdin, AttachStdout, AttachStderr bool
}

// ExecInfo is an exec's record: its spec, whether it runs, how it ended.
type ExecInfo struct {
	// ID is 64 lowercase hex digits.
	ID          string
	ContainerID string
	Spec        ExecSpec
	Running     bool
	// ExitCode is nil until the process has exited (or failed to start).
	ExitCode *int
	// Pid is the process's PID inside the container, 0 when unknown.
	Pid int
}

// ExecStartOptions connects an exec's streams. Nil writers discard.
type ExecStartOptions struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Detach starts the process and returns at once; its output is dropped.
	Detach bool
	// Rows and Cols set the initial TTY size; 0 leaves the default.
	Rows, Cols uint
	// Timeout, when positive, bounds the process's run counted from its
	// start in the guest (not from the call, so a slow start does not eat
	// it): once it passes the process is killed (SIGKILL) and StartExec
	// returns an error wrapping context.DeadlineExceeded, after the
	// output so far was written. A bounded exec is killed too when ctx
	// ends first. Healthcheck probes use it.
	Timeout time.Duration
}

// Execs runs extra processes in running containers. Exec records live as
// long as their container. Safe for concurrent use.
type Execs interface {
	// CreateExec records an exec. NotFound if there is no such container;
	// Conflict if it is not running.
	CreateExec(ctx context.Context, idOrName string, spec ExecSpec) (string, error)
	// StartExec starts the exec and, unless Detach, returns when the process
	// has exited and all its output was written. NotFound for an unknown
	// exec; Conflict if it was started before or the container stopped; a
	// StartFailed error (InvalidArgument, reason start_failed) carrying
	// the guest's text when the process cannot be started.
	StartExec(ctx context.Context, execID string, opts ExecStartOptions) error
	// InspectExec returns an exec's record. NotFound if none.
	InspectExec(ctx context.Context, execID string) (ExecInfo, error)
	// ResizeExec sets an exec's TTY size in character cells. NotFound;
	// Conflict if it is not running.
	ResizeExec(ctx context.Context, execID string, rows, cols uint) error
	// Resize sets the container's main process TTY size. NotFound;
	// Conflict if it is not running.
	Resize(ctx context.Context, idOrName string, rows, cols uint) error
}

// Restarter stops and starts a container as one operation: signal (0:
// its stop signal) is sent, SIGKILL after timeout (nil: its
// StopTimeout), then it starts again. The exit in between is
// not the container's end: an AutoRemove container is not removed and
// no restart policy counts it. NotFound; otherwise as Stop and Start.
type Restarter interface {
	Restart(ctx context.Context, idOrName string, signal int, timeout *time.Duration) error
}

// UserError is a user (ContainerSpec.User, ExecSpec.User) that does not
// resolve in the container; Message is why, in the words of the user
// database library ("unable to find user x: no matching entries in
// passwd file"). It unwraps to errdefs.ErrInvalidArgument.
type UserError struct{ Message string }

func (e *UserError) Error() string { return e.Message }

// Unwrap classes the error as errdefs.ErrInvalidArgument.
func (e *UserError) Unwrap() error { return errdefs.ErrInvalidArgument }

// ContainerUpdate is what Updater may change; nil fields stay.
type ContainerUpdate struct {
	RestartPolicy *RestartPolicy
	// MemoryMiB and CPUs size the VM at its next start (0: the VCH
	// default).
	MemoryMiB, CPUs *int
	// Limits replace the container's resource limits: at once in a
	// running VM when they fit its size, else at the next start.
	Limits *ResourceLimits
	// Annotations replace the front end's annotations of the same keys.
	Annotations map[string][]byte
}

// Updater changes a container's restart policy, VM size and limits after
// creation. NotFound; InvalidArgument for a policy the rules refuse (see
// RestartPolicy; also with AutoRemove); Conflict for a size change while
// the VM runs (a running VM keeps its boot size).
type Updater interface {
	Update(ctx context.Context, idOrName string, u ContainerUpdate) (Container, error)
}

// ExecForgetter drops the record of an exec a front end started for
// itself (a healthcheck probe), so records do not pile up until the
// container is removed. NotFound if there is no such exec.
type ExecForgetter interface {
	ForgetExec(ctx context.Context, execID string) error
}

// Event is one thing that happened in the port layer, in the order it
// happened. Type and Action are the port layer's vocabulary, the names of
// the Engine API's "System events" (v1.50), so front ends pass them on as
// they are: Type "container" or "image"; Action "create", "start",
// "die", "kill", "stop", "destroy", "exec_create", "exec_start",
// "exec_die", "rename", "pull", "import", "load", "tag", "untag",
// "delete", …
type Event struct {
	Time   time.Time
	Type   string
	Action string
	// ID is the container ID or the image ID / reference the event is about.
	ID string
	// Attributes hold details such as "name", "image", "exitCode",
	// "signal", "execID".
	Attributes map[string]string
}

// Events is the port layer's ordered event log. Safe for concurrent use.
type Events interface {
	// Subscribe returns the logged events at or after since (zero: none)
	// and, when live is true, a channel of later events that closes when
	// ctx ends. The log keeps the most recent events only (see the
	// implementation's bound); a subscriber that does not keep up misses
	// events rather than stalling the system.
	Subscribe(ctx context.Context, since time.Time, live bool) ([]Event, <-chan Event)
}

// HostInfo describes the VCH a port layer runs: what a front end shows
// as its system information.
type HostInfo struct {
	// Name is the VCH's name; ID identifies it (may be empty).
	Name string
	ID   string
	// Hypervisor names the driver running the VMs ("qemu"); Accelerator
	// the accelerator in use ("kvm", "tcg").
	Hypervisor  string
	Accelerator string
	// GuestKernelVersion is the uname -r of the kernel container VMs boot.
	GuestKernelVersion string
	// NCPU and MemTotalBytes are the CPUs and memory (bytes) available
	// to VMs.
	NCPU          int
	MemTotalBytes int64
	// RootDir is the VCH's state directory on the host.
	RootDir string
	// Labels are "key=value" labels of the VCH; may be nil.
	Labels []string
	// DriverStatus are name/value lines about storage (quota, usage,
	// volume stores); may be nil.
	DriverStatus [][2]string
	// Warnings are for an operator's attention; may be nil.
	Warnings []string
}
