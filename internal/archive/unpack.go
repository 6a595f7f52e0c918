// Package archive owns safe extraction of tar streams (image layers and
// flattened image filesystems) into a host directory.
//
// Its one verb is [Unpack]. It does not know about images, registries or
// disks; callers (the image store's rootfs builder, later docker cp) hand it a
// tar stream and a target directory that they own.
//
// Safety rule: nothing outside the target directory is ever created, changed
// or followed. Entry names are resolved as if the target were the root of a
// chroot: leading "/" is dropped, names that climb above the root with ".."
// are rejected, symlinks met in parent directories are resolved inside the
// target (absolute targets relative to it), and the final component is never
// followed: an existing entry is replaced, not written through. Every file
// operation goes through a directory descriptor opened with [os.Root], so the
// kernel, not string handling alone, keeps it beneath the target.
package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// OCI image-spec (layer.md, "Whiteouts"): a file named ".wh.<name>" removes
// <name> from lower layers; ".wh..wh..opq" makes its directory opaque.
const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// Unpack extracts the tar stream r into dir, which must exist.
//
// It keeps what a container's root filesystem needs: regular files (GNU
// sparse ones too; runs of zeros become holes, so the host's disk holds
// only data),
// directories, symlinks (target text verbatim, absolute or not), hard links,
// character and block devices and fifos (created as the caller, who must be
// root for devices), permission bits including setuid/setgid/sticky, numeric
// owner (uid/gid from the header, so root-owned unless the tar says otherwise),
// modification times and, for files and directories, extended attributes from
// PAX "SCHILY.xattr." records. Directory times are applied last so later
// entries do not disturb them.
//
// Whiteouts follow the OCI image-spec layer rules: ".wh.<name>" removes
// <name>, and ".wh..wh..opq" removes whatever its directory held before this
// call; neither marker is materialised. A later entry for an existing path
// replaces it (directories merge), as tar does.
//
// Errors: InvalidArgument for a malformed tar or an entry that would escape
// dir (a ".." name or hard link target climbing above the root); the
// context's error when ctx ends; other errors are I/O failures. On error dir
// is left partly filled; the caller removes it.
func Unpack(ctx context.Context, r io.Reader, dir string) error {
	return UnpackWith(ctx, r, dir, Options{Whiteouts: true})
}

// Options tune [UnpackWith] for uses other than image layers (docker cp).
type Options struct {
	// Whiteouts applies the OCI whiteout rules; without it ".wh." names
	// are ordinary files (docker cp keeps them as such).
	Whiteouts bool
	// Prefix is a directory, relative to dir and free of symbolic links,
	// that the entries land in (docker cp's destination). Links and
	// symlinks in the archive still resolve inside dir, as if dir were
	// the root of a chroot; entries may not climb above Prefix. An entry
	// naming Prefix itself (".") is skipped, as dockerd does.
	Prefix string
	// NoOverwriteDirNonDir refuses to replace a directory with a
	// non-directory and the reverse (InvalidArgument), with dockerd's texts.
	NoOverwriteDirNonDir bool
	// Owner, when set, owns every entry instead of the header's uid/gid.
	Owner *Owner
	// MaxBytes bounds the sum of the regular files' sizes (as declared
	// in their headers, so a huge sparse file counts in full); 0: no
	// bound. MaxEntries bounds the number of entries; 0: no bound. Going
	// over either fails with InvalidArgument before the entry is written.
	MaxBytes   int64
	MaxEntries int
	// DirectWrites writes the data of regular files of at least
	// directMin bytes with O_DIRECT (open(2)), so the kernel does not
	// copy it through the page cache: for a VM's guest, whose virtual
	// disk's device model reads the data straight from the writer's
	// buffer (docker cp into a container, where a TCG guest spent 1.6 s
	// of 2.4 s per 100 MiB copying into its page cache). Where the
	// filesystem refuses O_DIRECT (tmpfs, shared folders) the file is
	// written through the page cache as without the option.
	DirectWrites bool
}

// Owner is a numeric owner.
type Owner struct{ UID, GID int }

// UnpackWith is [Unpack] with options.
func UnpackWith(ctx context.Context, r io.Reader, dir string, opts Options) error {
	if opts.Prefix != "" {
		p, err := clean(opts.Prefix)
		if err != nil {
			return err
		}
		opts.Prefix = p
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("archive: open target: %w", err)
	}
	defer root.Close()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("archive: target path: %w", err)
	}
	u := &unpacker{
		root:    root,
		dir:     abs,
		created: map[string]bool{},
		opts:    opts,
	}
	return u.run(ctx, tar.NewReader(r))
}

type dirTime struct {
	rel   string
	mtime time.Time
}

