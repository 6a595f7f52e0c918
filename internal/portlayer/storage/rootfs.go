package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vchproject/vch/internal/archive"
	"github.com/vchproject/vch/internal/portlayer"
)

// Rootfs disk sizing: the disk is the container's whole root filesystem, so
// it leaves room to write. Sparse, so unused space costs nothing on the host.
const (
	// minRootfsBytes is the smallest disk: 2 GiB, so that a small image's
	// container still has room to write (installs, caches, logs).
	minRootfsBytes = 2 << 30
	// rootfsSlackBytes is added to twice the content: 256 MiB for ext4
	// metadata and journal plus writes.
	rootfsSlackBytes = 256 << 20
	// rootfsAlignBytes rounds the size up to whole MiB.
	rootfsAlignBytes = 1 << 20
)

// rootfsBuild is one in-flight disk build that concurrent callers share.
type rootfsBuild struct {
	done chan struct{}
	err  error
}

// Rootfs returns the host path of a raw ext4 disk image holding the image's
// flattened root filesystem (layers applied base first with the OCI
// image-spec whiteout rules). imageID is the full ID, "sha256:" plus 64 hex
// (the bare 64 hex is accepted too).
//
// The disk is built on first use and cached as Root/rootfs/<hex>.ext4; it
// is a sparse file of max(2 GiB, 2×content+256 MiB) bytes, rounded up to a
// MiB, made with mkfs.ext4 -d (e2fsprogs ≥ 1.43) with a root-owned root
// directory. Callers must treat it as read-only (compute layers a
// copy-on-write disk over it); it is deleted with the image. Safe for
// concurrent use: concurrent callers share one build, and a crash never
// leaves a partial disk under the final name.
//
// Errors: InvalidArgument for a malformed ID; NotFound if no such image;
// Unavailable if mkfs.ext4 is missing; ResourceExhausted if the store's
// filesystem fills up (the work files are removed); the context's error if
// ctx ends.
func (s *Store) Rootfs(ctx context.Context, imageID string) (string, error) {
	hex := strings.TrimPrefix(imageID, "sha256:")
	if !fullHex.MatchString(hex) {
		return "", portlayer.Errorf(portlayer.ClassInvalidArgument, "image ID %q is not sha256 plus 64 hex", imageID).WithOp("rootfs")
	}
	id := "sha256:" + hex
	final := s.path("rootfs", hex+".ext4")
	for {
		s.mu.Lock()
		if err := s.checkOpen(); err != nil {
			s.mu.Unlock()
			return "", err
		}
		c := s.images[id]
		if c == nil {
			s.mu.Unlock()
			return "", noSuchImage(id)
		}
		if _, err := os.Stat(final); err == nil {
			s.mu.Unlock()
			return final, nil
		}
		b := s.builds[id]
		if b == nil {
			b = &rootfsBuild{done: make(chan struct{})}
			s.builds[id] = b
			s.mu.Unlock()
			b.err = noSpace(s.buildRootfs(ctx, c, final))
			s.mu.Lock()
			delete(s.builds, id)
			close(b.done)
			s.mu.Unlock()
			if b.err != nil {
				return "", b.err
			}
			return final, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", ctxErr(ctx)
		case <-b.done:
		}
		if b.err == nil {
			return final, nil
		}
		if errors.Is(b.err, context.Canceled) || errors.Is(b.err, context.DeadlineExceeded) {
			continue // the builder's caller gave up; build again for us
		}
		return "", b.err
	}
}

