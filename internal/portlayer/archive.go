package portlayer

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PathStat describes one path inside a container, as StatPath finds it.
type PathStat struct {
	// Name is the last element of the path as asked ("." for "/x/.").
	Name string
	Size int64
	Mode fs.FileMode
	// Mtime is the modification time.
	Mtime time.Time
	// LinkTarget is, for a symbolic link, the container path it resolves
	// to; else empty.
	LinkTarget string
}

// PutArchiveOptions tune an extraction into a container.
type PutArchiveOptions struct {
	// NoOverwriteDirNonDir refuses to replace a directory with a
	// non-directory and the reverse (InvalidArgument).
	NoOverwriteDirNonDir bool
	// CopyUIDGID owns every entry by the container's user (when it has
	// one) instead of by the archive's uid/gid.
	CopyUIDGID bool
}

// ChangeKind is what happened to a path: 0 modified, 1 added, 2 deleted.
// The numbers are fixed, part of the API (the Engine API's Kind values).
type ChangeKind int

// Change kinds.
const (
	ChangeModify ChangeKind = 0
	ChangeAdd    ChangeKind = 1
	ChangeDelete ChangeKind = 2
)

// Change is one path of a container that differs from its image.
type Change struct {
	Path string
	Kind ChangeKind
}

// Archives reads and writes container filesystems: copies in and out,
// export, changes and the layer of a commit. A running container is
// served by its VM; a stopped (created or exited) one by a short-lived VM
// booted on the same disks without its process, so the operations work
// in every state but paused (Conflict). Paths are absolute container
// paths; symbolic links resolve inside the container, never on the host.
// Safe for concurrent use. NotFound when there is no such container.
type Archives interface {
	// StatPath stats a path; a trailing "/" or "/." follows a final
	// link. NotFound if the path does not exist.
	StatPath(ctx context.Context, idOrName, path string) (PathStat, error)
	// GetArchive returns the path's stat and a tar stream of it (a
	// directory with everything beneath it, links not followed). NotFound
	// if the path does not exist. The caller closes the stream; a failure
	// mid-stream is the stream's read error.
	GetArchive(ctx context.Context, idOrName, path string) (PathStat, io.ReadCloser, error)
	// PutArchive unpacks the tar stream into the directory path. NotFound
	// if it does not exist; InvalidArgument if it is not a directory, is
	// read-only, or the archive is malformed, hostile or larger than the
	// space left there.
	PutArchive(ctx context.Context, idOrName, path string, r io.Reader, opts PutArchiveOptions) error
	// Export returns a tar stream of the container's own filesystem:
	// mount points appear, what volumes, binds, tmpfs, /proc, /sys and
	// /dev mount there does not.
	Export(ctx context.Context, idOrName string) (io.ReadCloser, error)
	// Changes lists the paths that differ from the image, path order.
	Changes(ctx context.Context, idOrName string) ([]Change, error)
	// ChangesLayer returns the changes as an image layer (tar, OCI
	// whiteouts for deletions) and the container's record, for a commit.
	ChangesLayer(ctx context.Context, idOrName string) (Container, io.ReadCloser, error)
}

// CommitSpec describes an image made from a parent image plus one layer
// (or none). The new image records Parent as its parent.
type CommitSpec struct {
	// Parent is the image ID the layer goes on top of; empty starts from
	// nothing (a build's FROM scratch: linux/amd64, no layers).
	Parent string
	// Layer is an uncompressed tar (OCI whiteouts allowed); nil adds no
	// layer (a configuration-only step of a build: the history entry is
	// marked empty_layer, OCI image-spec config.md history).
	Layer io.Reader
	// Config is the new image's configuration.
	Config ocispec.ImageConfig
	// ConfigExtra are members written into the config's "config" object
	// besides Config's (see Image.ConfigExtra); names OCI defines are
	// ignored.
	ConfigExtra map[string]json.RawMessage
	// Comment, Author and CreatedBy go into the config and its history.
	Comment, Author, CreatedBy string
	// Ref tags the image ("repo:tag"); empty leaves it untagged.
	Ref string
}

// ImageTrees materialises an image's filesystem on the host for a
// builder's COPY --from and its lookups of users and groups. The storage
// area implements it.
type ImageTrees interface {
	// Tree flattens the image's layers (OCI image-spec whiteouts applied)
	// into a new host directory and returns it; release deletes it, and
	// the caller must not write there. NotFound if there is no such image;
	// ResourceExhausted if the store's filesystem fills up.
	Tree(ctx context.Context, imageID string) (dir string, release func(), err error)
}

// Committer makes an image from a parent image and a new layer (a
// container's changes, a build's step). The storage area implements it.
type Committer interface {
	// Commit stores the layer and the new image and tags it. NotFound if
	// the parent is gone; InvalidArgument for a bad reference.
	Commit(ctx context.Context, spec CommitSpec) (Image, error)
}
