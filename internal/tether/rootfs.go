package tether

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

const portName = wire.PortName

// defaultShmBytes is the /dev/shm size when none is set: 64 MiB, the
// size most programs expect of a container's /dev/shm (enough for
// ordinary POSIX shared memory, small against the guest's RAM).
const defaultShmBytes = 64 << 20

// inRoot resolves a container path inside RootMount, following symlinks as
// the container would see them (absolute links stay inside the root).
func inRoot(path string) (string, error) { return inDir(RootMount, path) }

// inDir resolves path inside root as inRoot does inside RootMount.
func inDir(root, path string) (string, error) {
	p, err := securejoin.SecureJoin(root, path)
	if err != nil {
		return "", fmt.Errorf("tether: resolve %s: %w", path, err)
	}
	return p, nil
}

// mountRoot mounts the container's root disk and the kernel filesystems a
// container expects beneath it: /proc, /sys, a minimal /dev (the OCI
// runtime spec's default devices and /dev symlinks), /dev/pts and
// /dev/shm.
func mountRoot(disk string) error { return mountRootAt(disk, RootMount) }

// rootSubmounts are the mount points mountRootAt makes beneath the root,
// in mount order.
var rootSubmounts = []string{"/proc", "/sys", "/dev", "/dev/pts"}

// mountRootAt is mountRoot with the root at root instead of RootMount
// (a warm guest's rehearsal, rehearseRoot).
func mountRootAt(disk, root string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("tether: mkdir root: %w", err)
	}
	// noinit_itable: the disk is built with lazy inode tables; zeroing them
	// would write ~32 MiB into every container's copy-on-write disk.
	if err := unix.Mount(disk, root, "ext4", 0, "noinit_itable"); err != nil {
		return fmt.Errorf("tether: mount root disk %s: %w", disk, err)
	}
	mounts := []struct {
		src, dst, typ string
		flags         uintptr
		data          string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY, ""},
		{"tmpfs", "/dev", "tmpfs", unix.MS_NOSUID, "mode=755,size=65536k"},
	}
	for _, m := range mounts {
		if err := mountUnder(root, m.src, m.dst, m.typ, m.flags, m.data); err != nil {
			return err
		}
	}
	devs := []struct {
		name         string
		major, minor uint32
	}{
		{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8},
		{"urandom", 1, 9}, {"tty", 5, 0},
	}
	for _, d := range devs {
		p := filepath.Join(root, "dev", d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("tether: mknod %s: %w", p, err)
		}
		_ = unix.Chmod(p, 0o666)
	}
	links := map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
	for name, target := range links {
		_ = os.Symlink(target, filepath.Join(root, "dev", name))
	}
	if err := mountUnder(root, "devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return err
	}
	return nil
}

// mountShm mounts /dev/shm sized bytes (0: defaultShmBytes, 64 MiB).
func mountShm(bytes int64) error {
	if bytes <= 0 {
		bytes = defaultShmBytes
	}
	return mountIn("shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", bytes))
}

// mountIn mounts inside the container root, creating the mount point.
func mountIn(src, dst, typ string, flags uintptr, data string) error {
	return mountUnder(RootMount, src, dst, typ, flags, data)
}

// mountUnder mounts at dst inside root, creating the mount point.
func mountUnder(root, src, dst, typ string, flags uintptr, data string) error {
	p, err := inDir(root, dst)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return fmt.Errorf("tether: mkdir %s: %w", dst, err)
	}
	if err := unix.Mount(src, p, typ, flags, data); err != nil {
		return fmt.Errorf("tether: mount %s on %s: %w", typ, dst, err)
	}
	return nil
}

// identityDir holds the files tether bind-mounts over the container's
// /etc/hostname, /etc/hosts and /etc/resolv.conf, so they never land on
// the container's disk (and never show in a diff or a commit).
const identityDir = "/run/vch"

// applySetup applies the container-wide setup: clock, hostname, the
// mounts (volumes, tmpfs), identity files, /dev/shm and a read-only root.
func applySetup(ctx context.Context, s wire.Setup) error {
	if s.TimeUnixNano > 0 {
		tv := unix.NsecToTimeval(s.TimeUnixNano)
		if err := unix.Settimeofday(&tv); err != nil {
			return fmt.Errorf("tether: set clock: %w", err)
		}
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("tether: set hostname: %w", err)
		}
	}
	if s.Domainname != "" {
		if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
			return fmt.Errorf("tether: set domainname: %w", err)
		}
	}
	if err := os.MkdirAll(identityDir, 0o755); err != nil {
		return fmt.Errorf("tether: mkdir %s: %w", identityDir, err)
	}
	if err := mountAll(ctx, s.Mounts); err != nil {
		return err
	}
	files := []struct{ name, content string }{
		{"hostname", s.Hostname + "\n"},
		{"hosts", s.Hosts},
		{"resolv.conf", s.ResolvConf},
	}
	var bound []string
	for _, f := range files {
		if f.content == "" || f.content == "\n" {
			continue
		}
		if slices.ContainsFunc(s.Mounts, func(m wire.Mount) bool { return filepath.Clean(m.Target) == "/etc/"+f.name }) {
			continue // the user's mount there wins, as with dockerd
		}
		if err := bindFile(filepath.Join(identityDir, f.name), "/etc/"+f.name, f.content); err != nil {
			return err
		}
		bound = append(bound, "/etc/"+f.name)
	}
	if err := mountShm(s.ShmSizeBytes); err != nil {
		return err
	}
	if s.ReadOnlyRoot {
		return readOnlyRoot(bound)
	}
	return nil
}

// applySysctls writes each parameter to /proc/sys (the guest's own
// kernel), in key order, once the NICs have their names (a parameter may
// name one: net.ipv4.conf.eth0.…). A key must be dot-separated names of letters,
// digits, '_' and '-' (nothing that could climb out of /proc/sys).
func applySysctls(sysctls map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(sysctls)) {
		if !sysctlKey.MatchString(k) {
			return fmt.Errorf("tether: sysctl %q: not a kernel parameter name", k)
		}
		p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if err := os.WriteFile(p, []byte(sysctls[k]), 0); err != nil {
			return fmt.Errorf("tether: sysctl %s=%s: %w", k, sysctls[k], err)
		}
	}
	return nil
}

// sysctlKey is a kernel parameter's name ("net.ipv4.ip_forward").
var sysctlKey = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// bindFile writes content to src and bind-mounts it over dst inside the
// container, creating an empty dst file first if the image has none.
func bindFile(src, dst, content string) error {
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		return fmt.Errorf("tether: write %s: %w", src, err)
	}
	p, err := inRoot(dst)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("tether: mkdir for %s: %w", dst, err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return fmt.Errorf("tether: create %s: %w", dst, err)
		}
	}
	if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("tether: bind %s: %w", dst, err)
	}
	return nil
}
