package vsphere

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
)

// TestImportDisk imports a raw disk once (concurrent imports of one name
// share it), makes an overlay over it, and removes the overlay with its
// directory; the image store keeps the base.
func TestImportDisk(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img missing")
	}
	e := newSim(t)
	d := e.vch()
	ctx := t.Context()
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(raw, []byte("content"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 8<<20); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { _, errs[i] = d.ImportDisk(ctx, raw, "img1") })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	base, err := d.ImportDisk(ctx, raw, "img1")
	if err != nil {
		t.Fatal(err)
	}
	want := "[" + simDS + "] " + testVCH + "/images/img1.vmdk"
	if base.Path != want || base.Format != "vmdk" || !base.ReadOnly {
		t.Fatalf("ImportDisk = %+v; want %s, vmdk, read-only", base, want)
	}
	if !e.exists(want) || e.exists("["+simDS+"] _vch-import-img1") {
		t.Errorf("after the import: %s exists %v (want true), the import's directory exists %v (want false)", want, e.exists(want), e.exists("["+simDS+"] _vch-import-img1"))
	}
	for _, n := range e.vmNames() {
		if strings.HasPrefix(n, "_vch-import-") {
			t.Errorf("VM left by the import: %s", n)
		}
	}
	rw := d.DiskPath("containers", "c1", "rw")
	if rw != "["+simDS+"] "+testVCH+"/containers/c1/rw.vmdk" {
		t.Errorf("DiskPath = %q", rw)
	}
	if _, err := d.CreateOverlay(ctx, base, rw, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveDisk(ctx, rw); err != nil {
		t.Fatal(err)
	}
	if e.exists(rw) || e.exists("["+simDS+"] "+testVCH+"/containers/c1") {
		t.Error("RemoveDisk left the disk or its directory")
	}
	if err := d.RemoveDisk(ctx, rw); err != nil {
		t.Errorf("RemoveDisk of a disk gone: %v", err)
	}
	if !e.exists(want) {
		t.Error("RemoveDisk of the overlay removed the base")
	}
	for _, bad := range []string{"", "../x", "a/b", strings.Repeat("a", 129)} {
		if _, err := d.ImportDisk(ctx, raw, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ImportDisk name %q: %v; want InvalidArgument", bad, err)
		}
	}
	if _, err := d.ImportDisk(ctx, filepath.Join(t.TempDir(), "missing"), "img2"); !errdefs.IsNotFound(err) {
		t.Errorf("ImportDisk of a missing file: %v; want NotFound", err)
	}
	if err := d.RemoveDisk(ctx, "[other] x/y.vmdk"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("RemoveDisk outside the image store: %v; want InvalidArgument", err)
	}
}

// TestImportBoot uploads one ISO per kernel and initramfs pair, holding
// both behind ISOLINUX.
func TestImportBoot(t *testing.T) {
	xorriso, err := exec.LookPath("xorriso")
	if err != nil {
		t.Skip("xorriso missing")
	}
	if _, err := os.Stat(isolinuxBin); err != nil {
		t.Skip("ISOLINUX missing")
	}
	e := newSim(t)
	d := e.vch()
	ctx := t.Context()
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	os.WriteFile(kernel, []byte("kernel"), 0o600)
	os.WriteFile(initrd, []byte("initrd"), 0o600)
	iso, none, err := d.ImportBoot(ctx, kernel, initrd)
	if err != nil {
		t.Fatal(err)
	}
	if none != "" || !strings.HasPrefix(iso, "["+simDS+"] "+testVCH+"/boot/") || !strings.HasSuffix(iso, ".iso") || !e.exists(iso) {
		t.Fatalf("ImportBoot = %q, %q; want an ISO in the image store's boot directory and no initrd", iso, none)
	}
	again, _, err := d.ImportBoot(ctx, kernel, initrd)
	if err != nil || again != iso {
		t.Errorf("ImportBoot again = %q, %v; want %q", again, err, iso)
	}
	os.WriteFile(initrd, []byte("initrd 2"), 0o600)
	if other, _, err := d.ImportBoot(ctx, kernel, initrd); err != nil || other == iso {
		t.Errorf("ImportBoot of another initramfs = %q, %v; want another ISO", other, err)
	}
	p, _ := dsPathAny(iso)
	local := filepath.Join(e.localDir(ctx), p.Path)
	out, err := exec.Command(xorriso, "-indev", local, "-find", "/", "-type", "f").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %s: %v", out, err)
	}
	for _, f := range []string{"'/vmlinuz'", "'/initrd.img'", "'/isolinux/isolinux.bin'", "'/isolinux/isolinux.cfg'", "'/isolinux/ldlinux.c32'"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("ISO lacks %s:\n%s", f, out)
		}
	}
}