// buildRootfs unpacks the flattened image under Root/tmp, makes the ext4
// file there and renames it to final if the image still exists.
func (s *Store) buildRootfs(ctx context.Context, c *cached, final string) error {
	mkfs, err := findMkfs()
	if err != nil {
		return err
	}
	img, err := s.v1Image(c)
	if err != nil {
		return fmt.Errorf("storage: rootfs %s: %w", c.rec.ID, err)
	}
	work, err := os.MkdirTemp(s.path("tmp"), "rootfs-")
	if err != nil {
		return fmt.Errorf("storage: rootfs work dir: %w", err)
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "root")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return fmt.Errorf("storage: rootfs work dir: %w", err)
	}
	if err := flatten(ctx, img, tree); err != nil {
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		return fmt.Errorf("storage: rootfs %s: %w", c.rec.ID, err)
	}
	content, err := treeBytes(tree)
	if err != nil {
		return fmt.Errorf("storage: rootfs %s: %w", c.rec.ID, err)
	}
	size := rootfsSize(content)
	disk := filepath.Join(work, "disk.ext4")
	// The file stays about the content size on the host (zeroing the
	// journal and inode tables would cost ~100 MiB per image). A guest
	// should mount with noinit_itable so the kernel does not zero the
	// tables in the background through the container's copy-on-write disk.
	if out, err := mkfsCommand(ctx, mkfs, disk, size, tree).CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "No space left on device") {
			err = syscall.ENOSPC // mkfs.ext4 exits 1 for everything
		}
		return fmt.Errorf("storage: rootfs %s: mkfs.ext4: %s: %w", c.rec.ID, msg, err)
	}
	if err := removeLostFound(ctx, disk, tree); err != nil {
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		return fmt.Errorf("storage: rootfs %s: %w", c.rec.ID, err)
	}
	if err := os.Chmod(disk, 0o444); err != nil {
		return fmt.Errorf("storage: rootfs %s: %w", c.rec.ID, err)
	}
	if f, err := os.Open(disk); err == nil {
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("storage: rootfs %s: sync: %w", c.rec.ID, err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.images[c.rec.ID] == nil {
		return noSuchImage(c.rec.ID) // removed while we built
	}
	if err := os.Rename(disk, final); err != nil {
		return fmt.Errorf("storage: rootfs %s: %w", c.rec.ID, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return fmt.Errorf("storage: rootfs %s: %w", c.rec.ID, err)
	}
	s.log.Info("rootfs disk built", "image", c.rec.ID, "content_bytes", content, "disk_bytes", size)
	return nil
}

// flatten applies img's layers to the directory tree, base layer first,
// each with archive.Unpack and its OCI whiteout rules (OCI image-spec
// layer.md, "Applying Changesets"). (go-containerregistry's
// mutate.Extract is not used: it drops relative symlinks that climb
// above the root, keeps the first of two entries for one path in a layer,
// drops a layer's files beneath a symlink it also holds, cannot re-encode
// GNU sparse files, and ends its stream with a well-formed tar end before
// it reports an error, so a failure looked like a short image.)
func flatten(ctx context.Context, img v1.Image, tree string) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("layers: %w", err)
	}
	for i, l := range layers {
		if err := applyLayer(ctx, l, tree); err != nil {
			d, _ := l.Digest()
			return fmt.Errorf("layer %d (%s): %w", i, d, err)
		}
	}
	return nil
}

func applyLayer(ctx context.Context, l v1.Layer, tree string) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := archive.Unpack(ctx, rc, tree); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	return nil
}

// rootfsSize is the disk size in bytes for content bytes of files.
func rootfsSize(content int64) int64 {
	size := max(int64(minRootfsBytes), 2*content+rootfsSlackBytes)
	return (size + rootfsAlignBytes - 1) / rootfsAlignBytes * rootfsAlignBytes
}

// treeBytes sums the sizes of the tree's files (each inode once) plus a
// block per directory entry, an estimate of what ext4 needs.
func treeBytes(dir string) (int64, error) {
	seen := map[uint64]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		if fi.Mode().IsRegular() {
			total += (fi.Size() + 4095) / 4096 * 4096
		} else {
			total += 4096
		}
		return nil
	})
	return total, err
}

// blankRootfsBytes is the size of BlankRootfs's disk: small, but with
// a journal, as a root disk has.
const blankRootfsBytes = 16 << 20