type unpacker struct {
	root *os.Root
	dir  string // absolute host path of root
	// created records the cleaned names made by this call, so an opaque
	// marker removes only what existed before.
	created  map[string]bool
	dirTimes []dirTime
	// pending holds hard links whose target had not been extracted yet
	// (a flattened image lists upper layers first).
	pending []*tar.Header
	opts    Options
	bytes   int64 // regular file bytes so far (Options.MaxBytes)
	entries int   // entries so far (Options.MaxEntries)
	buf     []byte
}

// within joins a cleaned entry name to Options.Prefix.
func (u *unpacker) within(rel string) string {
	if u.opts.Prefix == "" {
		return rel
	}
	if rel == "" {
		return u.opts.Prefix
	}
	return path.Join(u.opts.Prefix, rel)
}

func (u *unpacker) run(ctx context.Context, tr *tar.Reader) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("archive: read tar: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		if err := u.entry(ctx, hdr, tr); err != nil {
			return err
		}
	}
	for _, hdr := range u.pending {
		if err := u.entry(ctx, hdr, nil); err != nil {
			return err
		}
	}
	// Deepest first, so setting a parent's time is not undone by a child.
	slices.Reverse(u.dirTimes)
	for _, d := range u.dirTimes {
		if err := u.setTimes(d.rel, d.mtime); err != nil {
			return err
		}
	}
	return nil
}

// clean turns a tar name into a path relative to the root: "" for the root
// itself. A name that climbs above the root is an error.
func clean(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("archive: empty entry name: %w", errdefs.ErrInvalidArgument)
	}
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("archive: entry %q escapes the target: %w", name, errdefs.ErrInvalidArgument)
	}
	if p == "." {
		return "", nil
	}
	return p, nil
}

