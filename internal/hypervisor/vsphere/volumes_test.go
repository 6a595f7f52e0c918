package vsphere

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestImportVolume imports a raw disk as a volume's writable disk under a
// volume store's directory: the disk on the datastore holds the bytes
// uploaded (the simulator keeps NFC uploads, see vcsimtest), a second
// import of the name replaces a disk left behind, and RemoveVolume
// deletes the disk and its directory.
func TestImportVolume(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img missing")
	}
	e := newSim(t)
	d := e.vch()
	ctx := t.Context()
	raw := filepath.Join(t.TempDir(), "disk.ext4")
	if err := os.WriteFile(raw, []byte("volume bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 16<<20); err != nil {
		t.Fatal(err)
	}
	dir := "[" + simDS + "] vols"
	want := dir + "/v1/v1.vmdk"
	for range 2 { // the second replaces the first
		disk, err := d.ImportVolume(ctx, raw, dir, "v1")
		if err != nil {
			t.Fatal(err)
		}
		if disk.Path != want || disk.Format != "vmdk" || disk.ReadOnly {
			t.Fatalf("ImportVolume = %+v; want %s, vmdk, writable", disk, want)
		}
	}
	rc, _, err := e.ds.Download(ctx, "vols/v1/v1-flat.vmdk", nil)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 12)
	_, err = io.ReadFull(rc, head)
	rc.Close()
	if err != nil || !bytes.Equal(head, []byte("volume bytes")) {
		t.Errorf("the volume disk's extent starts %q (%v); want the uploaded bytes", head, err)
	}
	for _, n := range e.vmNames() {
		if strings.HasPrefix(n, "_vch-import-") {
			t.Errorf("VM left by the import: %s", n)
		}
	}
	if err := d.RemoveVolume(ctx, want); err != nil {
		t.Fatal(err)
	}
	if e.exists(want) || e.exists(dir+"/v1") {
		t.Error("RemoveVolume left the disk or its directory")
	}
	if err := d.RemoveVolume(ctx, want); err != nil {
		t.Errorf("RemoveVolume of a disk gone: %v", err)
	}
	for _, bad := range []struct{ dir, name string }{{dir, ""}, {dir, "a/b"}, {"vols", "v2"}, {"[" + simDS + "] ../x", "v2"}} {
		if _, err := d.ImportVolume(ctx, raw, bad.dir, bad.name); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ImportVolume(%q, %q): %v; want InvalidArgument", bad.dir, bad.name, err)
		}
	}
	for _, bad := range []string{"[" + simDS + "] vols/v1.vmdk", "[" + simDS + "] vols/v1/other.vmdk", "vols/v1/v1.vmdk"} {
		if err := d.RemoveVolume(ctx, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("RemoveVolume(%q): %v; want InvalidArgument", bad, err)
		}
	}
}
