package initramfs_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/vchproject/vch/internal/initramfs"
)

const version = "6.1.0-test"

// modules are the fake tree's module files (relative to
// lib/modules/<version>/kernel), one of them with dashes in its name.
var modules = []string{
	"drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_ring.ko",
	"drivers/virtio/virtio_mmio.ko",
	"drivers/block/virtio_blk.ko",
	"drivers/char/virtio_console.ko",
	"arch/x86/crypto/crc32c-intel.ko",
	"fs/9p/9p.ko.xz", // compressed: not usable
}

// fakeTree makes an unpacked kernel package in a temp dir. Every module's
// content is its own path, so misplaced files are visible.
func fakeTree(t *testing.T) initramfs.KernelTree {
	t.Helper()
	dir := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("boot/vmlinuz-"+version, "bzImage")
	write("boot/config-"+version, "CONFIG_EXT4_FS=y")
	for _, m := range modules {
		write(modPath(m), "module "+m)
	}
	return initramfs.KernelTree{Dir: dir}
}

func modPath(m string) string { return path.Join("lib/modules", version, "kernel", m) }

// tether writes a fake tether binary and returns its path and bytes.
func tether(t *testing.T) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tether")
	data := append([]byte("\x7fELF fake tether "), bytes.Repeat([]byte{0, 1, 2, 3}, 1000)...)
	if err := os.WriteFile(p, data, 0o600); err != nil { // mode in the archive must not depend on the source
		t.Fatal(err)
	}
	return p, data
}

// entry is one archive member.
type entry struct {
	mode cpio.FileMode
	data []byte
}

// readArchive parses a newc archive into its members, in order.
func readArchive(t *testing.T, b []byte) (names []string, entries map[string]entry) {
	t.Helper()
	entries = map[string]entry{}
	r := cpio.NewReader(bytes.NewReader(b))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", h.Name, err)
		}
		if _, dup := entries[h.Name]; dup {
			t.Errorf("archive has %s twice", h.Name)
		}
		names = append(names, h.Name)
		entries[h.Name] = entry{mode: h.Mode, data: data}
	}
	return names, entries
}

func TestWrite(t *testing.T) {
	kt := fakeTree(t)
	tetherPath, tetherData := tether(t)
	want := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console", "crc32c_intel"}
	var buf bytes.Buffer
	if err := initramfs.Write(&buf, tetherPath, kt, want); err != nil {
		t.Fatal(err)
	}
	names, entries := readArchive(t, buf.Bytes())

	init, ok := entries["init"]
	switch {
	case !ok:
		t.Fatalf("no init in archive: %q", names)
	case !init.mode.IsRegular() || init.mode.Perm() != 0o755:
		t.Errorf("init mode %v, want a regular file with 0755", init.mode)
	case !bytes.Equal(init.data, tetherData):
		t.Errorf("init has %d bytes, not tether's %d", len(init.data), len(tetherData))
	}

	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "ctr", "lib", "lib/modules"} {
		if e, ok := entries[d]; !ok || !e.mode.IsDir() || e.mode.Perm() != 0o755 {
			t.Errorf("directory %s: present %v mode %v, want a 0755 directory", d, ok, e.mode)
		}
	}

	file := map[string]string{
		"virtio_ring": "drivers/virtio/virtio_ring.ko", "virtio": "drivers/virtio/virtio.ko",
		"virtio_mmio": "drivers/virtio/virtio_mmio.ko", "virtio_blk": "drivers/block/virtio_blk.ko",
		"virtio_console": "drivers/char/virtio_console.ko", "crc32c_intel": "arch/x86/crypto/crc32c-intel.ko",
	}
	var order []string
	for _, m := range want {
		name := "lib/modules/" + m + ".ko"
		e, ok := entries[name]
		if !ok {
			t.Errorf("module %s missing from the archive", name)
			continue
		}
		if got := string(e.data); got != "module "+file[m] {
			t.Errorf("%s holds %q, want the tree's %s", name, got, file[m])
		}
		if !e.mode.IsRegular() || e.mode.Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644 regular", name, e.mode)
		}
		order = append(order, m+".ko")
	}
	if got, want := string(entries["lib/modules/order"].data), strings.Join(order, "\n")+"\n"; got != want {
		t.Errorf("lib/modules/order = %q, want %q", got, want)
	}

	// The kernel unpacks in order: every parent directory must come first.
	seen := map[string]bool{}
	for _, n := range names {
		if dir := path.Dir(n); dir != "." && !seen[dir] {
			t.Errorf("%s comes before its directory %s", n, dir)
		}
		seen[n] = true
	}
	if n := len(names); n != 8+1+len(want)+1 {
		t.Errorf("archive has %d members, want 8 dirs, init, %d modules and the order file: %q", n, len(want), names)
	}
}

func TestWriteNoModules(t *testing.T) {
	tetherPath, _ := tether(t)
	var buf bytes.Buffer
	if err := initramfs.Write(&buf, tetherPath, fakeTree(t), nil); err != nil {
		t.Fatal(err)
	}
	_, entries := readArchive(t, buf.Bytes())
	if _, ok := entries["init"]; !ok {
		t.Error("no init")
	}
	if got := strings.TrimSpace(string(entries["lib/modules/order"].data)); got != "" {
		t.Errorf("order file lists %q with no modules", got)
	}
}

