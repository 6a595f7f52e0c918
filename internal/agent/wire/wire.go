// Package wire is the host↔guest protocol between the port layer and tether,
// the guest's PID 1. Both sides import it; it depends on nothing but the
// standard library.
//
// Versions 1 and 2 ran over SSH (RFC 4251–4254) on the VM's virtio-serial
// port, the guest the SSH server, the host the client; version 3 keeps
// SSH's connection model on a transport without encryption (see below).
// That model gives what a container process needs: multiplexed channels
// with flow control, stdout as channel data, stderr as extended data,
// stdin EOF (CloseWrite), signals, window changes and an exit status, all
// in order on one stream, so output written before an exit always arrives
// before that exit status.
//
// Messages defined here, all JSON-encoded payloads:
//   - global request [RequestSetup] with [Setup]: identity and clock, once,
//     before the first process.
//   - channel [ChannelProcess] with [Process] as extra data: one process (the
//     main process or an exec). A start failure rejects the channel with the
//     guest's error text. Channel requests: [RequestSignal] with [Signal],
//     "window-change" (RFC 4254 §6.7), and from the guest "exit-status"
//     (RFC 4254 §6.10; 128+N when killed by signal N).
//   - global request [RequestPowerOff]: sync and power the VM off.
//   - global request [RequestResources] with [Resources]: change the
//     container cgroup's limits; channel request [RequestOOM] from the
//     guest before a main process's exit status: the container had an
//     OOM kill.
//
// # Version 2: sessions end, processes do not
//
// A v1 host's connection was the VM's life: tether powered off when it
// dropped. From v2 on, the SSH connection is a session: it may end (the
// daemon stops or is killed) and a new one start later on the same port
// (QEMU's chardev reconnects), while every process keeps running. Tether
// then serves one session after another until [RequestPowerOff].
//
// Every process has an ID ([Process.ID], chosen by the host or by tether)
// and its output is numbered: byte offsets from 0 per stream since the
// process started. Tether keeps each stream's output in a spool until the
// host acknowledges it ([RequestAck]), at most [SpoolLimitBytes] a stream;
// beyond that tether stops reading the process's pipe, so a process whose
// host is away blocks on its own writes instead of losing output. A host
// that stores output (a log) acknowledges only what it has stored, so a
// host that restarts and resumes from the end of its own log neither loses
// nor repeats a byte. Process channels whose spec is not [Process.Resumable]
// (v1 hosts, execs) are acknowledged as they are sent.
//
// v2 messages (a v1 tether refuses them, which tells a host it cannot
// re-attach to that guest):
//   - global request [RequestProcesses]: the reply is a [ProcessList] of
//     the processes running, and of the exited ones the host has not
//     released, with their exit codes.
//   - channel [ChannelAttach] with [Attach] as extra data: attach to an
//     existing process by ID, resuming its output at the given offsets.
//     The channel then behaves as a [ChannelProcess] channel: output,
//     stdin (when the process has one), signals, window changes, and the
//     exit status after all output. A newer attachment replaces an older
//     one. Rejected with a [StartError] whose ExitCode is 0 if there is no
//     such process.
//   - channel request [RequestAck] with [Ack]: the host has stored the
//     output before these offsets; tether may drop it.
//   - global request [RequestRelease] with [Release]: the host has recorded
//     an exited process's status; tether forgets the process.
//
// Stdin EOF is the channel's EOF (CloseWrite) as in v1; a session that
// ends without one leaves the process's stdin open for the next.
//
// # Version 3: no encryption on the port
//
// From v3 on the transport is package link (internal/agent/link): the
// same connection model (global requests, channels, data and extended
// data, EOF, channel requests, exit status after all output) framed on
// yamux streams with per-stream flow control, and no SSH transport layer:
// the port is reachable only through the VMM, so encrypting it protected
// nothing and cost most of the guest's CPU on every byte. Every message
// above keeps its name and payload.
//
// A session starts with the host writing [Hello]. A v3 tether answers with
// [Hello] and both sides start link (the host as its client). A v1 or v2
// tether, an SSH server, skips the line (an SSH peer ignores lines before
// the one starting "SSH-", RFC 4253 §4.2 as golang.org/x/crypto/ssh reads
// it) and answers with its SSH version string, and the host goes on with
// SSH: VMs booted by an older daemon keep working after an upgrade.
//
// # Version 4: link's frames on the port itself
//
// v4 keeps every message and changes only link's framing (link.V4): the
// frames go on the port directly, each naming its channel or request,
// with a window per channel instead of yamux's streams, so the guest's one
// vCPU does no per-frame goroutine handoffs. The host still writes
// [Hello] (a v3 tether compares the whole line, so the host's first line
// cannot change); a v4 tether answers [Hello4], a v3 tether [Hello], and
// the host speaks what the guest answered. A v4 tether does not serve a
// host older than v4 (a downgraded daemon would not read [Hello4]).
package wire

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Version is this protocol's version; it is part of every name below.
const Version = "v1"