// BlankRootfs implements portlayer.BlankRootfsStore: Root/blank.ext4, an
// empty sparse ext4 disk of 16 MiB made with mkfs.ext4 as Rootfs's disks
// are (lazy inode tables and journal), on first use. Read-only (0444).
// Unavailable if mkfs.ext4 is missing; the context's error if ctx ends.
func (s *Store) BlankRootfs(ctx context.Context) (string, error) {
	s.blankMu.Lock()
	defer s.blankMu.Unlock()
	final := s.path("blank.ext4")
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	mkfs, err := findMkfs()
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(s.path("tmp"), "blank-*.ext4")
	if err != nil {
		return "", fmt.Errorf("storage: blank rootfs: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if out, err := mkfsCommand(ctx, mkfs, tmp.Name(), blankRootfsBytes, "").CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return "", ctxErr(ctx)
		}
		return "", fmt.Errorf("storage: blank rootfs: mkfs.ext4: %s: %w", strings.TrimSpace(string(out)), err)
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return "", fmt.Errorf("storage: blank rootfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("storage: blank rootfs: %w", err)
	}
	return final, nil
}

// mkfsCommand is the mkfs.ext4 run that makes a root disk of size bytes
// at disk, holding tree's contents ("": empty). -d copies the tree
// (owners, modes, links, devices); root_owner makes "/" root's; -m 0
// reserves no blocks (the guest's user is usually root). Lazy journal and
// inode-table init leave those regions as holes, so the file stays sparse.
func mkfsCommand(ctx context.Context, mkfs, disk string, size int64, tree string) *exec.Cmd {
	args := []string{"-q", "-F", "-t", "ext4"}
	if tree != "" {
		args = append(args, "-d", tree)
	}
	args = append(args, "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
		"-m", "0", "-L", "rootfs", disk, strconv.FormatInt(size/1024, 10)+"k")
	cmd := exec.CommandContext(ctx, mkfs, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL=C"}
	return cmd
}

// findMkfs locates mkfs.ext4 in PATH or the sbin directories, which a
// daemon's PATH may lack.
func findMkfs() (string, error) { return findE2fsTool("mkfs.ext4") }

// findE2fsTool locates an e2fsprogs tool in PATH or the sbin
// directories, which a daemon's PATH may lack; Unavailable if absent.
func findE2fsTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p, nil
		}
	}
	return "", portlayer.Errorf(portlayer.ClassUnavailable, "%s not found (install the Debian package e2fsprogs)", name)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// removeLostFound deletes the lost+found directory mkfs.ext4 made at the
// root of disk, unless the image itself has one (tree holds the image's
// files): a container's root then lists what its image has, as under
// dockerd (and an image mount of it too). Nothing needs the directory:
// e2fsck makes one when it has orphans to reconnect. Without debugfs
// the directory stays.
func removeLostFound(ctx context.Context, disk, tree string) error {
	if _, err := os.Lstat(filepath.Join(tree, "lost+found")); err == nil {
		return nil
	}
	debugfs, err := findE2fsTool("debugfs")
	if err != nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, debugfs, "-w", "-R", "rmdir lost+found", disk)
	cmd.Env = []string{"PATH=/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("debugfs: %s: %w", strings.TrimSpace(string(out)), err)
	}
	return nil
}

// removeStaleRootfs deletes disks whose image is gone (a crash between
// removing the record and the disk).
func (s *Store) removeStaleRootfs() {
	entries, err := os.ReadDir(s.path("rootfs"))
	if err != nil {
		return
	}
	for _, e := range entries {
		hex, ok := strings.CutSuffix(e.Name(), ".ext4")
		if ok && s.images["sha256:"+hex] != nil {
			continue
		}
		if err := os.Remove(s.path("rootfs", e.Name())); err == nil {
			s.log.Warn("removed stale rootfs disk", "file", e.Name())
		}
	}
}

var _ portlayer.ImageTrees = (*Store)(nil)

// Tree implements portlayer.ImageTrees: the image is flattened as for its
// rootfs disk, into a directory under Root/tmp. Errors as Rootfs's.
func (s *Store) Tree(ctx context.Context, imageID string) (string, func(), error) {
	s.mu.Lock()
	if err := s.checkOpen(); err != nil {
		s.mu.Unlock()
		return "", nil, err
	}
	c, _, err := s.resolveLocked(imageID)
	s.mu.Unlock()
	if err != nil {
		return "", nil, err
	}
	img, err := s.v1Image(c)
	if err != nil {
		return "", nil, fmt.Errorf("storage: tree %s: %w", c.rec.ID, err)
	}
	work, err := os.MkdirTemp(s.path("tmp"), "tree-")
	if err != nil {
		return "", nil, fmt.Errorf("storage: tree work dir: %w", noSpace(err))
	}
	release := func() { _ = os.RemoveAll(work) }
	if err := flatten(ctx, img, work); err != nil {
		release()
		if ctx.Err() != nil {
			return "", nil, ctxErr(ctx)
		}
		return "", nil, fmt.Errorf("storage: tree %s: %w", c.rec.ID, noSpace(err))
	}
	return work, release, nil
}
