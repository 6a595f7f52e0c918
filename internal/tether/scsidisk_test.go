package tether

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// TestSCSIUnits: guestinfo's disk keys become serial -> unit; keys
// without an address, with another controller's or the controller's own
// unit (7), or without a serial are left out.
func TestSCSIUnits(t *testing.T) {
	got := scsiUnits(map[string]string{
		guestinfoName:                     "c9",
		guestinfoDiskPrefix + "0.serial":  "vch-root",
		guestinfoDiskPrefix + "0.address": "scsi0:0",
		guestinfoDiskPrefix + "1.serial":  "vch-vol-data",
		guestinfoDiskPrefix + "1.address": "scsi0:12",
		guestinfoDiskPrefix + "2.serial":  "no-address",
		guestinfoDiskPrefix + "3.serial":  "other-controller",
		guestinfoDiskPrefix + "3.address": "scsi1:2",
		guestinfoDiskPrefix + "4.serial":  "controller-unit",
		guestinfoDiskPrefix + "4.address": "scsi0:7",
		guestinfoDiskPrefix + "5.address": "scsi0:5",
		guestinfoDiskPrefix + "6.serial":  "junk",
		guestinfoDiskPrefix + "6.address": "scsi0:x",
	})
	want := map[string]int{"vch-root": 0, "vch-vol-data": 12}
	if !maps.Equal(got, want) {
		t.Fatalf("scsiUnits = %v, want %v", got, want)
	}
	if got := scsiUnits(nil); len(got) != 0 {
		t.Fatalf("scsiUnits(nil) = %v", got)
	}
}

// TestSCSIDisk: the disk at a unit is found through sysfs as Linux lays
// it out (block/sdX/device linking to HOST:CHANNEL:TARGET:LUN, the host's
// proc_name), only on a vmw_pvscsi host, at channel 0 and LUN 0.
func TestSCSIDisk(t *testing.T) {
	sys := t.TempDir()
	dev := func(block, host, hctl, driver string) {
		t.Helper()
		d := filepath.Join(sys, "devices", "pci0000:00", "host"+host, "target"+hctl, hctl)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		b := filepath.Join(sys, "block", block)
		if err := os.MkdirAll(b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(d, filepath.Join(b, "device")); err != nil {
			t.Fatal(err)
		}
		h := filepath.Join(sys, "class", "scsi_host", "host"+host)
		if err := os.MkdirAll(h, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h, "proc_name"), []byte(driver+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dev("sda", "2", "2:0:0:0", "vmw_pvscsi")
	dev("sdb", "2", "2:0:12:0", "vmw_pvscsi")
	dev("sdc", "0", "0:0:3:0", "ata_piix")   // another controller's target 3
	dev("sdd", "2", "2:0:4:1", "vmw_pvscsi") // LUN 1
	for unit, want := range map[int]string{0: "sda", 12: "sdb", 3: "", 4: "", 5: ""} {
		if got := scsiDisk(sys, unit); got != want {
			t.Errorf("scsiDisk(unit %d) = %q, want %q", unit, got, want)
		}
	}
}