// Names of the protocol's requests and channels.
const (
	// PortName is the virtio-serial port's name (/sys/class/virtio-ports/*/name).
	PortName = "org.vch.tether.0"
	// RequestSetup is a global request carrying [Setup].
	RequestSetup = "setup@vch-" + Version
	// RequestClock is a global request carrying [Clock]: set the guest's
	// clock (after the VM was paused, its clock lags the host's).
	RequestClock = "clock@vch-" + Version
	// RequestPowerOff is a global request asking the guest to sync its disks
	// and power off. The reply is sent before the power-off.
	RequestPowerOff = "poweroff@vch-" + Version
	// ChannelProcess opens a process; extra data is a [Process].
	ChannelProcess = "process@vch-" + Version
	// RequestInterface is a global request carrying one [Interface]:
	// (re)configure a NIC of the running VM.
	RequestInterface = "interface@vch-" + Version
	// RequestDNS is a global request from the guest to the host: the
	// payload is one DNS query (RFC 1035 wire format), the reply payload
	// its answer.
	RequestDNS = "dns@vch-" + Version
	// RequestSignal is a channel request carrying [Signal].
	RequestSignal = "signal@vch-" + Version
	// RequestExitStatus is the standard SSH exit-status channel request.
	RequestExitStatus = "exit-status"
	// RequestWindowChange is the standard SSH window-change channel request.
	RequestWindowChange = "window-change"
	// RequestOOM is a channel request from the guest, no payload, sent
	// just before [RequestExitStatus] on the main process's channel when
	// the kernel killed a process of the container for lack of memory
	// (its cgroup's memory.events oom_kill grew) while the main process
	// ran. A host that predates it refuses it and loses nothing else.
	RequestOOM = "oom@vch-" + Version
	// RequestResources is a global request carrying [Resources]: change
	// the running container's limits (docker update). Refused by a tether
	// that predates it.
	RequestResources = "resources@vch-" + Version
	// RequestUser is a global request carrying [User]: does the user
	// resolve in the container? A refusal carries the reason as text.
	RequestUser = "user@vch-" + Version
)

// User is the payload of [RequestUser]: a user spec as in [Process].User.
type User struct {
	User string `json:"user"`
}

// Version2 names the messages added in version 2 (see the package doc).
const Version2 = "v2"

// Names of the version 2 messages.
const (
	// RequestProcesses is a global request; the reply is a [ProcessList].
	RequestProcesses = "processes@vch-" + Version2
	// ChannelAttach attaches to an existing process; extra data is an [Attach].
	ChannelAttach = "attach@vch-" + Version2
	// RequestAck is a channel request carrying [Ack]; it wants no reply.
	RequestAck = "ack@vch-" + Version2
	// RequestRelease is a global request carrying [Release].
	RequestRelease = "release@vch-" + Version2
)

// Version3 names the transport of version 3 (see the package doc).
const Version3 = "v3"

// Hello is the line a v3 host writes first in a session and a v3 tether
// answers with.
const Hello = "vch-tether " + Version3 + "\r\n"

// Version4 names the transport of version 4 (see the package doc).
const Version4 = "v4"

// Hello4 is a v4 tether's answer to [Hello]: the session goes on in
// link.V4.
const Hello4 = "vch-tether " + Version4 + "\r\n"

