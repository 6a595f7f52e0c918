package wire

// Archives: docker cp, export, diff and commit. Paths are container paths
// ("/etc/passwd"); tether resolves them inside the container's root as the
// container sees it (symbolic links included, never leaving the root).
//
//   - global request [RequestArchiveStat] with [ArchivePath]: the reply is a
//     [PathStat]; a refusal carries an [ArchiveError].
//   - channel [ChannelArchiveGet] with [ArchiveGet] as extra data: the guest
//     writes one tar stream and closes; just before it closes it sends the
//     channel request [RequestArchiveDone] with an [ArchiveError] (empty
//     Kind: the stream is complete). An open that fails at once is
//     rejected with an [ArchiveError] as the message.
//   - channel [ChannelArchivePut] with [ArchivePut]: the host writes one tar
//     stream and then closes its side for writing (CloseWrite); the guest
//     unpacks it and answers with [RequestArchiveDone], then closes.
//   - channel [ChannelArchivePutDisk] with [ArchivePutDisk]: as
//     [ChannelArchivePut], but the tar stream is on a disk of the VM (its
//     transfer disk, which the host fills as the stream arrives) from
//     offset 0, and the channel carries marks: 8-byte big-endian counts of
//     the stream's bytes on the disk so far, never decreasing. The guest
//     reads the disk with direct I/O up to the last mark, then waits for
//     the next. A mark of [ArchiveDiskEnd] ends the stream at the mark
//     before it; a channel that ends (CloseWrite) without it is an
//     upload the host gave up, and the unpack fails there. A mark of
//     [ArchiveDiskRest] instead says the rest of the stream follows on the
//     channel as data up to its CloseWrite (the disk is full). A tether that predates it
//     rejects the channel as an unknown type, and the host sends the
//     stream on [ChannelArchivePut] instead.
//   - channel [ChannelChanges] with no extra data: the guest writes one
//     JSON array of [Change] and then [RequestArchiveDone].
const (
	RequestArchiveStat = "archive-stat@vch-" + Version
	ChannelArchiveGet  = "archive-get@vch-" + Version
	ChannelArchivePut  = "archive-put@vch-" + Version
	// ChannelArchivePutDisk is newer than the other names of version 1.
	ChannelArchivePutDisk = "archive-put-disk@vch-" + Version
	ChannelChanges        = "changes@vch-" + Version
	RequestArchiveDone    = "archive-done@vch-" + Version
)

// BaseSerial is the virtio-blk serial of the image's read-only root disk,
// attached beside the container's copy-on-write disk so that tether can
// compare the two (diff, commit). A VM without it cannot report changes.
const BaseSerial = "vch-base"

// ArchivePath names one container path. A trailing "/" or "/." follows a
// final symbolic link (as in docker cp); otherwise the link itself is meant.
type ArchivePath struct {
	Path string `json:"path"`
}

// PathStat is Docker's X-Docker-Container-Path-Stat for one path.
type PathStat struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Mode is Go's io/fs.FileMode bits, as Docker sends them.
	Mode uint32 `json:"mode"`
	// MtimeUnixNano is the modification time.
	MtimeUnixNano int64 `json:"mtime_unix_nano"`
	// LinkTarget is, for a symbolic link, the path it resolves to inside
	// the container ("/etc"), else empty.
	LinkTarget string `json:"link_target,omitempty"`
}

// Archive modes of [ArchiveGet].
const (
	// ArchiveModePath tars one path (docker cp out).
	ArchiveModePath = ""
	// ArchiveModeExport tars the container's own filesystem from "/":
	// mount points appear, what is mounted on them does not (docker export).
	ArchiveModeExport = "export"
	// ArchiveModeChanges tars what differs from the image: added and
	// changed entries, and an OCI whiteout for each deleted one (docker
	// commit's layer).
	ArchiveModeChanges = "changes"
)

// ArchiveGet asks for a tar stream.
type ArchiveGet struct {
	Mode string `json:"mode,omitempty"`
	// Path is the container path (ArchiveModePath only).
	Path string `json:"path,omitempty"`
}

// ArchivePut unpacks a tar stream into the directory Path.
type ArchivePut struct {
	Path string `json:"path"`
	// NoOverwriteDirNonDir refuses to replace a directory with a
	// non-directory and the reverse.
	NoOverwriteDirNonDir bool `json:"no_overwrite_dir_non_dir,omitempty"`
	// CopyUIDGID owns every entry by User (docker cp -a into a container
	// whose config names a user) rather than by the tar's uid/gid.
	CopyUIDGID bool   `json:"copy_uid_gid,omitempty"`
	User       string `json:"user,omitempty"`
	// MaxBytes bounds the files' total size as declared in the headers;
	// 0: the free space of the destination's filesystem.
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// ArchivePutDisk unpacks the tar stream that a disk holds into the
// directory Path.
type ArchivePutDisk struct {
	ArchivePut
	// Serial is the disk's serial (the transfer disk's: vch-transfer).
	Serial string `json:"serial"`
}

// Marks of a [ChannelArchivePutDisk] channel that are not byte counts.
const (
	// ArchiveDiskRest: the rest of the stream is the channel's data.
	ArchiveDiskRest = 1<<64 - 1
	// ArchiveDiskEnd: the stream ends at the last mark.
	ArchiveDiskEnd = 1<<64 - 2
)

// Kinds of [ArchiveError].
const (
	ArchiveNotFound = "not-found" // no such path
	ArchiveNotDir   = "not-dir"   // the destination is not a directory
	ArchiveInvalid  = "invalid"   // a bad or hostile archive, or a bad path
	ArchiveReadOnly = "read-only" // the destination's filesystem is read-only
	ArchiveFailed   = "failed"    // anything else (I/O)
)

// ArchiveError is how an archive operation ended; Kind "" is success.
type ArchiveError struct {
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message,omitempty"`
}

// Change kinds, Docker's numbering.
const (
	ChangeModify = 0
	ChangeAdd    = 1
	ChangeDelete = 2
)

// Change is one path that differs from the image.
type Change struct {
	Path string `json:"path"`
	Kind int    `json:"kind"`
}
