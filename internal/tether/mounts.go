package tether

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

// stagingDir is where each volume's disk is mounted first (once, however
// many of the container's mounts name it), for the copy-up and the
// subpath, before its targets inside the container are bound to it.
const stagingDir = "/run/vch/staging"

// pristineDir is where mountAll binds the container's root filesystem
// alone (no submounts), the source of every copy-up: as dockerd fills a
// new volume from the container's own filesystem (its BaseFS), never
// from another volume or an image mounted above the target.
const pristineDir = "/run/vch/pristine"

// diskUnits maps disk serials to their units on a vSphere VM's
// paravirtual SCSI controller (scsiUnits of the serial channel's
// guestinfo); set once at boot before any disk is looked for, empty on
// the qemu driver's VMs.
var diskUnits map[string]int

// findDisk returns the device path (/dev/vdX) of the virtio-blk disk whose
// serial is serial (or, on vSphere, /dev/sdX of the SCSI disk diskUnits
// places it at), waiting up to deviceWait for it to appear; if it is
// not there at first look, every unbound virtio-blk device is bound (a
// restored VM binds its disks on first use). With legacyVda, a /dev/vda without any serial is taken (a host that sets
// none).
func findDisk(ctx context.Context, serial string, legacyVda bool) (string, error) {
	deadline := time.Now().Add(deviceWait)
	probed := false
	for {
		matches, _ := filepath.Glob("/sys/block/vd*/serial")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				continue
			}
			got := strings.TrimSpace(string(b))
			name := filepath.Base(filepath.Dir(m))
			if got == serial || (legacyVda && got == "" && name == "vda") {
				dev := "/dev/" + name
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if unit, ok := diskUnits[serial]; ok {
			if name := scsiDisk("/sys", unit); name != "" {
				dev := "/dev/" + name
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if !probed {
			// A restored VM binds its disks on first use: bind every
			// unbound one (a booted VM's are all bound already).
			probed = true
			_ = probeVirtio(func(typ string) bool { return typ == virtioBlock })
			continue
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("tether: no disk with serial %q appeared within %s", serial, deviceWait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sortMounts orders mounts so that a parent is mounted before anything
// beneath it (fewer path elements first; stable otherwise): a mount
// made later would hide what was mounted beneath its target.
func sortMounts(ms []wire.Mount) []wire.Mount {
	out := append([]wire.Mount(nil), ms...)
	depth := func(p string) int { return strings.Count(filepath.Clean(p), "/") }
	sort.SliceStable(out, func(i, j int) bool { return depth(out[i].Target) < depth(out[j].Target) })
	return out
}

// mountAll mounts the container's volumes and tmpfs mounts, in order.
// A volume disk is mounted once, at a staging directory, and each of its
// mounts binds its target to the whole volume or to its subpath; the
// staging mounts are detached at the end (the binds keep the
// filesystems). Mounting one ext4 disk twice, from two devices of the
// same file, corrupts it: the host attaches each volume once.
func mountAll(ctx context.Context, ms []wire.Mount) error {
	staged := map[string]string{} // serial → staging directory
	defer func() {
		for _, dir := range staged {
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	}()
	pristine := ""
	if slices.ContainsFunc(ms, func(m wire.Mount) bool { return m.CopyUp }) {
		if err := os.MkdirAll(pristineDir, 0o700); err != nil {
			return fmt.Errorf("tether: %w", err)
		}
		// A bind without MS_REC carries no submount, and a private one
		// gets none of the mounts made after it.
		if err := unix.Mount(RootMount, pristineDir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("tether: bind the root for copy-up: %w", err)
		}
		defer unix.Unmount(pristineDir, unix.MNT_DETACH)
		if err := unix.Mount("", pristineDir, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("tether: bind the root for copy-up: %w", err)
		}
		pristine = pristineDir
	}
	for _, m := range sortMounts(ms) {
		if !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
			return fmt.Errorf("tether: mount target %q: want an absolute path other than /", m.Target)
		}
		var err error
		switch m.Type {
		case wire.MountVolume, wire.MountImage:
			err = mountVolume(ctx, staged, pristine, m)
		case wire.MountTmpfs:
			err = mountTmpfs(m)
		case wire.MountBind:
			err = mountShare(m)
		default:
			err = fmt.Errorf("unknown mount type %q", m.Type)
		}
		if err != nil {
			return fmt.Errorf("tether: mount %s: %w", m.Target, err)
		}
	}
	return nil
}

// mountPoint resolves target inside the container's root and makes sure
// a directory is there to mount on (made, parents too, when missing). It
// returns the resolved path; errTypeMismatch if a file is there.
func mountPoint(target string) (string, error) {
	p, err := inRoot(target)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(p)
	switch {
	case err == nil && st.IsDir():
		return p, nil
	case err == nil:
		return "", fmt.Errorf("%s is not a directory in the container: %w", target, errTypeMismatch)
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(p, 0o755); err != nil {
			return "", fmt.Errorf("create mount point: %w", err)
		}
		return p, nil
	default:
		return "", err
	}
}

// mountVolume mounts a volume's ext4 disk at its staging directory
// (staged, by serial, unless it is there already), finds the part the
// mount wants (the volume's root, or its subpath: a directory or a file),
// fills that part from the container's root when it is an empty
// directory and the mount asks for it (copy-up), then binds the target to
// it; a read-only mount's bind is then made read-only, so the guest's
// kernel refuses writes through it (EROFS).
func mountVolume(ctx context.Context, staged map[string]string, pristine string, m wire.Mount) error {
	staging, ok := staged[m.Serial]
	if !ok {
		dev, err := findDisk(ctx, m.Serial, false)
		if err != nil {
			return err
		}
		staging = filepath.Join(stagingDir, fmt.Sprint(len(staged)))
		if err := os.MkdirAll(staging, 0o700); err != nil {
			return err
		}
		// noinit_itable: the disk is made with lazy inode tables;
		// zeroing them would fill the sparse file on the host. An
		// image's disk is read-only: mounted so, without its journal
		// (noload: nothing to replay on a disk never mounted to write).
		flags, data := uintptr(0), "noinit_itable"
		if m.Type == wire.MountImage {
			flags, data = unix.MS_RDONLY, "noload"
		}
		if err := unix.Mount(dev, staging, "ext4", flags, data); err != nil {
			return fmt.Errorf("mount %s disk %s: %w", m.Type, dev, err)
		}
		staged[m.Serial] = staging
	}
	src, isDir := staging, true
	if m.Subpath != "" {
		p, st, err := resolveSubpath(staging, m.Subpath)
		if err != nil {
			me := &wire.MountError{Reason: subpathReason(err), Target: m.Target, Subpath: m.Subpath, Message: err.Error()}
			var errno unix.Errno
			if errors.As(err, &errno) {
				me.Errno = errno.Error()
			}
			return me
		}
		src, isDir = p, st.IsDir()
	}
	var target string
	var err error
	if isDir {
		target, err = mountPoint(m.Target)
	} else {
		target, err = fileMountPoint(m.Target)
	}
	if errors.Is(err, errTypeMismatch) {
		return &wire.MountError{Reason: wire.MountTypeMismatch, Target: m.Target, Subpath: m.Subpath, Message: err.Error(), Errno: unix.ENOTDIR.Error()}
	}
	if err != nil {
		return err
	}
	if m.CopyUp && isDir && pristine != "" {
		// What the container's own filesystem has at the target: a
		// directory (symlinks resolved inside that filesystem).
		from, err := inDir(pristine, m.Target)
		if err != nil {
			return err
		}
		if st, err := os.Stat(from); err == nil && st.IsDir() {
			empty, err := dirEmpty(src)
			if err != nil {
				return err
			}
			if empty {
				if err := copyTree(from, src); err != nil {
					return fmt.Errorf("copy image content into the volume: %w", err)
				}
			}
		}
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind volume: %w", err)
	}
	if m.ReadOnly {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount read-only: %w", err)
		}
	}
	return nil
}

// errTypeMismatch is mountPoint's and fileMountPoint's error for a
// target that exists with the other type: a file where a directory is
// mounted, or the reverse (runc's ENOTDIR in dockerd).
var errTypeMismatch = errors.New("a directory cannot be mounted onto a file, nor the reverse")

// errEscapes is resolveSubpath's error for a subpath that leads out of
// its volume.
var errEscapes = errors.New("path concatenation escapes the base directory")

// maxSubpathLinks bounds the symlinks resolveSubpath follows (ELOOP
// beyond, as Linux's 40 for a path).
const maxSubpathLinks = 40

// resolveSubpath finds sub (a relative path) inside base, following the
// volume's own symlinks one component at a time, and returns the path
// it names and its file info. As Docker's rules for
// VolumeOptions.Subpath (its safepath.Join, which resolves on the
// host): a subpath that is not lexically local (after filepath.Clean,
// as filepath.Join cleans it), a ".." or a link that climbs above base,
// and a link to an absolute path (on the host it leaves the volume's
// _data directory) fail with an error wrapping errEscapes; a lookup that
// fails ("cannot access path SUB: …") wraps the lookup's unix.Errno
// (ENOENT for a missing part). Messages name paths relative to the
// volume, never base.
func resolveSubpath(base, sub string) (string, os.FileInfo, error) {
	escapes := fmt.Errorf("%w, subpath: %s", errEscapes, sub)
	clean := filepath.Clean(sub)
	if !filepath.IsLocal(clean) {
		return "", nil, escapes
	}
	cur := "" // the part resolved so far, relative to base
	rest := strings.Split(clean, "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur == "" {
				return "", nil, escapes
			}
			if cur = filepath.Dir(cur); cur == "." {
				cur = ""
			}
			continue
		}
		next := filepath.Join(cur, c)
		st, err := os.Lstat(filepath.Join(base, next))
		if err != nil {
			return "", nil, fmt.Errorf("cannot access path %s: %w", sub, lookupErrno(err))
		}
		if st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxSubpathLinks {
			return "", nil, fmt.Errorf("cannot access path %s: %w", sub, unix.ELOOP)
		}
		target, err := os.Readlink(filepath.Join(base, next))
		if err != nil {
			return "", nil, fmt.Errorf("cannot access path %s: %w", sub, lookupErrno(err))
		}
		if filepath.IsAbs(target) {
			return "", nil, escapes
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	p := filepath.Join(base, cur)
	st, err := os.Lstat(p)
	if err != nil {
		return "", nil, fmt.Errorf("cannot access path %s: %w", sub, lookupErrno(err))
	}
	return p, st, nil
}

// lookupErrno is the unix.Errno inside err (a *PathError of a lookup),
// else err.
func lookupErrno(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// subpathReason is the wire.MountError reason for resolveSubpath's err.
func subpathReason(err error) string {
	switch {
	case errors.Is(err, errEscapes):
		return wire.SubpathEscapes
	case errors.Is(err, unix.ENOENT):
		return wire.SubpathMissing
	}
	return wire.SubpathUnresolvable
}

// fileMountPoint resolves target inside the container's root for a file
// bind mount and makes sure a file is there to mount on (an empty one,
// its parents made, when missing).
func fileMountPoint(target string) (string, error) {
	p, err := inRoot(target)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(p)
	switch {
	case err == nil && st.IsDir():
		return "", fmt.Errorf("%s is a directory in the container; the mount's subpath is a file: %w", target, errTypeMismatch)
	case err == nil:
		return p, nil
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("create mount point: %w", err)
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return "", fmt.Errorf("create mount point: %w", err)
		}
		return p, f.Close()
	default:
		return "", err
	}
}

// dirEmpty reports whether dir has no entries.
func dirEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return len(names) == 0, err
}

// mountTmpfs mounts a new tmpfs with the mount's options.
func mountTmpfs(m wire.Mount) error {
	flags, data := parseMountOptions(m.Options)
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	target, err := mountPoint(m.Target)
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", flags, data); err != nil {
		return fmt.Errorf("mount tmpfs (%s): %w", m.Options, err)
	}
	return nil
}

// shareOptions are the 9p mount options of a host directory share:
// virtio transport, the Linux dialect (owners, modes, links, devices as
// the host has them), 256 KiB messages (Linux's virtio-9p transport takes
// up to about 500 KiB) and no caching, so host changes show at once.
const shareOptions = "trans=virtio,version=9p2000.L,msize=262144,cache=none"

// mountShare mounts a host directory shared over virtio-9p (a bind
// mount); read-only ones are refused writes by the guest (and the VMM).
func mountShare(m wire.Mount) error {
	target, err := mountPoint(m.Target)
	if err != nil {
		return err
	}
	var flags uintptr
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(m.Tag, target, "9p", flags, shareOptions); err != nil {
		return fmt.Errorf("mount host directory share %s: %w", m.Tag, err)
	}
	return nil
}

// mountFlags are the mount(8) flag options: name, flag, and whether the
// option sets (true) or clears (false) it.
var mountFlags = map[string]struct {
	flag uintptr
	set  bool
}{
	"ro": {unix.MS_RDONLY, true}, "rw": {unix.MS_RDONLY, false},
	"nosuid": {unix.MS_NOSUID, true}, "suid": {unix.MS_NOSUID, false},
	"nodev": {unix.MS_NODEV, true}, "dev": {unix.MS_NODEV, false},
	"noexec": {unix.MS_NOEXEC, true}, "exec": {unix.MS_NOEXEC, false},
	"sync": {unix.MS_SYNCHRONOUS, true}, "async": {unix.MS_SYNCHRONOUS, false},
	"dirsync": {unix.MS_DIRSYNC, true},
	"noatime": {unix.MS_NOATIME, true}, "atime": {unix.MS_NOATIME, false},
	"nodiratime": {unix.MS_NODIRATIME, true}, "diratime": {unix.MS_NODIRATIME, false},
	"relatime": {unix.MS_RELATIME, true}, "norelatime": {unix.MS_RELATIME, false},
	"strictatime": {unix.MS_STRICTATIME, true}, "nostrictatime": {unix.MS_STRICTATIME, false},
	"mand": {unix.MS_MANDLOCK, true}, "nomand": {unix.MS_MANDLOCK, false},
}

// ignoredOptions are accepted and have no effect in a VM of its own
// (mount propagation: the container has no peers to propagate to).
var ignoredOptions = map[string]bool{
	"private": true, "rprivate": true, "shared": true, "rshared": true,
	"slave": true, "rslave": true, "defaults": true,
}

// parseMountOptions turns comma-separated mount options into flags and a
// data string. Later options win: a flag and its opposite, or two values
// of one data key ("size=1m,size=2m"), keep the last.
func parseMountOptions(opts string) (uintptr, string) {
	var flags uintptr
	var keys []string
	data := map[string]string{}
	for _, o := range strings.Split(opts, ",") {
		o = strings.TrimSpace(o)
		if o == "" || ignoredOptions[o] {
			continue
		}
		if f, ok := mountFlags[o]; ok {
			if f.set {
				flags |= f.flag
			} else {
				flags &^= f.flag
			}
			continue
		}
		k, _, _ := strings.Cut(o, "=")
		if _, seen := data[k]; !seen {
			keys = append(keys, k)
		}
		data[k] = o
	}
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, data[k])
	}
	return flags, strings.Join(parts, ",")
}

// copyTree copies the contents of directory src into the empty directory
// dst without following symbolic links: regular files, directories,
// symlinks, hard links (kept linked), device nodes, FIFOs and sockets, with
// owners, modes (setuid bits included), extended attributes and times; dst
// itself takes src's owner, mode and times: a new volume starts as a
// copy of what the image has at its mount point (the port layer's
// copy-up), so that the container finds its files there.
func copyTree(src, dst string) error {
	links := map[[2]uint64]string{} // (dev, inode) of a multiply linked file -> its first copy
	var walk func(s, d string) error
	walk = func(s, d string) error {
		f, err := os.Open(s)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return err
		}
		sort.Strings(names)
		for _, name := range names {
			sp, dp := filepath.Join(s, name), filepath.Join(d, name)
			var st unix.Stat_t
			if err := unix.Lstat(sp, &st); err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
				key := [2]uint64{st.Dev, st.Ino}
				if first, ok := links[key]; ok {
					if err := os.Link(first, dp); err != nil {
						return err
					}
					continue
				}
				links[key] = dp
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				if err := os.Mkdir(dp, 0o700); err != nil {
					return err
				}
				if err := walk(sp, dp); err != nil {
					return err
				}
			case unix.S_IFREG:
				if err := copyFile(sp, dp); err != nil {
					return err
				}
			case unix.S_IFLNK:
				target, err := os.Readlink(sp)
				if err != nil {
					return err
				}
				if err := os.Symlink(target, dp); err != nil {
					return err
				}
			default: // devices, FIFOs, sockets
				if err := unix.Mknod(dp, st.Mode, int(st.Rdev)); err != nil {
					return err
				}
			}
			if err := copyMeta(sp, dp, &st); err != nil {
				return err
			}
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return err
	}
	if err := walk(src, dst); err != nil {
		return err
	}
	return copyMeta(src, dst, &st)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyMeta gives dst src's extended attributes, owner, mode and times.
// The mode is set after the owner, since chown clears setuid bits.
func copyMeta(src, dst string, st *unix.Stat_t) error {
	copyXattrs(src, dst)
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// copyXattrs copies what extended attributes it can (file capabilities,
// ACLs); a filesystem without them is not an error.
func copyXattrs(src, dst string) {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size <= 0 {
		return
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(src, buf)
	if err != nil {
		return
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil || n < 0 {
			continue
		}
		val := make([]byte, n)
		n, err = unix.Lgetxattr(src, name, val)
		if err != nil {
			continue
		}
		_ = unix.Lsetxattr(dst, name, val[:n], 0)
	}
}

// readOnlyRoot makes the container's root mount read-only (the mount, not
// the filesystem: mounts beneath it keep their modes) and the identity
// files bound over /etc read-only too, so that a read-only root leaves
// the container nothing of the image's tree to write.
func readOnlyRoot(identity []string) error {
	for _, dst := range identity {
		p, err := inRoot(dst)
		if err != nil {
			return err
		}
		if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("tether: make %s read-only: %w", dst, err)
		}
	}
	if err := unix.Mount("", RootMount, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("tether: make the root read-only: %w", err)
	}
	return nil
}