// parent opens the directory that will hold rel, creating missing parents.
// Symlinks among the parents resolve inside the root (chroot semantics).
func (u *unpacker) parent(rel string) (*os.File, string, error) {
	dirRel := path.Dir(rel)
	base := path.Base(rel)
	resolved := "."
	if dirRel != "." {
		full, err := securejoin.SecureJoin(u.dir, dirRel)
		if err != nil {
			return nil, "", fmt.Errorf("archive: resolve %q: %w", dirRel, err)
		}
		r, err := filepath.Rel(u.dir, full)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") {
			return nil, "", fmt.Errorf("archive: entry %q escapes the target: %w", rel, errdefs.ErrInvalidArgument)
		}
		resolved = r
		if err := u.root.MkdirAll(resolved, 0o755); err != nil {
			return nil, "", fmt.Errorf("archive: create parent of %q: %w", rel, err)
		}
	}
	f, err := u.root.Open(resolved)
	if err != nil {
		return nil, "", fmt.Errorf("archive: open parent of %q: %w", rel, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.IsDir() {
		f.Close()
		return nil, "", fmt.Errorf("archive: parent of %q is not a directory: %w", rel, errdefs.ErrInvalidArgument)
	}
	return f, base, nil
}

func (u *unpacker) entry(ctx context.Context, hdr *tar.Header, body io.Reader) error {
	rel, err := clean(hdr.Name)
	if err != nil {
		return err
	}
	if body != nil {
		u.entries++
		if u.opts.MaxEntries > 0 && u.entries > u.opts.MaxEntries {
			return fmt.Errorf("archive: more than %d entries: %w", u.opts.MaxEntries, errdefs.ErrInvalidArgument)
		}
		if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA || hdr.Typeflag == tar.TypeGNUSparse {
			u.bytes += hdr.Size
			if u.opts.MaxBytes > 0 && u.bytes > u.opts.MaxBytes {
				return fmt.Errorf("archive: files larger than the %d bytes allowed (%q): %w", u.opts.MaxBytes, hdr.Name, errdefs.ErrInvalidArgument)
			}
		}
	}
	if rel == "" {
		if u.opts.Prefix != "" {
			return nil
		}
		// The root itself: only its metadata.
		if hdr.Typeflag != tar.TypeDir {
			return nil
		}
		return u.rootMeta(hdr)
	}
	rel = u.within(rel)
	if u.opts.Owner != nil {
		hdr.Uid, hdr.Gid = u.opts.Owner.UID, u.opts.Owner.GID
	}
	base := path.Base(rel)
	if u.opts.Whiteouts && base == opaqueWhiteout {
		return u.opaque(path.Dir(rel))
	}
	if u.opts.Whiteouts && strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(path.Join(path.Dir(rel), strings.TrimPrefix(base, whiteoutPrefix)))
	}

	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeGNUSparse:
		// tar.Reader expands a sparse file's data; it is a regular file.
		hdr.Typeflag = tar.TypeReg
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		// Sockets cannot be archived meaningfully; other types are skipped.
		return nil
	}

	pf, name, err := u.parent(rel)
	if err != nil {
		return err
	}
	defer pf.Close()
	dfd := int(pf.Fd())

	var existing unix.Stat_t
	exists := unix.Fstatat(dfd, name, &existing, unix.AT_SYMLINK_NOFOLLOW) == nil
	existingDir := exists && existing.Mode&unix.S_IFMT == unix.S_IFDIR
	if exists && u.opts.NoOverwriteDirNonDir {
		if existingDir && hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("cannot overwrite directory %q with non-directory %q: %w", "/"+rel, hdr.Name, errdefs.ErrInvalidArgument)
		}
		if !existingDir && hdr.Typeflag == tar.TypeDir {
			return fmt.Errorf("cannot overwrite non-directory %q with directory %q: %w", "/"+rel, hdr.Name, errdefs.ErrInvalidArgument)
		}
	}
	if exists && !(existingDir && hdr.Typeflag == tar.TypeDir) {
		if hdr.Typeflag == tar.TypeLink && u.sameAsLinkTarget(hdr, rel) {
			return nil
		}
		if err := removeAt(pf, name, existingDir); err != nil {
			return fmt.Errorf("archive: replace %q: %w", rel, err)
		}
	}

	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !existingDir {
			if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
				return fmt.Errorf("archive: mkdir %q: %w", rel, err)
			}
		}
	case tar.TypeReg, tar.TypeRegA:
		fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("archive: create %q: %w", rel, err)
		}
		f := os.NewFile(uintptr(fd), rel)
		if body != nil {
			if err := u.copySparse(f, ctxReader{ctx, body}, u.opts.DirectWrites && hdr.Size >= directMin); err != nil {
				f.Close()
				return fmt.Errorf("archive: write %q: %w", rel, err)
			}
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("archive: write %q: %w", rel, err)
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, dfd, name); err != nil {
			return fmt.Errorf("archive: symlink %q: %w", rel, err)
		}
	case tar.TypeLink:
		ok, err := u.link(hdr, rel, dfd, name)
		if err != nil {
			return err
		}
		if !ok {
			if body == nil {
				return fmt.Errorf("archive: hard link %q: target %q not in archive: %w", rel, hdr.Linkname, errdefs.ErrInvalidArgument)
			}
			u.pending = append(u.pending, hdr)
		}
		// A hard link shares the target's inode and metadata.
		u.created[rel] = true
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			kind = unix.S_IFCHR
		case tar.TypeBlock:
			kind = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(dfd, name, kind|0o600, int(dev)); err != nil {
			return fmt.Errorf("archive: mknod %q: %w", rel, err)
		}
	}
	u.created[rel] = true

	// Owner before mode: chown clears setuid/setgid.
	if err := unix.Fchownat(dfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("archive: chown %q: %w", rel, err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := u.chmodXattrs(dfd, name, rel, mode, hdr); err != nil {
			return err
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		u.dirTimes = append(u.dirTimes, dirTime{rel: rel, mtime: hdr.ModTime})
		return nil
	}
	return utimes(dfd, name, rel, hdr.ModTime)
}

// chmodXattrs sets mode and extended attributes through a descriptor opened
// without following symlinks (O_PATH cannot fchmod, so open for real).
func (u *unpacker) chmodXattrs(dfd int, name, rel string, mode uint32, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeDir:
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
		if hdr.Typeflag == tar.TypeDir {
			flags |= unix.O_DIRECTORY
		}
		fd, err := unix.Openat(dfd, name, flags, 0)
		if err != nil {
			return fmt.Errorf("archive: open %q: %w", rel, err)
		}
		defer unix.Close(fd)
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("archive: chmod %q: %w", rel, err)
		}
		for k, v := range hdr.PAXRecords {
			attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
			if !ok {
				continue
			}
			if err := unix.Fsetxattr(fd, attr, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
				return fmt.Errorf("archive: set xattr %s on %q: %w", attr, rel, err)
			}
		}
		return nil
	default:
		// Devices and fifos: opening them could block or have effects.
		// The name was just created by mknodat in a directory only this
		// call writes to.
		if err := unix.Fchmodat(dfd, name, mode, 0); err != nil {
			return fmt.Errorf("archive: chmod %q: %w", rel, err)
		}
		return nil
	}
}

