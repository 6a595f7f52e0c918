package initramfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vchproject/vch/internal/initramfs"
)

func TestLoadOrderGraph(t *testing.T) {
	deps := map[string][]string{
		"9p": {"9pnet", "fscache", "netfs"}, "fscache": {"netfs"}, "9pnet_virtio": {"virtio", "9pnet", "virtio_ring"},
		"virtio": {"virtio_ring"}, "ext4": {"jbd2", "mbcache", "crc16"}, "a": {"b"}, "b": {"a"},
	}
	known := map[string]bool{"9p": true, "9pnet": true, "fscache": true, "netfs": true, "9pnet_virtio": true, "virtio": true, "virtio_ring": true, "ext4": true, "jbd2": true, "mbcache": true, "a": true, "b": true}
	depends := func(name string) ([]string, error) {
		if !known[name] {
			return nil, os.ErrNotExist
		}
		return deps[name], nil
	}
	builtin := map[string]bool{"crc16": true}
	got, err := initramfs.LoadOrderWith([]string{"virtio-ring", "9pnet_virtio", "9p", "ext4", "virtio"}, builtin, depends)
	want := []string{"virtio_ring", "virtio", "9pnet", "9pnet_virtio", "netfs", "fscache", "9p", "jbd2", "mbcache", "ext4"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("LoadOrder = %v, %v\nwant %v", got, err, want)
	}
	if _, err := initramfs.LoadOrderWith([]string{"nosuch"}, builtin, depends); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing module: %v", err)
	}
	if _, err := initramfs.LoadOrderWith([]string{"a"}, builtin, depends); err == nil || !strings.Contains(err.Error(), "cycle: a -> b -> a") {
		t.Errorf("cycle: %v", err)
	}
}

// TestLoadOrderRealKernels checks the module lists against the unpacked
// Debian kernels, when present: on the cloud kernel ext4 and crc32c are
// built in; on the generic one they and 9p are modules, loaded after
// their dependencies.
func TestLoadOrderRealKernels(t *testing.T) {
	root, _ := filepath.Abs("../../bin/guest")
	cloud := initramfs.KernelTree{Dir: filepath.Join(root, "kernel")}
	if _, err := cloud.Version(); err != nil {
		t.Skip("cloud kernel not unpacked (make guest)")
	}
	got, err := cloud.LoadOrder(append(slices.Clone(initramfs.BootModules), initramfs.FilesystemModules...))
	if err != nil || !slices.Equal(got, initramfs.BootModules) {
		t.Errorf("cloud kernel: %v, %v; want %v", got, err, initramfs.BootModules)
	}
	// A vSphere VCH's: the SCSI stack under its disk and controller.
	got, err = cloud.LoadOrder(append(slices.Clone(initramfs.BootModules), initramfs.VSphereModules...))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cloud kernel, vSphere modules: %v", got)
	vpos := map[string]int{}
	for i, m := range got {
		vpos[m] = i
	}
	for _, pair := range [][2]string{{"scsi_mod", "vmw_pvscsi"}, {"scsi_mod", "sd_mod"}, {"scsi_common", "scsi_mod"}} {
		a, aok := vpos[pair[0]]
		b, bok := vpos[pair[1]]
		if !aok || !bok || a > b {
			t.Errorf("cloud kernel, vSphere order %v: want %s before %s", got, pair[0], pair[1])
		}
	}
	if _, ok := vpos["vmxnet3"]; !ok {
		t.Errorf("cloud kernel, vSphere order %v: no vmxnet3", got)
	}
	generic := initramfs.KernelTree{Dir: filepath.Join(root, "kernel-generic")}
	if _, err := generic.Version(); err != nil {
		t.Skip("generic kernel not unpacked (make guest)")
	}
	names := append(append(slices.Clone(initramfs.BootModules), initramfs.FilesystemModules...), initramfs.ShareModules...)
	got, err = generic.LoadOrder(names)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range got {
		pos[m] = i
	}
	for _, pair := range [][2]string{{"jbd2", "ext4"}, {"mbcache", "ext4"}, {"crc16", "ext4"}, {"9pnet", "9pnet_virtio"}, {"netfs", "9p"}, {"virtio_ring", "virtio_net"}} {
		a, aok := pos[pair[0]]
		b, bok := pos[pair[1]]
		if !aok || !bok || a > b {
			t.Errorf("generic kernel order %v: want %s before %s", got, pair[0], pair[1])
		}
	}
}
