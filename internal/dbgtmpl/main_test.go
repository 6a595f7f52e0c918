//go:build e2e

package dbgtmpl

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/qemu"
	"github.com/vchproject/vch/internal/initramfs"
	"github.com/vchproject/vch/internal/portlayer/guest"
	"github.com/vchproject/vch/internal/testenv"
	"github.com/vchproject/vch/internal/tether/wire"
)

func TestDbg(t *testing.T) {
	kt := initramfs.KernelTree{Dir: testenv.KernelDir()}
	kernel, _ := kt.Kernel()
	dir := "/tmp/dbg"
	os.RemoveAll(dir)
	os.MkdirAll(dir+"/t", 0o700)
	os.MkdirAll(dir+"/r1", 0o700)
	os.MkdirAll(dir+"/r2", 0o700)
	initrd := filepath.Join(dir, "initrd.img")
	if err := initramfs.WriteFile(initrd, filepath.Join(testenv.BinDir(), "tether"), kt, initramfs.BootModules); err != nil {
		t.Fatal(err)
	}
	exec.Command("mkfs.ext4", "-q", "-F", dir+"/root.ext4", "32M").Run()
	d, _ := qemu.New(qemu.Config{}, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	spec := hypervisor.Spec{Name: "tmpl", Kernel: kernel, Initrd: initrd, Cmdline: wire.TemplateCmdline, MemoryMiB: 256, CPUs: 1, ChannelName: wire.PortName, RuntimeDir: dir + "/r1",
		Disks: []hypervisor.Disk{{Path: dir + "/root.ext4", Format: "raw", Serial: wire.RootSerial}}}
	ctx := context.Background()
	t0 := time.Now()
	if err := d.SaveTemplate(ctx, spec, dir+"/t", guest.AwaitTemplate); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved in %s", time.Since(t0))
	spec.Name, spec.RuntimeDir = "clone", dir+"/r2"
	t0 = time.Now()
	vm, err := d.Restore(ctx, spec, dir+"/t")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored in %s", time.Since(t0))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = guest.Wake(wctx, vm.Channel(), nil)
	t.Logf("wake after %s: %v", time.Since(t0), err)
	if os.Getenv("KEEP") != "" {
		time.Sleep(time.Hour)
	}
	vm.Kill()
}
