package tether

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/archive"
)

// Archives (docker cp, export, diff, commit). Every path is resolved inside
// the container's root as the container sees it; the unpacker keeps every
// write beneath it (package archive's safety rule). Two extra views are
// mounted on first use:
//
//   - plainView: a non-recursive bind mount of the root, i.e. the
//     container's own filesystem without /proc, /sys, /dev, the volumes,
//     the tmpfs mounts and the identity files mounted over it — what
//     docker export and docker diff see.
//   - baseView: the image's read-only root disk (serial wire.BaseSerial),
//     which the container's copy-on-write disk lies over; diff compares
//     the two.
const (
	plainView = "/run/vch/plain"
	baseView  = "/run/vch/base"
)

// Bounds of a put (docker cp into a container).
const (
	// maxPutEntries bounds the entries of one archive (a tar bomb of
	// empty files would otherwise exhaust inodes slowly): ext4's default
	// inode count for a 2 GiB disk is about 131,000; 1,000,000 leaves
	// room for big volumes.
	maxPutEntries = 1_000_000
)

// archiveRoot is where archive operations resolve paths; a variable so
// unit tests can point it at a temporary directory.
var archiveRoot = RootMount

var views struct {
	mu           sync.Mutex
	plain, based bool
}

// archiveErr carries a wire kind.
type archiveErr struct {
	kind string
	err  error
}

func (e *archiveErr) Error() string { return e.err.Error() }
func (e *archiveErr) Unwrap() error { return e.err }

func archiveFail(kind, format string, args ...any) error {
	return &archiveErr{kind: kind, err: fmt.Errorf(format, args...)}
}

func toWire(err error) wire.ArchiveError {
	if err == nil {
		return wire.ArchiveError{}
	}
	var ae *archiveErr
	if errors.As(err, &ae) {
		return wire.ArchiveError{Kind: ae.kind, Message: ae.err.Error()}
	}
	kind := wire.ArchiveFailed
	switch {
	case errors.Is(err, unix.EROFS):
		kind = wire.ArchiveReadOnly
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EINVAL), strings.Contains(err.Error(), "invalid argument"):
		kind = wire.ArchiveInvalid
	}
	return wire.ArchiveError{Kind: kind, Message: err.Error()}
}

// containerPath splits a docker cp path: its clean absolute form and
// whether a final symbolic link is followed (trailing "/" or "/.").
func containerPath(p string) (clean string, follow bool) {
	clean = path.Clean("/" + p)
	follow = clean == "/" || strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || p == "."
	return clean, follow
}

// resolveIn resolves a container path inside root: fully when follow,
// else the parent only (the last component, a link maybe, is meant
// itself).
func resolveIn(root, p string, follow bool) (string, error) {
	if follow {
		return securejoinIn(root, p)
	}
	dir, err := securejoinIn(root, path.Dir(p))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, path.Base(p)), nil
}

// checkDirForm refuses a path written as a directory ("x/" or "x/.")
// whose entry fi is not one, as path resolution does (ENOTDIR): docker cp
// of "/etc/passwd/" fails with "not a directory".
func checkDirForm(p string, fi fs.FileInfo) error {
	if (strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.")) && !fi.IsDir() {
		return archiveFail(wire.ArchiveInvalid, "lstat %s: not a directory", p)
	}
	return nil
}

// baseName is the name Docker gives the archive's top entry: the last
// element of the path as asked ("." for "/x/.", "/" for the root).
func baseName(p string) string {
	if p == "/" || p == "" {
		return "/"
	}
	p = strings.TrimRight(p, "/")
	if p == "" {
		return "/"
	}
	if strings.HasSuffix(p, "/.") || p == "." {
		return "."
	}
	return path.Base(path.Clean("/" + p))
}

// statPath answers wire.RequestArchiveStat.
func statPath(p string) (wire.PathStat, error) {
	clean, follow := containerPath(p)
	host, err := resolveIn(archiveRoot, clean, follow)
	if err != nil {
		return wire.PathStat{}, archiveFail(wire.ArchiveInvalid, "%w", err)
	}
	fi, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return wire.PathStat{}, archiveFail(wire.ArchiveNotFound, "no such file: %s", clean)
	}
	if err != nil {
		return wire.PathStat{}, archiveFail(wire.ArchiveInvalid, "lstat %s: %w", clean, err)
	}
	if err := checkDirForm(p, fi); err != nil {
		return wire.PathStat{}, err
	}
	st := wire.PathStat{Name: baseName(p), Size: fi.Size(), Mode: uint32(fi.Mode()), MtimeUnixNano: fi.ModTime().UnixNano()}
	if fi.Mode()&fs.ModeSymlink != 0 {
		full, err := securejoinIn(archiveRoot, clean)
		if err == nil {
			rel, _ := filepath.Rel(archiveRoot, full)
			st.LinkTarget = path.Join("/", filepath.ToSlash(rel))
		}
	}
	return st, nil
}

