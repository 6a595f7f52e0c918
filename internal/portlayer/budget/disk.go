package budget

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/bytesize"
	"github.com/vchproject/vch/internal/portlayer"
)

// Disk is a VCH's storage quota (`vch create --storage-quota`): the host
// disk space its images (blobs and rootfs disks), containers (overlay
// disks, logs) and volumes (allocated blocks of their sparse disks) may
// take together.
//
// Usage is measured, not tracked: the sum of st_blocks × 512 of every
// regular file under Dirs (hard links counted once), which is what the
// files really hold on the host (a sparse 8 GiB volume with 5 MiB written
// counts 5 MiB; du, not ls -l). Reserve is called before each operation
// that adds data — image pull, load, import, commit, volume create — and
// refuses when current usage plus the operation's declared size (a pull's
// compressed layers, a volume's initial metadata; 0 when not known in
// advance, as for load, import and commit) would pass Limit. It is a check
// at admission, not a hard cap: data written later (a container filling
// its overlay or a volume, an import larger than nothing) is counted at
// the next check, and a running container is never stopped for it.
type Disk struct {
	// Limit is the quota in bytes; 0 means none (Reserve always allows).
	Limit int64
	// Dirs are the directories whose files count (the VCH root and each
	// volume store outside it); nested or repeated ones count once.
	Dirs []string
	// Skip are directories under Dirs whose files do not count: the VCH's
	// own caches (VM templates), which it makes again at every start.
	Skip []string

	mu sync.Mutex // one Reserve at a time, so two admissions don't both pass
}

// Usage returns the bytes the files under Dirs hold on the host.
func (d *Disk) Usage() (int64, error) {
	seen := map[[2]uint64]bool{}
	var total int64
	for _, dir := range d.Dirs {
		err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed while walking
				}
				return err
			}
			if e.IsDir() && slices.Contains(d.Skip, path) {
				return filepath.SkipDir
			}
			if !e.Type().IsRegular() {
				return nil
			}
			var st unix.Stat_t
			if err := unix.Lstat(path, &st); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil
				}
				return err
			}
			key := [2]uint64{st.Dev, st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
			total += st.Blocks * 512
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("budget: storage usage: %w", err)
		}
	}
	return total, nil
}

// Reserve returns nil if size more bytes fit in the quota now, else
// ResourceExhausted: "storage quota of 10 GiB exceeded: 9.8 GiB used,
// this needs 512 MiB more (what)". what names the operation.
func (d *Disk) Reserve(what string, size int64) error {
	if d == nil || d.Limit <= 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	used, err := d.Usage()
	if err != nil {
		return err
	}
	if used+size > d.Limit || (size == 0 && used >= d.Limit) {
		return portlayer.Errorf(portlayer.ClassResourceExhausted, "storage quota of %s exceeded: %s used, %s needs %s more (vch configure --storage-quota, or remove images, containers or volumes)", bytesize.Format(d.Limit), bytesize.Format(used), what, bytesize.Format(size))
	}
	return nil
}
