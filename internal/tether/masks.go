package tether

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// maskPaths applies the OCI runtime-spec's linux.maskedPaths and
// linux.readonlyPaths inside the container root, as runc does: a masked
// directory gets an empty read-only tmpfs over it and a masked file
// /dev/null bound over it; a read-only path is bound onto itself and
// remounted read-only, keeping its nosuid, nodev and noexec. A path
// missing in the guest is skipped. Called by the main process's spawn
// helper after it mounted the container's /proc.
func maskPaths(masked, readonly []string) error {
	for _, p := range readonly {
		host, err := inRoot(p)
		if err != nil {
			return err
		}
		if _, err := os.Lstat(host); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := unix.Mount(host, host, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("tether: read-only path %s: %w", p, err)
		}
		var st unix.Statfs_t
		flags := uintptr(0)
		if unix.Statfs(host, &st) == nil {
			for _, f := range []struct{ st, ms int64 }{{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC}} {
				if st.Flags&f.st != 0 {
					flags |= uintptr(f.ms)
				}
			}
		}
		if err := unix.Mount(host, host, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC|flags, ""); err != nil {
			return fmt.Errorf("tether: read-only path %s: %w", p, err)
		}
	}
	for _, p := range masked {
		host, err := inRoot(p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(host)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("tether: masked path %s: %w", p, err)
		}
		if fi.IsDir() {
			err = unix.Mount("tmpfs", host, "tmpfs", unix.MS_RDONLY, "")
		} else {
			err = unix.Mount("/dev/null", host, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("tether: masked path %s: %w", p, err)
		}
	}
	return nil
}