// tarWriter writes entries from the filesystem, hard links once.
type tarWriter struct {
	tw    *tar.Writer
	inode map[uint64]string
	buf   []byte // file data's copy buffer, made on first use
}

// tarCopyBytes is how much of a file one read takes and one write hands
// the channel (the tar writer passes data through): a frame of the
// link's largest on a virtio-serial port (spliceBytes), where io.Copy's
// 32 KiB made eight.
const tarCopyBytes = spliceBytes

func newTarWriter(w io.Writer) *tarWriter {
	return &tarWriter{tw: tar.NewWriter(w), inode: map[uint64]string{}}
}

// add writes one entry (not what a directory holds) named name.
func (t *tarWriter) add(host, name string, fi fs.FileInfo) error {
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		l, err := os.Readlink(host)
		if err != nil {
			return err
		}
		link = l
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil // sockets cannot be archived (tar has no type for them)
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	if fi.IsDir() && !strings.HasSuffix(name, "/") {
		hdr.Name += "/"
	}
	// As dockerd: PAX, whole seconds, no access/change times, numeric owners.
	hdr.Format = tar.FormatPAX
	hdr.ModTime = hdr.ModTime.Truncate(1e9)
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.Uname, hdr.Gname = "", ""
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := t.inode[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				t.inode[st.Ino] = hdr.Name
			}
		}
	}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	fd, err := unix.Open(host, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), host)
	defer f.Close()
	// A file that shrank meanwhile is padded; one that grew is cut: the
	// header's size is what the archive promised.
	if t.buf == nil {
		t.buf = make([]byte, tarCopyBytes)
	}
	n, err := io.CopyBuffer(t.tw, io.LimitReader(f, hdr.Size), t.buf)
	if err != nil {
		return err
	}
	if n < hdr.Size {
		_, err = io.CopyN(t.tw, zeroReader{}, hdr.Size-n)
	}
	return err
}

func (t *tarWriter) close() error { return t.tw.Close() }

// tree writes host (as name) and, for a directory, everything beneath it
// without following links. skip, when set, decides for each directory
// beneath the top whether its content is left out (the entry is kept).
func (t *tarWriter) tree(host, name string, skip func(host string) bool) error {
	return filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != host && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(host, p)
		n := name
		if rel != "." {
			// Joined as written, not cleaned: under "." entries are
			// "./foo" and under "/" "/foo", as dockerd names them.
			n = strings.TrimSuffix(name, "/") + "/" + filepath.ToSlash(rel)
		}
		if err := t.add(p, n, fi); err != nil {
			return err
		}
		if d.IsDir() && p != host && skip != nil && skip(p) {
			return filepath.SkipDir
		}
		return nil
	})
}

// kernelFS reports a directory holding /proc or /sys: their content is
// never archived.
func kernelFS(host string) bool {
	var st unix.Statfs_t
	if unix.Statfs(host, &st) != nil {
		return false
	}
	return st.Type == unix.PROC_SUPER_MAGIC || st.Type == unix.SYSFS_MAGIC
}

// getPath writes a tar of one container path (docker cp out).
func getPath(w io.Writer, p string) error {
	clean, follow := containerPath(p)
	host, err := resolveIn(archiveRoot, clean, follow)
	if err != nil {
		return archiveFail(wire.ArchiveInvalid, "%w", err)
	}
	fi, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return archiveFail(wire.ArchiveNotFound, "no such file: %s", clean)
	}
	if err == nil {
		if err := checkDirForm(p, fi); err != nil {
			return err
		}
	}
	tw := newTarWriter(w)
	if err := tw.tree(host, baseName(p), kernelFS); err != nil {
		return err
	}
	return tw.close()
}

