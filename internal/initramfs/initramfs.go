// Package initramfs assembles the guest's initramfs: a newc cpio archive
// (Linux Documentation/filesystems/ramfs-rootfs-initramfs.rst) holding
// tether as /init, the kernel modules tether loads at boot and the
// directories and device node the kernel needs before /init runs.
//
// It owns the archive's layout, not the kernel: the modules come from a
// Debian guest kernel package unpacked by the build (see [KernelTree]).
package initramfs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// BootModules are the modules tether loads, in dependency order, for the
// devices every container VM has: virtio-mmio transport, block and console
// (virtio-serial) and network (virtio-net). Verified against Debian's cloud-amd64 6.1 kernel, where
// ext4 is built in and these are modules.
var BootModules = []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console", "failover", "net_failover", "virtio_net"}

// KernelTree is a Debian linux-image package unpacked with `dpkg-deb -x`.
type KernelTree struct {
	// Dir is the unpack root (holding boot/ and lib/modules/).
	Dir string
}

// Version returns the kernel release (the single lib/modules/ entry), e.g.
// "6.1.0-57-cloud-amd64". NotFound-style os errors if the tree is missing.
func (k KernelTree) Version() (string, error) {
	entries, err := os.ReadDir(filepath.Join(k.Dir, "lib", "modules"))
	if err != nil {
		return "", fmt.Errorf("initramfs: kernel tree %s: %w", k.Dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			return e.Name(), nil
		}
	}
	return "", fmt.Errorf("initramfs: kernel tree %s: no lib/modules/<version>: %w", k.Dir, os.ErrNotExist)
}

// Kernel returns the path of the bzImage (boot/vmlinuz-<version>).
func (k KernelTree) Kernel() (string, error) {
	v, err := k.Version()
	if err != nil {
		return "", err
	}
	p := filepath.Join(k.Dir, "boot", "vmlinuz-"+v)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("initramfs: kernel image: %w", err)
	}
	return p, nil
}

// Module returns the path of module name (dashes and underscores are the
// same, as modprobe treats them). os.ErrNotExist if the tree lacks it.
func (k KernelTree) Module(name string) (string, error) {
	v, err := k.Version()
	if err != nil {
		return "", err
	}
	want := strings.ReplaceAll(name, "-", "_") + ".ko"
	var found string
	root := filepath.Join(k.Dir, "lib", "modules", v, "kernel")
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return err
		}
		if !d.IsDir() && strings.ReplaceAll(d.Name(), "-", "_") == want {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("initramfs: find module %s: %w", name, err)
	}
	if found == "" {
		return "", fmt.Errorf("initramfs: module %s not in %s: %w", name, root, os.ErrNotExist)
	}
	return found, nil
}

// Write writes the initramfs to w: /init is the file at tetherPath, each
// module in modules goes to /lib/modules/<name>.ko, and /lib/modules/order
// lists them in the given order. Modules must be uncompressed .ko files.
func Write(w io.Writer, tetherPath string, kernel KernelTree, modules []string) error {
	cw := cpio.NewWriter(w)
	dirs := []string{"dev", "proc", "sys", "run", "tmp", "ctr", "lib", "lib/modules"}
	sort.Strings(dirs)
	for _, d := range dirs {
		if err := cw.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755}); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", d, err)
		}
	}
	// No /dev/console node: the cpio writer cannot record device numbers,
	// so tether mounts devtmpfs and reopens its stdio on /dev/console.
	if err := addFile(cw, "init", tetherPath, 0o755); err != nil {
		return err
	}
	var order []string
	for _, m := range modules {
		p, err := kernel.Module(m)
		if err != nil {
			return err
		}
		name := m + ".ko"
		if err := addFile(cw, "lib/modules/"+name, p, 0o644); err != nil {
			return err
		}
		order = append(order, name)
	}
	data := []byte(strings.Join(order, "\n") + "\n")
	if err := cw.WriteHeader(&cpio.Header{Name: "lib/modules/order", Mode: cpio.TypeReg | 0o644, Size: int64(len(data))}); err != nil {
		return fmt.Errorf("initramfs: write order: %w", err)
	}
	if _, err := cw.Write(data); err != nil {
		return fmt.Errorf("initramfs: write order: %w", err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("initramfs: close: %w", err)
	}
	return nil
}

func addFile(cw *cpio.Writer, name, src string, mode cpio.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | mode, Size: st.Size()}); err != nil {
		return fmt.Errorf("initramfs: write %s: %w", name, err)
	}
	if _, err := io.Copy(cw, f); err != nil {
		return fmt.Errorf("initramfs: write %s: %w", name, err)
	}
	return nil
}

// WriteFile writes the initramfs atomically to path (temp file + rename).
func WriteFile(path, tetherPath string, kernel KernelTree, modules []string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".initrd-*")
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, tetherPath, kernel, modules); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}