func TestVersionAndKernel(t *testing.T) {
	kt := fakeTree(t)
	v, err := kt.Version()
	if err != nil || v != version {
		t.Errorf("Version = %q, %v; want %q", v, err, version)
	}
	k, err := kt.Kernel()
	if want := filepath.Join(kt.Dir, "boot", "vmlinuz-"+version); err != nil || k != want {
		t.Errorf("Kernel = %q, %v; want %q", k, err, want)
	}

	// An extracted ELF vmlinux is preferred.
	elf := filepath.Join(kt.Dir, "boot", "vmlinux-"+version)
	if err := os.WriteFile(elf, []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if k, err := kt.Kernel(); err != nil || k != elf {
		t.Errorf("Kernel with vmlinux = %q, %v; want %q", k, err, elf)
	}
	// A boot loader's kernel stays the bzImage.
	if b, err := kt.BzImage(); err != nil || b != filepath.Join(kt.Dir, "boot", "vmlinuz-"+version) {
		t.Errorf("BzImage with vmlinux = %q, %v; want the vmlinuz", b, err)
	}

	noVersion := t.TempDir() // lib/modules holds only a file
	os.MkdirAll(filepath.Join(noVersion, "lib", "modules"), 0o755)
	os.WriteFile(filepath.Join(noVersion, "lib", "modules", "README"), nil, 0o644)
	noKernel := t.TempDir() // modules but no boot/vmlinuz-<version>
	os.MkdirAll(filepath.Join(noKernel, "lib", "modules", version), 0o755)

	for _, tc := range []struct {
		name string
		dir  string
		call func(initramfs.KernelTree) (string, error)
	}{
		{"version_missing_tree", filepath.Join(t.TempDir(), "nonexistent"), initramfs.KernelTree.Version},
		{"version_no_version_dir", noVersion, initramfs.KernelTree.Version},
		{"kernel_missing_tree", filepath.Join(t.TempDir(), "nonexistent"), initramfs.KernelTree.Kernel},
		{"kernel_no_vmlinuz", noKernel, initramfs.KernelTree.Kernel},
		{"bzimage_no_vmlinuz", noKernel, initramfs.KernelTree.BzImage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.call(initramfs.KernelTree{Dir: tc.dir})
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("= %q, %v; want an error wrapping os.ErrNotExist", got, err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.dir) {
				t.Errorf("error %q does not name the tree %s", err, tc.dir)
			}
		})
	}
}

func TestModule(t *testing.T) {
	kt := fakeTree(t)
	for _, tc := range []struct {
		name string
		want string // relative to kernel/; "" for os.ErrNotExist
	}{
		{"virtio", "drivers/virtio/virtio.ko"}, // not virtio_ring.ko etc.
		{"virtio_ring", "drivers/virtio/virtio_ring.ko"},
		{"virtio-ring", "drivers/virtio/virtio_ring.ko"},
		{"virtio_blk", "drivers/block/virtio_blk.ko"},
		{"crc32c-intel", "arch/x86/crypto/crc32c-intel.ko"},
		{"crc32c_intel", "arch/x86/crypto/crc32c-intel.ko"},
		{"virtio_net", ""},
		{"virt", ""},
		{"9p", ""}, // only a compressed .ko.xz
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kt.Module(tc.name)
			if tc.want == "" {
				if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), tc.name) {
					t.Errorf("Module(%q) = %q, %v; want an os.ErrNotExist naming it", tc.name, got, err)
				}
				return
			}
			if want := filepath.Join(kt.Dir, modPath(tc.want)); err != nil || got != want {
				t.Errorf("Module(%q) = %q, %v; want %q", tc.name, got, err, want)
			}
		})
	}
}

// dirNames lists dir's entries.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return n
}

func TestWriteFile(t *testing.T) {
	kt := fakeTree(t)
	tetherPath, _ := tether(t)
	mods := []string{"virtio_ring", "virtio"}

	dir := t.TempDir()
	out := filepath.Join(dir, "initrd.img")
	if err := initramfs.WriteFile(out, tetherPath, kt, mods); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"initrd.img"}) {
		t.Errorf("dir holds %q after WriteFile, want only initrd.img", got)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := initramfs.Write(&want, tetherPath, kt, mods); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("WriteFile wrote %d bytes, Write %d: archives differ", len(got), want.Len())
	}

	// A failed rewrite leaves the old file whole and no temp files.
	for _, tc := range []struct {
		name    string
		tether  string
		modules []string
		msg     string
	}{
		{"missing_module", tetherPath, []string{"virtio", "nosuchmod"}, "nosuchmod"},
		{"missing_tether", filepath.Join(dir, "notether"), mods, "notether"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := initramfs.WriteFile(out, tc.tether, kt, tc.modules)
			if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("WriteFile = %v, want os.ErrNotExist naming %s", err, tc.msg)
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"initrd.img"}) {
				t.Errorf("dir holds %q after a failed WriteFile, want only initrd.img", names)
			}
			if after, _ := os.ReadFile(out); !bytes.Equal(after, got) {
				t.Errorf("failed WriteFile changed the existing initrd")
			}
		})
	}

	t.Run("missing_module_new_file", func(t *testing.T) {
		dir := t.TempDir()
		err := initramfs.WriteFile(filepath.Join(dir, "initrd.img"), tetherPath, kt, []string{"nosuchmod"})
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("WriteFile = %v, want os.ErrNotExist", err)
		}
		if names := dirNames(t, dir); len(names) != 0 {
			t.Errorf("dir holds %q after a failed WriteFile, want nothing", names)
		}
	})
}