// exportRoot writes a tar of the container's own filesystem (plain view).
func exportRoot(w io.Writer) error {
	root, err := plainRoot()
	if err != nil {
		return err
	}
	tw := newTarWriter(w)
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := tw.tree(filepath.Join(root, e.Name()), e.Name(), nil); err != nil {
			return err
		}
	}
	return tw.close()
}

// putPath unpacks a tar into a container directory (docker cp in).
func putPath(ctx context.Context, r io.Reader, put wire.ArchivePut) error {
	clean, _ := containerPath(put.Path)
	host, err := securejoinIn(archiveRoot, clean)
	if err != nil {
		return archiveFail(wire.ArchiveInvalid, "%w", err)
	}
	fi, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return archiveFail(wire.ArchiveNotFound, "no such file: %s", clean)
	}
	if err != nil {
		return archiveFail(wire.ArchiveInvalid, "lstat %s: %w", clean, err)
	}
	if !fi.IsDir() {
		return archiveFail(wire.ArchiveNotDir, "extraction point is not a directory")
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(host, &sfs); err != nil {
		return archiveFail(wire.ArchiveFailed, "statfs %s: %w", clean, err)
	}
	if sfs.Flags&unix.ST_RDONLY != 0 {
		if sameDevice(host, archiveRoot) {
			return archiveFail(wire.ArchiveReadOnly, "container rootfs is marked read-only")
		}
		return archiveFail(wire.ArchiveReadOnly, "mounted volume is marked read-only")
	}
	opts := archive.Options{MaxBytes: put.MaxBytes, MaxEntries: maxPutEntries, NoOverwriteDirNonDir: put.NoOverwriteDirNonDir, DirectWrites: true}
	if opts.MaxBytes == 0 {
		// A tar bomb fails before it fills the disk (a sparse file counts
		// with its full size).
		opts.MaxBytes = int64(sfs.Bavail) * int64(sfs.Bsize)
	}
	if put.CopyUIDGID && put.User != "" {
		u, err := resolveUser(put.User, nil)
		if err != nil {
			return archiveFail(wire.ArchiveInvalid, "%w", err)
		}
		opts.Owner = &archive.Owner{UID: u.Uid, GID: u.Gid}
	}
	rel, err := filepath.Rel(archiveRoot, host)
	if err != nil || strings.HasPrefix(rel, "..") {
		return archiveFail(wire.ArchiveInvalid, "destination %s escapes the root", clean)
	}
	if rel != "." {
		opts.Prefix = filepath.ToSlash(rel)
	}
	if err := archive.UnpackWith(ctx, r, archiveRoot, opts); err != nil {
		if errors.Is(err, unix.EROFS) {
			return archiveFail(wire.ArchiveReadOnly, "%w", err)
		}
		if strings.Contains(err.Error(), "invalid argument") || strings.Contains(err.Error(), "cannot overwrite") {
			return archiveFail(wire.ArchiveInvalid, "%w", err)
		}
		return err
	}
	return nil
}

func sameDevice(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev
}