// MaxHelloBytes bounds the line a host reads as the guest's answer to
// [Hello] (an SSH version string is at most 255 bytes, RFC 4253 §4.2).
const MaxHelloBytes = 255

// AcceptHello is a v4 tether's start of a session: it reads the host's
// first line, a byte at a time so nothing after it is consumed, checks it
// is [Hello], and answers [Hello4]. An error if the host spoke anything
// else (an older host's SSH version string) or the stream failed.
func AcceptHello(rw io.ReadWriter) error {
	var line []byte
	b := make([]byte, 1)
	for len(line) < MaxHelloBytes {
		if _, err := io.ReadFull(rw, b); err != nil {
			return fmt.Errorf("wire: read hello: %w", err)
		}
		line = append(line, b[0])
		if b[0] != '\n' {
			continue
		}
		if string(line) != Hello {
			return fmt.Errorf("wire: the host spoke %q, not protocol %s", line, Version3)
		}
		if _, err := io.WriteString(rw, Hello4); err != nil {
			return fmt.Errorf("wire: answer hello: %w", err)
		}
		return nil
	}
	return fmt.Errorf("wire: no hello in the host's first %d bytes", MaxHelloBytes)
}

// EncodeExitStatus is the payload of [RequestExitStatus]: the code as a
// big-endian uint32 (RFC 4254 §6.10).
func EncodeExitStatus(code int) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(code))
}

// DecodeExitStatus reads [EncodeExitStatus]'s payload.
func DecodeExitStatus(p []byte) (int, bool) {
	if len(p) != 4 {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(p)), true
}

// EncodeWindowChange is the payload of [RequestWindowChange]: columns,
// rows, width and height in pixels (0), each a big-endian uint32 (RFC
// 4254 §6.7).
func EncodeWindowChange(rows, cols uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, cols)
	b = binary.BigEndian.AppendUint32(b, rows)
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, 0), 0)
}

// DecodeWindowChange reads [EncodeWindowChange]'s payload.
func DecodeWindowChange(p []byte) (rows, cols uint32, ok bool) {
	if len(p) != 16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(p[4:]), binary.BigEndian.Uint32(p), true
}

// SpoolLimitBytes is how much unacknowledged output tether keeps per
// process stream (1 MiB) before the process blocks on its writes.
const SpoolLimitBytes = 1 << 20

// MainProcessID is the ID the host gives the container's main process.
const MainProcessID = "main"

// Attach selects a process to attach to and where its output resumes.
type Attach struct {
	// ID is the process's ID.
	ID string `json:"id"`
	// Stdout and Stderr are the byte offsets the output resumes at: what
	// the host has already stored. Output before the oldest byte tether
	// still holds is gone; tether resumes at that byte instead.
	Stdout int64 `json:"stdout"`
	Stderr int64 `json:"stderr"`
}

// Ack tells tether the host has stored a process's output before these
// byte offsets.
type Ack struct {
	Stdout int64 `json:"stdout"`
	Stderr int64 `json:"stderr"`
}

// Release names an exited process whose status the host has recorded.
type Release struct {
	ID string `json:"id"`
}

// ProcessStatus is one process as tether knows it.
type ProcessStatus struct {
	// ID is the process's ID; Args its argv.
	ID   string   `json:"id"`
	Args []string `json:"args"`
	// Exec, Tty, Stdin and Resumable are as in its [Process].
	Exec      bool `json:"exec,omitempty"`
	Tty       bool `json:"tty,omitempty"`
	Stdin     bool `json:"stdin,omitempty"`
	Resumable bool `json:"resumable,omitempty"`
	// Pid is its PID as tether sees it (the guest's root PID namespace).
	Pid int `json:"pid"`
	// Running is true until it has exited; then ExitCode is set (128+N
	// when killed by signal N).
	Running  bool `json:"running"`
	ExitCode *int `json:"exit_code,omitempty"`
	// OOMKilled: an exited main process's container had an OOM kill
	// while it ran (as [RequestOOM]).
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Stdout and Stderr are the bytes of output it has produced so far.
	Stdout int64 `json:"stdout"`
	Stderr int64 `json:"stderr"`
}

