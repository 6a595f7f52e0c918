// Package initramfs assembles the guest's initramfs: a newc cpio archive
// (Linux Documentation/filesystems/ramfs-rootfs-initramfs.rst) holding
// tether as /init, the kernel modules tether loads at boot and the
// directories and device node the kernel needs before /init runs.
//
// It owns the archive's layout, not the kernel: the modules come from a
// Debian guest kernel package unpacked by the build (see [KernelTree]).
package initramfs

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// BootModules are the modules tether loads, in dependency order, for the
// devices every container VM has: virtio-mmio transport, block, console
// (virtio-serial), the memory balloon (free page reporting) and network
// (virtio-net). Verified against Debian's cloud-amd64 6.1 kernel, where
// ext4 is built in and these are modules.
var BootModules = []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console", "virtio_balloon", "failover", "net_failover", "virtio_net"}

// FilesystemModules are what the root and volume disks need besides
// BootModules: ext4 and the crc32c its checksums ask for. Built into the
// cloud kernel, modules of the generic one; [KernelTree.LoadOrder] drops
// built-in ones.
var FilesystemModules = []string{"crc32c_generic", "ext4"}

// VSphereModules are what a vSphere VM's devices need besides
// BootModules: its paravirtual SCSI controller and disks (vmw_pvscsi,
// sd_mod) and its vmxnet3 NICs; [KernelTree.LoadOrder] adds their
// dependencies (scsi_mod, scsi_common). Modules of Debian's cloud and
// generic 6.1 kernels both. Only a vSphere VCH's initramfs has them.
var VSphereModules = []string{"vmw_pvscsi", "sd_mod", "vmxnet3"}

// ShareModules are what host directory shares (virtio-9p) need; only
// Debian's generic kernel has them.
var ShareModules = []string{"9pnet_virtio", "9p"}

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

// Kernel returns the path of the kernel image to boot: the uncompressed
// ELF boot/vmlinux-<version> when the tree has one (scripts/guest-kernel.sh
// extracts it from XZ-compressed bzImages, which take seconds to unpack
// under TCG; QEMU boots it through its PVH entry), else the bzImage
// boot/vmlinuz-<version>.
func (k KernelTree) Kernel() (string, error) {
	v, err := k.Version()
	if err != nil {
		return "", err
	}
	if p := filepath.Join(k.Dir, "boot", "vmlinux-"+v); fileExists(p) {
		return p, nil
	}
	p := filepath.Join(k.Dir, "boot", "vmlinuz-"+v)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("initramfs: kernel image: %w", err)
	}
	return p, nil
}

// BzImage returns the path of the tree's compressed kernel,
// boot/vmlinuz-<version>: what a boot loader (ISOLINUX on a vSphere VM's
// boot ISO) loads through the Linux x86 boot protocol, which the ELF
// vmlinux Kernel prefers is not. os errors if it is missing.
func (k KernelTree) BzImage() (string, error) {
	v, err := k.Version()
	if err != nil {
		return "", err
	}
	p := filepath.Join(k.Dir, "boot", "vmlinuz-"+v)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("initramfs: kernel bzImage: %w", err)
	}
	return p, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
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

// canonical is a module's name as modprobe compares them: dashes are
// underscores, without the ".ko" suffix.
func canonical(name string) string {
	return strings.TrimSuffix(strings.ReplaceAll(name, "-", "_"), ".ko")
}

// Builtin returns the modules compiled into the kernel
// (lib/modules/<version>/modules.builtin), by canonical name.
func (k KernelTree) Builtin() (map[string]bool, error) {
	v, err := k.Version()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(k.Dir, "lib", "modules", v, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("initramfs: built-in modules: %w", err)
	}
	out := map[string]bool{}
	for _, line := range strings.Fields(string(b)) {
		out[canonical(path.Base(line))] = true
	}
	return out, nil
}

// Depends returns the modules module name depends on, from the "depends="
// entry of its .modinfo ELF section (Debian's packages ship no
// modules.dep).
func (k KernelTree) Depends(name string) ([]string, error) {
	p, err := k.Module(name)
	if err != nil {
		return nil, err
	}
	f, err := elf.Open(p)
	if err != nil {
		return nil, fmt.Errorf("initramfs: module %s: %w", name, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("initramfs: module %s has no .modinfo section", name)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("initramfs: module %s: %w", name, err)
	}
	for _, kv := range strings.Split(string(data), "\x00") {
		if v, ok := strings.CutPrefix(kv, "depends="); ok {
			var deps []string
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					deps = append(deps, d)
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// LoadOrder returns what to load for names: every module not built into
// the kernel, each after its dependencies, each once, in names' order
// otherwise. An error if a name is neither built in nor in the tree.
func (k KernelTree) LoadOrder(names []string) ([]string, error) {
	builtin, err := k.Builtin()
	if err != nil {
		return nil, err
	}
	return loadOrder(names, builtin, k.Depends)
}

func loadOrder(names []string, builtin map[string]bool, depends func(string) ([]string, error)) ([]string, error) {
	var out []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from []string) error
	visit = func(name string, from []string) error {
		name = canonical(name)
		switch {
		case builtin[name] || state[name] == 2:
			return nil
		case state[name] == 1:
			return fmt.Errorf("initramfs: module dependency cycle: %s", strings.Join(append(from, name), " -> "))
		}
		state[name] = 1
		deps, err := depends(name)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(from, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, name)
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}
