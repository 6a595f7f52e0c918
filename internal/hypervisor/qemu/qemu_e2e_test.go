//go:build e2e

package qemu_test

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/hvtest"
	"github.com/vchproject/vch/internal/hypervisor/qemu"
	"github.com/vchproject/vch/internal/initramfs"
	"github.com/vchproject/vch/internal/testenv"
)

// TestConformance runs the driver contract's suite against QEMU with the
// real guest kernel and tether (two VM boots).
func TestConformance(t *testing.T) {
	testenv.RequireVMs(t)
	kt := initramfs.KernelTree{Dir: testenv.KernelDir()}
	kernel, err := kt.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.img")
	if err := initramfs.WriteFile(initrd, filepath.Join(testenv.BinDir(), "tether"), kt, initramfs.BootModules); err != nil {
		t.Fatal(err)
	}
	image := hvtest.GuestImage{
		Kernel:      kernel,
		Initrd:      initrd,
		RootDisk:    rootDisk,
		ChannelName: wire.PortName,
	}
	hvtest.Run(t, func(t *testing.T) hypervisor.Driver {
		d, err := qemu.New(qemu.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}, image)
}

// rootDisk makes a small raw ext4 disk with the directories tether writes
// to. Its directory has a comma in its name: the overlays' backing file
// path must survive QEMU's option quoting.
func rootDisk(t *testing.T, dir string) hypervisor.Disk {
	t.Helper()
	tree := filepath.Join(dir, "rootfs")
	for _, d := range []string{"etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	diskDir := filepath.Join(dir, "image,1")
	if err := os.Mkdir(diskDir, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(diskDir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, disk, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %s: %v", out, err)
	}
	return hypervisor.Disk{Path: disk, Format: "raw"}
}