// ProcessList is the reply to [RequestProcesses], processes in start order.
type ProcessList struct {
	Processes []ProcessStatus `json:"processes"`
}

// Setup is the container-wide configuration tether applies before it starts
// the first process.
type Setup struct {
	// Hostname and Domainname of the guest (UTS namespace).
	Hostname   string `json:"hostname"`
	Domainname string `json:"domainname,omitempty"`
	// Hosts is the full text of /etc/hosts; empty leaves the image's file.
	Hosts string `json:"hosts,omitempty"`
	// ResolvConf is the full text of /etc/resolv.conf; empty leaves the
	// image's file.
	ResolvConf string `json:"resolv_conf,omitempty"`
	// TimeUnixNano is the host's clock when the request was sent, in
	// nanoseconds since the Unix epoch; 0 leaves the guest clock alone.
	TimeUnixNano int64 `json:"time_unix_nano,omitempty"`
	// ShmSizeBytes sizes /dev/shm; 0 means 64 MiB, Docker's default.
	ShmSizeBytes int64 `json:"shm_size_bytes,omitempty"`
	// Sysctls are written to /proc/sys before the first process, in key
	// order: "net.ipv4.ping_group_range" → "0 2147483647" (dots separate
	// path elements). A key that is not a plain /proc/sys path fails the
	// setup. A tether that predates the field ignores it.
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// Interfaces configures every NIC of the VM (in use or spare).
	Interfaces []Interface `json:"interfaces,omitempty"`
	// DNSRelay is the address ("127.0.0.11:53") where tether serves DNS
	// for the container, relaying each query to the host with
	// [RequestDNS]; empty serves none.
	DNSRelay string `json:"dns_relay,omitempty"`
	// Mounts are mounted in order (parents before children) before the
	// identity files are bound, so a volume on /etc gets them on top.
	Mounts []Mount `json:"mounts,omitempty"`
	// ReadOnlyRoot makes the container's root filesystem and its identity
	// files read-only once the mounts are in place (docker run
	// --read-only); /dev, /dev/shm and the mounts keep their own modes.
	ReadOnlyRoot bool `json:"read_only_root,omitempty"`
	// NoNewPrivileges sets PR_SET_NO_NEW_PRIVS on every process of the
	// container (docker run --security-opt no-new-privileges): setuid
	// binaries and file capabilities grant nothing.
	NoNewPrivileges bool `json:"no_new_privileges,omitempty"`
	// WritableCgroup mounts the container's /sys/fs/cgroup read-write
	// (--security-opt writable-cgroups); read-only otherwise.
	WritableCgroup bool `json:"writable_cgroup,omitempty"`
	// MaskedPaths are hidden from the container once its /proc is
	// mounted (a directory under an empty read-only tmpfs, a file under
	// /dev/null), ReadonlyPaths made read-only, as runc does with the OCI
	// spec's linux.maskedPaths and linux.readonlyPaths. A path that does
	// not exist in the guest is skipped.
	MaskedPaths   []string `json:"masked_paths,omitempty"`
	ReadonlyPaths []string `json:"readonly_paths,omitempty"`
	// Seccomp is a syscall filter installed in every process of the
	// container before its exec: an OCI runtime-spec linux.seccomp
	// object (JSON, encoded here as base64 by encoding/json); empty:
	// none. A profile tether cannot express fails the process's start.
	Seccomp []byte `json:"seccomp,omitempty"`
	// Resources limits the container's processes (its cgroup); nil: no
	// limits beyond the VM's own size. A tether that predates the field
	// ignores it.
	Resources *Resources `json:"resources,omitempty"`
}