// plainRoot mounts (once) and returns the plain view of the container's
// root.
func plainRoot() (string, error) {
	if archiveRoot != RootMount {
		return archiveRoot, nil // unit tests: no mounts
	}
	views.mu.Lock()
	defer views.mu.Unlock()
	if views.plain {
		return plainView, nil
	}
	if err := os.MkdirAll(plainView, 0o755); err != nil {
		return "", err
	}
	// Without MS_REC: the mounts beneath the root stay out of this view.
	if err := unix.Mount(RootMount, plainView, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("tether: bind the root's plain view: %w", err)
	}
	_ = unix.Mount("", plainView, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
	views.plain = true
	return plainView, nil
}

// baseRoot mounts (once) the image's read-only root disk and returns it.
func baseRoot(ctx context.Context) (string, error) {
	views.mu.Lock()
	defer views.mu.Unlock()
	if views.based {
		return baseView, nil
	}
	dev, err := findDisk(ctx, wire.BaseSerial, false)
	if err != nil {
		return "", fmt.Errorf("tether: the image's disk is not attached to this VM (start the container again): %w", err)
	}
	if err := os.MkdirAll(baseView, 0o755); err != nil {
		return "", err
	}
	// noload: never replay a journal on the shared image disk.
	if err := unix.Mount(dev, baseView, "ext4", unix.MS_RDONLY, "noload"); err != nil {
		return "", fmt.Errorf("tether: mount the image's disk: %w", err)
	}
	views.based = true
	return baseView, nil
}

// diffIgnored are paths Docker keeps in a container's init layer, so they
// never show in docker diff or in a commit (tether creates them as mount
// points or for the identity files).
var diffIgnored = map[string]bool{
	"/proc": true, "/sys": true, "/dev": true, "/etc/hostname": true, "/etc/hosts": true,
	"/etc/resolv.conf": true, "/etc/mtab": true, "/.dockerenv": true,
}

// identityDirs hold diffIgnored files that tether writes at each start, so
// their modification time changes with every start: Docker keeps those
// files in the init layer and diff does not list /etc for them. Such a
// directory shows as changed only for its type, mode or owner, or through
// an entry added or deleted beneath it.
var identityDirs = map[string]bool{"/etc": true}

// changes compares the container's own filesystem (upper) with the
// image's (base), as Docker's naive diff does: an entry is changed when
// its type, mode, owner, size (not for directories), modification time,
// device number or link target differ; a directory that only got new or
// lost entries shows as changed through its mtime and, as in Docker,
// every added or deleted entry's parent is reported changed. Contents are
// not compared (a rewrite that keeps size and mtime is not seen).
func changes(upper, base string) ([]wire.Change, error) {
	var out []wire.Change
	seen := map[string]bool{}
	record := func(p string, kind int) {
		if seen[p] {
			return
		}
		seen[p] = true
		out = append(out, wire.Change{Path: p, Kind: kind})
	}
	parents := map[string]bool{}
	err := filepath.WalkDir(upper, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(upper, hp)
		if rel == "." {
			return nil
		}
		p := "/" + filepath.ToSlash(rel)
		if diffIgnored[p] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == "lost+found" {
			return filepath.SkipDir
		}
		if _, err := os.Lstat(filepath.Join(base, rel)); err != nil {
			record(p, wire.ChangeAdd)
			parents[path.Dir(p)] = true
			return nil
		}
		if differs(hp, filepath.Join(base, rel), identityDirs[p]) {
			record(p, wire.ChangeModify)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(base, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(base, hp)
		if rel == "." {
			return nil
		}
		p := "/" + filepath.ToSlash(rel)
		if diffIgnored[p] || rel == "lost+found" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		ufi, err := os.Lstat(filepath.Join(upper, rel))
		if err != nil {
			record(p, wire.ChangeDelete)
			parents[path.Dir(p)] = true
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() && !ufi.IsDir() {
			// Replaced by a non-directory: its content is gone with it.
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for p := range parents {
		if p != "/" && !seen[p] {
			record(p, wire.ChangeModify)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// differs compares two entries as changes does; ignoreMtime leaves the
// modification time out.
func differs(uhost, bhost string, ignoreMtime bool) bool {
	var us, bs unix.Stat_t
	if unix.Lstat(uhost, &us) != nil || unix.Lstat(bhost, &bs) != nil {
		return true
	}
	if us.Mode != bs.Mode || us.Uid != bs.Uid || us.Gid != bs.Gid || us.Rdev != bs.Rdev {
		return true
	}
	if us.Mode&unix.S_IFMT != unix.S_IFDIR && us.Size != bs.Size {
		return true
	}
	if us.Mtim != bs.Mtim && !ignoreMtime {
		return true
	}
	if us.Mode&unix.S_IFMT == unix.S_IFLNK {
		lu, _ := os.Readlink(uhost)
		lb, _ := os.Readlink(bhost)
		return lu != lb
	}
	return false
}

// changesTar writes the container's changes as an image layer: added and
// changed entries (a changed directory as its own entry only) and an OCI
// whiteout (".wh.NAME") for each deleted one.
func changesTar(w io.Writer, upper string, list []wire.Change) error {
	tw := newTarWriter(w)
	for _, c := range list {
		rel := strings.TrimPrefix(c.Path, "/")
		if c.Kind == wire.ChangeDelete {
			hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Join(path.Dir(rel), ".wh."+path.Base(rel)), Mode: 0o600, Format: tar.FormatPAX}
			if err := tw.tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		hp := filepath.Join(upper, rel)
		fi, err := os.Lstat(hp)
		if err != nil {
			continue // gone since the comparison
		}
		if err := tw.add(hp, rel, fi); err != nil {
			return err
		}
	}
	return tw.close()
}

// diffRoots returns the plain view and the image's disk.
func diffRoots(ctx context.Context) (string, string, error) {
	upper, err := plainRoot()
	if err != nil {
		return "", "", err
	}
	base, err := baseRoot(ctx)
	if err != nil {
		return "", "", err
	}
	return upper, base, nil
}

// handleArchiveStat answers wire.RequestArchiveStat.
func handleArchiveStat(req *link.Request) {
	var ap wire.ArchivePath
	if err := json.Unmarshal(req.Payload, &ap); err != nil {
		_ = req.Reply(false, wire.Encode(wire.ArchiveError{Kind: wire.ArchiveInvalid, Message: err.Error()}))
		return
	}
	st, err := statPath(ap.Path)
	if err != nil {
		_ = req.Reply(false, wire.Encode(toWire(err)))
		return
	}
	_ = req.Reply(true, wire.Encode(st))
}

// handleArchiveChannel serves the archive channels.
func (s *server) handleArchiveChannel(nc link.NewChannel) {
	reject := func(err error) {
		_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(toWire(err))))
	}
	var run func(ctx context.Context, ch link.Channel) error
	switch nc.ChannelType() {
	case wire.ChannelArchiveGet:
		var get wire.ArchiveGet
		if err := json.Unmarshal(nc.ExtraData(), &get); err != nil {
			reject(archiveFail(wire.ArchiveInvalid, "bad request: %w", err))
			return
		}
		switch get.Mode {
		case wire.ArchiveModePath:
			// Fail before the stream starts, so the host can answer 404.
			if _, err := statPath(get.Path); err != nil {
				reject(err)
				return
			}
			run = func(_ context.Context, ch link.Channel) error { return getPath(ch, get.Path) }
		case wire.ArchiveModeExport:
			run = func(_ context.Context, ch link.Channel) error { return exportRoot(ch) }
		case wire.ArchiveModeChanges:
			run = func(ctx context.Context, ch link.Channel) error {
				upper, base, err := diffRoots(ctx)
				if err != nil {
					return err
				}
				list, err := changes(upper, base)
				if err != nil {
					return err
				}
				return changesTar(ch, upper, list)
			}
		default:
			reject(archiveFail(wire.ArchiveInvalid, "unknown archive mode %q", get.Mode))
			return
		}
	case wire.ChannelArchivePut:
		var put wire.ArchivePut
		if err := json.Unmarshal(nc.ExtraData(), &put); err != nil {
			reject(archiveFail(wire.ArchiveInvalid, "bad request: %w", err))
			return
		}
		run = func(ctx context.Context, ch link.Channel) error {
			err := putPath(ctx, ch, put)
			// Drain what the host still sends, so it sees our answer
			// rather than a blocked write.
			_, _ = io.Copy(io.Discard, ch)
			return err
		}
	case wire.ChannelArchivePutDisk:
		var put wire.ArchivePutDisk
		if err := json.Unmarshal(nc.ExtraData(), &put); err != nil || put.Serial == "" {
			reject(archiveFail(wire.ArchiveInvalid, "bad request: %v", err))
			return
		}
		run = func(ctx context.Context, ch link.Channel) error {
			d, err := openDiskStream(ctx, put.Serial, ch)
			if err != nil {
				return archiveFail(wire.ArchiveFailed, "transfer disk: %w", err)
			}
			defer d.Close()
			err = putPath(ctx, d, put.ArchivePut)
			// As for ChannelArchivePut: drain the host's marks or data.
			_, _ = io.Copy(io.Discard, ch)
			return err
		}
	case wire.ChannelChanges:
		run = func(ctx context.Context, ch link.Channel) error {
			upper, base, err := diffRoots(ctx)
			if err != nil {
				return err
			}
			list, err := changes(upper, base)
			if err != nil {
				return err
			}
			if list == nil {
				list = []wire.Change{}
			}
			_, err = ch.Write(wire.Encode(list))
			return err
		}
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	go link.DiscardRequests(reqs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = run(ctx, ch)
	if err != nil {
		s.logger.Info("archive operation failed", "channel", nc.ChannelType(), "err", err)
	}
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest(wire.RequestArchiveDone, false, wire.Encode(toWire(err)))
	_ = ch.Close()
}

// isArchiveChannel reports the channel types handleArchiveChannel serves.
func isArchiveChannel(t string) bool {
	return t == wire.ChannelArchiveGet || t == wire.ChannelArchivePut || t == wire.ChannelArchivePutDisk || t == wire.ChannelChanges
}

func securejoinIn(root, p string) (string, error) {
	return securejoin.SecureJoin(root, p)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
