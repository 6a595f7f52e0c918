package tether

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Guestinfo keys of a vSphere VM's disks: GuestinfoDiskPrefix, the disk's
// index, then ".serial" (the serial the port layer asks for) or
// ".address" ("scsi0:UNIT", its place on the VM's one paravirtual SCSI
// controller). vSphere gives a disk no serial number the guest can read,
// so the vSphere driver says where each one is instead.
const (
	guestinfoDiskPrefix = "guestinfo.vch.disk."
	// maxSCSIDisks bounds the disk indexes read through the backdoor: one
	// controller holds at most 15 disks (units 0-6, 8-15).
	maxSCSIDisks = 16
)

// pvscsiDriver is the SCSI host's proc_name of a VMware paravirtual SCSI
// controller (Linux drivers/scsi/vmw_pvscsi.c).
const pvscsiDriver = "vmw_pvscsi"

// scsiUnits maps each disk serial of guestinfo to its unit on scsi0;
// empty without such keys (the qemu driver's VMs, whose virtio-blk disks
// carry their serials). An address that is not "scsi0:UNIT" is skipped.
func scsiUnits(guestinfo map[string]string) map[string]int {
	units := map[string]int{}
	for k, serial := range guestinfo {
		idx, ok := strings.CutPrefix(k, guestinfoDiskPrefix)
		if !ok || !strings.HasSuffix(idx, ".serial") || serial == "" {
			continue
		}
		idx = strings.TrimSuffix(idx, ".serial")
		addr, ok := strings.CutPrefix(guestinfo[guestinfoDiskPrefix+idx+".address"], "scsi0:")
		if !ok {
			continue
		}
		if unit, err := strconv.Atoi(addr); err == nil && unit >= 0 && unit != 7 && unit < maxSCSIDisks {
			units[serial] = unit
		}
	}
	return units
}

// scsiDisk is the block device name ("sdb") of the disk at target unit,
// channel 0, LUN 0 of a paravirtual SCSI controller, under the sysfs
// root sys ("/sys"), or "" while there is none. A vSphere disk's unit is
// its SCSI target (LUN 0): /sys/block/sdX/device links to the device's
// directory named HOST:CHANNEL:TARGET:LUN, and the host's
// /sys/class/scsi_host/hostHOST/proc_name names its driver.
func scsiDisk(sys string, unit int) string {
	matches, _ := filepath.Glob(filepath.Join(sys, "block", "sd*", "device"))
	for _, m := range matches {
		target, err := filepath.EvalSymlinks(m)
		if err != nil {
			continue
		}
		hctl := strings.Split(filepath.Base(target), ":")
		if len(hctl) != 4 || hctl[1] != "0" || hctl[2] != strconv.Itoa(unit) || hctl[3] != "0" {
			continue
		}
		name, err := os.ReadFile(filepath.Join(sys, "class", "scsi_host", "host"+hctl[0], "proc_name"))
		if err != nil || strings.TrimSpace(string(name)) != pvscsiDriver {
			continue
		}
		return filepath.Base(filepath.Dir(m))
	}
	return ""
}