// Resources are the limits of the container's cgroup in the guest (cgroup
// v2, Linux's Documentation/admin-guide/cgroup-v2.rst): every process of
// the container, main and execs, runs in it. A zero field sets no limit
// ("max").
type Resources struct {
	// MemoryMaxBytes is memory.max: the processes' memory, in bytes
	// (docker run -m).
	MemoryMaxBytes int64 `json:"memory_max_bytes,omitempty"`
	// SwapMaxBytes is memory.swap.max in bytes, the swap the processes
	// may use on top of MemoryMaxBytes (Docker's --memory-swap minus -m;
	// the host works out Docker's defaults); -1 is unlimited. Applied
	// only with MemoryMaxBytes set. The guest has no swap device today,
	// so this only bounds what a future one could take.
	SwapMaxBytes int64 `json:"swap_max_bytes,omitempty"`
	// CPUQuotaMicros per CPUPeriodMicros is cpu.max: the CPU time the
	// processes may use per period, in microseconds (docker run --cpus
	// 1.5 is 150000 per 100000).
	CPUQuotaMicros  int64 `json:"cpu_quota_micros,omitempty"`
	CPUPeriodMicros int64 `json:"cpu_period_micros,omitempty"`
	// PidsMax is pids.max: the number of tasks (docker run --pids-limit).
	PidsMax int64 `json:"pids_max,omitempty"`
}

// Interface configures one NIC, found by the hardware address the VMM gave
// it. A NIC without Name is spare: down and unnamed for the container
// until a later [RequestInterface] gives it a network (docker network
// connect on a running container); a request without Name takes a NIC
// back (disconnect).
type Interface struct {
	// BootMAC is the NIC's hardware address at boot ("02:42:ac:11:00:02").
	BootMAC string `json:"boot_mac"`
	// Name is the interface's name in the container ("eth0"); empty: spare.
	Name string `json:"name,omitempty"`
	// MAC is the hardware address to use; empty keeps BootMAC.
	MAC string `json:"mac,omitempty"`
	// Address is the IPv4 address with prefix length ("172.17.0.2/16").
	Address string `json:"address,omitempty"`
	// Gateway, when set, becomes the default route (via this interface).
	Gateway string `json:"gateway,omitempty"`
	// MTU in bytes; 0 means 1500.
	MTU int `json:"mtu,omitempty"`
}

// RootSerial is the virtio-blk serial of the container's root disk
// (/sys/block/vdX/serial); a guest whose disks have no serials takes
// /dev/vda.
const RootSerial = "vch-root"

// Mount types.
const (
	// MountVolume mounts an ext4 disk, found by its serial.
	MountVolume = "volume"
	// MountTmpfs mounts a new tmpfs.
	MountTmpfs = "tmpfs"
	// MountBind mounts a host directory shared over virtio-9p, found by
	// its tag.
	MountBind = "bind"
	// MountImage mounts an image's ext4 root filesystem disk, found by
	// its serial, read-only (the disk is read-only too, and its journal
	// is not replayed): Docker's image mounts. Never copied up. A tether
	// older than this type refuses the setup (unknown mount type).
	MountImage = "image"
)

// Mount is one filesystem tether mounts into the container.
type Mount struct {
	// Type is MountVolume, MountTmpfs, MountBind or MountImage.
	Type string `json:"type"`
	// Serial is the disk's virtio-blk serial (MountVolume, MountImage).
	Serial string `json:"serial,omitempty"`
	// Tag is the virtio-9p mount tag of the host directory (MountBind
	// only).
	Tag string `json:"tag,omitempty"`
	// Target is the absolute path inside the container, resolved inside
	// the container's root (symlinks included); created if missing.
	Target string `json:"target"`
	// ReadOnly mounts read-only: writes fail with EROFS.
	ReadOnly bool `json:"read_only,omitempty"`
	// CopyUp fills an empty volume, before it is mounted, with what the
	// container's root has at Target, keeping owners, modes, times, links
	// and the directory's own owner and mode (Docker's copy-up).
	CopyUp bool `json:"copy_up,omitempty"`
	// Subpath, for MountVolume and MountImage, is a path inside the
	// disk's filesystem (relative, lexically local) mounted at Target
	// instead of its root: a directory or a file. Symlinks on the way
	// are followed while they stay inside it. Docker's
	// VolumeOptions.Subpath and ImageOptions.Subpath. Several
	// mounts may name one Serial: the disk is mounted once and each
	// target bound to its part.
	Subpath string `json:"subpath,omitempty"`
	// Options are a tmpfs's comma-separated mount options: flags (ro,
	// noexec, nosuid, nodev and their opposites, noatime, …) and data
	// (size=64m, mode=1777, uid=, gid=, …). When an option repeats, or
	// comes with its opposite, the later one wins.
	Options string `json:"options,omitempty"`
}