// link makes a hard link to the header's target; ok is false if the target
// does not exist yet.
func (u *unpacker) link(hdr *tar.Header, rel string, dfd int, name string) (bool, error) {
	target, err := clean(hdr.Linkname)
	if err != nil || target == "" {
		return false, fmt.Errorf("archive: hard link %q: target %q escapes the target: %w", rel, hdr.Linkname, errdefs.ErrInvalidArgument)
	}
	target = u.within(target)
	tf, tname, err := u.parent(target)
	if err != nil {
		return false, err
	}
	defer tf.Close()
	var st unix.Stat_t
	if err := unix.Fstatat(int(tf.Fd()), tname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return false, fmt.Errorf("archive: hard link %q to directory %q: %w", rel, hdr.Linkname, errdefs.ErrInvalidArgument)
	}
	// Flags 0: never follow a symlink target; link the symlink itself.
	if err := unix.Linkat(int(tf.Fd()), tname, dfd, name, 0); err != nil {
		return false, fmt.Errorf("archive: hard link %q: %w", rel, err)
	}
	return true, nil
}

// sameAsLinkTarget reports whether rel already is the hard link's target
// (a retried pending link, or a link to itself).
func (u *unpacker) sameAsLinkTarget(hdr *tar.Header, rel string) bool {
	target, err := clean(hdr.Linkname)
	return err == nil && u.within(target) == rel
}

func (u *unpacker) rootMeta(hdr *tar.Header) error {
	f, err := u.root.Open(".")
	if err != nil {
		return fmt.Errorf("archive: open target: %w", err)
	}
	defer f.Close()
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("archive: chown target: %w", err)
	}
	if err := f.Chmod(fs.FileMode(hdr.Mode&0o777) | modeBits(hdr.Mode)); err != nil {
		return fmt.Errorf("archive: chmod target: %w", err)
	}
	u.dirTimes = append([]dirTime{{rel: ".", mtime: hdr.ModTime}}, u.dirTimes...)
	return nil
}

func modeBits(m int64) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

func (u *unpacker) setTimes(rel string, mtime time.Time) error {
	if rel == "." {
		f, err := u.root.Open(".")
		if err != nil {
			return fmt.Errorf("archive: open target: %w", err)
		}
		defer f.Close()
		return utimes(int(f.Fd()), ".", rel, mtime)
	}
	pf, name, err := u.parent(rel)
	if err != nil {
		return err
	}
	defer pf.Close()
	return utimes(int(pf.Fd()), name, rel, mtime)
}

func utimes(dfd int, name, rel string, mtime time.Time) error {
	if mtime.IsZero() {
		return nil
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	if err := unix.UtimesNanoAt(dfd, name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("archive: set times of %q: %w", rel, err)
	}
	return nil
}

// whiteout removes rel (never following a symlink in its last component).
func (u *unpacker) whiteout(rel string) error {
	if _, err := clean(rel); err != nil {
		return err
	}
	pf, name, err := u.parent(rel)
	if err != nil {
		return err
	}
	defer pf.Close()
	var st unix.Stat_t
	if unix.Fstatat(int(pf.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return nil
	}
	if err := removeAt(pf, name, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
		return fmt.Errorf("archive: whiteout %q: %w", rel, err)
	}
	return nil
}

// opaque empties dirRel of everything this call did not create.
func (u *unpacker) opaque(dirRel string) error {
	rel := dirRel
	if rel == "." {
		rel = ""
	}
	var f *os.File
	var err error
	if rel == "" {
		f, err = u.root.Open(".")
	} else {
		var pf *os.File
		var name string
		pf, name, err = u.parent(rel)
		if err != nil {
			return err
		}
		fd, oerr := unix.Openat(int(pf.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		pf.Close()
		if oerr != nil {
			return nil // nothing (or not a directory) to make opaque
		}
		f = os.NewFile(uintptr(fd), rel)
	}
	if err != nil {
		return fmt.Errorf("archive: opaque %q: %w", dirRel, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("archive: opaque %q: %w", dirRel, err)
	}
	for _, n := range names {
		if u.created[path.Join(dirRel, n)] {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(int(f.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		if err := removeAt(f, n, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
			return fmt.Errorf("archive: opaque %q: %w", dirRel, err)
		}
	}
	return nil
}

// removeAt removes name in the directory d; a directory with all it holds.
func removeAt(d *os.File, name string, isDir bool) error {
	if !isDir {
		return unix.Unlinkat(int(d.Fd()), name, 0)
	}
	sub, err := os.OpenRoot(filepath.Join("/proc/self/fd", fmt.Sprint(d.Fd())))
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.RemoveAll(name)
}

// readBlock fills buf from r, stopping early only at io.EOF (returned
// with the count) or another error; unlike io.ReadFull it keeps a
// truncated tar's io.ErrUnexpectedEOF distinct from a short last block.
func readBlock(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// isZero reports whether b holds only zero bytes: the first is zero and
// each equals the one before it, which bytes.Equal checks a word at a
// time (a byte loop costs a second per 100 MiB in a TCG guest).
func isZero(b []byte) bool {
	return len(b) == 0 || (b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1]))
}

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