// Process describes one process to start inside the container.
type Process struct {
	// Args is argv; Args[0] is looked up in PATH (from Env) when it has no
	// slash. Must not be empty.
	Args []string `json:"args"`
	// Env holds "KEY=value" entries. PATH gets Docker's default when absent;
	// HOME comes from the user's passwd entry when absent.
	Env []string `json:"env,omitempty"`
	// Dir is the absolute working directory; created if missing. Empty: "/".
	Dir string `json:"dir,omitempty"`
	// User is "name", "uid", "name:group" or "uid:gid", resolved against
	// the container's own /etc/passwd and /etc/group. Empty means root.
	User string `json:"user,omitempty"`
	// Groups are supplementary groups added to the user's own: names
	// (looked up in the container's /etc/group) or numeric IDs (Docker's
	// --group-add). A tether that predates the field ignores it.
	Groups []string `json:"groups,omitempty"`
	// Tty runs the process on a new pseudo-terminal (stderr merges into
	// stdout). Rows and Cols set its initial size.
	Tty  bool   `json:"tty,omitempty"`
	Rows uint32 `json:"rows,omitempty"`
	Cols uint32 `json:"cols,omitempty"`
	// Stdin connects channel input to the process's stdin; otherwise stdin
	// is /dev/null.
	Stdin bool `json:"stdin,omitempty"`
	// Exec joins the PID namespace of the container's main process (docker
	// exec) instead of starting a new one as its PID 1. The main process
	// must be running.
	Exec bool `json:"exec,omitempty"`
	// Init runs a minimal init as PID 1 (docker run --init): it forwards
	// signals to the program, reaps zombies and exits with the program's
	// code. Ignored with Exec.
	Init bool `json:"init,omitempty"`
	// ID names the process for [ChannelAttach] and [ProcessList] (v2):
	// unique among the guest's processes; empty lets tether pick one. The
	// host names its main process [MainProcessID].
	ID string `json:"id,omitempty"`
	// Resumable keeps the process's output in tether until the host
	// acknowledges it ([RequestAck]) and its exit status until the host
	// releases it ([RequestRelease]), so a host that reconnects resumes
	// without loss (v2). Without it, output counts as delivered once sent
	// and the process is forgotten once its exit status is sent.
	Resumable bool `json:"resumable,omitempty"`
}

// Clock is the host's time for the guest clock.
type Clock struct {
	// TimeUnixNano is nanoseconds since the Unix epoch.
	TimeUnixNano int64 `json:"time_unix_nano"`
}

// Signal asks tether to deliver a Linux signal number to the process.
type Signal struct {
	Number int `json:"number"`
}

// StartError is the message of a rejected [ChannelProcess] open: the guest's
// reason, e.g. `exec: "x": executable file not found in $PATH`, and the exit
// code Docker reports for it (127 not found, 126 not executable).
type StartError struct {
	Message  string `json:"message"`
	ExitCode int    `json:"exit_code"`
}

// MountError is the payload of a refused [RequestSetup] whose cause is one
// mount's volume subpath (Mount.Subpath) or a source and target of
// different types: Reason says what was wrong,
// Target and Subpath which mount, Message the guest's text. Other
// refusals carry plain text.
type MountError struct {
	Reason  string `json:"reason"`
	Target  string `json:"target"`
	Subpath string `json:"subpath"`
	Message string `json:"message"`
	// Errno is the text of the system error a lookup on the way failed
	// with ("no such file or directory", "not a directory"), for
	// SubpathMissing and SubpathUnresolvable.
	Errno string `json:"errno,omitempty"`
}

// MountError reasons.
const (
	// SubpathMissing: nothing exists at the subpath inside the volume
	// (or a symlink on the way leads nowhere).
	SubpathMissing = "subpath_missing"
	// SubpathEscapes: the subpath, its symlinks followed, leads out of
	// the volume.
	SubpathEscapes = "subpath_escapes"
	// SubpathUnresolvable: a lookup on the way failed otherwise (a
	// file where a directory must be, a link loop, a name too long).
	SubpathUnresolvable = "subpath_unresolvable"
	// MountTypeMismatch: the mount's source (the disk's root, or its
	// subpath) is a directory and its target a file in the container,
	// or the reverse; Errno "not a directory". Subpath may be empty.
	MountTypeMismatch = "type_mismatch"
)

func (e *MountError) Error() string { return e.Message }

// Encode marshals v to JSON. Values in this package always marshal.
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("wire: " + err.Error())
	}
	return b
}

// Requests that read the guest's state; their replies carry JSON.
const (
	// RequestTop is a global request; the reply is a [Top].
	RequestTop = "top@vch-" + Version
	// RequestStats is a global request; the reply is a [Stats].
	RequestStats = "stats@vch-" + Version
)

// ProcessInfo is one process of the container (from the guest's /proc).
type ProcessInfo struct {
	// PID and PPID are as seen inside the container's PID namespace.
	PID  int `json:"pid"`
	PPID int `json:"ppid"`
	UID  int `json:"uid"`
	// StartTicks is the start time in clock ticks since boot (USER_HZ).
	StartTicks uint64 `json:"start_ticks"`
	// CPUTicks is user+system time in clock ticks (USER_HZ).
	CPUTicks uint64 `json:"cpu_ticks"`
	// TTY is the controlling terminal ("pts/0") or "?".
	TTY string `json:"tty"`
	// Cmd is the command line, arguments joined by spaces, or "[comm]".
	Cmd string `json:"cmd"`
}

// Top lists the container's processes, PID order.
type Top struct {
	Processes []ProcessInfo `json:"processes"`
	// BootTimeUnix is the guest's boot time (for start times), seconds.
	BootTimeUnix int64 `json:"boot_time_unix"`
	// TicksPerSecond is USER_HZ (100 on Linux).
	TicksPerSecond int `json:"ticks_per_second"`
}

// Stats is one sample of the guest's resource use.
type Stats struct {
	// CPUBusyNanos and CPUTotalNanos are the guest's cumulative non-idle
	// and total CPU time over all its vCPUs, in nanoseconds.
	CPUBusyNanos  uint64 `json:"cpu_busy_nanos"`
	CPUTotalNanos uint64 `json:"cpu_total_nanos"`
	// OnlineCPUs is the number of vCPUs.
	OnlineCPUs int `json:"online_cpus"`
	// MemTotalBytes is the guest's RAM; MemUsedBytes is MemTotal minus
	// MemAvailable (/proc/meminfo).
	MemTotalBytes uint64 `json:"mem_total_bytes"`
	MemUsedBytes  uint64 `json:"mem_used_bytes"`
	// CgroupMemBytes is the container's cgroup's memory.current, its
	// processes' memory including page cache, and CgroupMemLimitBytes its
	// memory.max (0: none); CgroupInactiveFileBytes is memory.stat's
	// inactive_file, which docker stats subtracts. All 0 from a tether
	// without a container cgroup.
	CgroupMemBytes          uint64 `json:"cgroup_mem_bytes,omitempty"`
	CgroupMemLimitBytes     uint64 `json:"cgroup_mem_limit_bytes,omitempty"`
	CgroupInactiveFileBytes uint64 `json:"cgroup_inactive_file_bytes,omitempty"`
	// DiskReadBytes and DiskWriteBytes are the root disk's totals.
	DiskReadBytes  uint64 `json:"disk_read_bytes"`
	DiskWriteBytes uint64 `json:"disk_write_bytes"`
	// Pids is the number of processes in the container.
	Pids int `json:"pids"`
	// Networks are the counters of each container interface ("eth0"; not
	// lo or spares), from /sys/class/net/*/statistics.
	Networks map[string]NetStats `json:"networks,omitempty"`
}

// NetStats are one interface's cumulative counters (bytes and packets).
type NetStats struct {
	RxBytes   uint64 `json:"rx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxErrors  uint64 `json:"rx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxErrors  uint64 `json:"tx_errors"`
	TxDropped uint64 `json:"tx_dropped"`
}
