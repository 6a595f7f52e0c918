package qemu

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/hypervisor"
)

// update rewrites the golden files: go test ./internal/hypervisor/qemu -run TestArgv -update
var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/<test name>.golden, or rewrites the
// file under -update.
func golden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "_")+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("argv differs from %s (run with -update if the change is intended)\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestArgv(t *testing.T) {
	base := hypervisor.Spec{
		Name:        "0123abcd",
		Kernel:      "/var/lib/vch/guest/vmlinuz",
		Initrd:      "/var/lib/vch/guest/initrd.img",
		MemoryMiB:   256,
		CPUs:        1,
		ChannelName: "org.vch.tether.0",
		RuntimeDir:  "/run/vch/vms/0123abcd",
	}
	withDisks := func(s hypervisor.Spec, d ...hypervisor.Disk) hypervisor.Spec {
		s.Disks = d
		return s
	}
	rw := hypervisor.Disk{Path: "/var/lib/vch/containers/0123abcd/rw.qcow2", Format: "qcow2"}
	image := hypervisor.Disk{Path: "/var/lib/vch/images/sha256-5f70bf18.raw", Format: "raw", ReadOnly: true}

	commas := base
	commas.Name = "commas"
	commas.Kernel = "/srv/guest,v1/vmlinuz"
	commas.Initrd = "/srv/guest,v1/initrd.img"
	commas.Cmdline = "vch.opt=a,b"
	commas.ChannelName = "org.vch,tether"
	commas.RuntimeDir = "/run/vch,test/vms/commas"
	commas.Disks = []hypervisor.Disk{{Path: "/var/lib/vch/a,b/rw,1.qcow2", Format: "qcow2"}}

	smp := withDisks(base, rw)
	smp.MemoryMiB, smp.CPUs, smp.Cmdline = 1024, 2, "vch.debug=1"

	// A template and a VM restored from it: the same devices in the same
	// order (migration matches them by position), RAM in one file.
	tmpl := withDisks(base, hypervisor.Disk{Path: "/t/placeholder.img", Format: "raw", ReadOnly: true, Serial: "vch-root"})
	tmpl.NICs = []hypervisor.NIC{{MAC: "02:76:63:68:ff:00"}}
	clone := withDisks(base, hypervisor.Disk{Path: rw.Path, Format: "qcow2", Serial: "vch-root"})
	clone.NICs = []hypervisor.NIC{{File: os.Stdin, MAC: "02:42:ac:11:00:02"}}

	opts := map[string]vmOptions{
		"template_save":    {memPath: "/t/memory", memShared: true},
		"template_restore": {memPath: "/t/memory", incoming: true},
		// Without the RAM shim the balloon reports no free pages.
		"template_restore_no_shim": {memPath: "/t/memory", incoming: true, noFreePageReporting: true},
		// A warm VM: each disk a raw node over its placeholder's node
		// (a file's, or a qcow2 node over a rehearsal image), which
		// PlugDisks re-points.
		"template_restore_warm": {memPath: "/t/memory", incoming: true, pluggable: true},
	}
	for _, tc := range []struct {
		name  string
		spec  hypervisor.Spec
		accel string
	}{
		{"template_save", tmpl, AccelTCG},
		{"template_restore", clone, AccelTCG},
		{"template_restore_no_shim", clone, AccelTCG},
		{"template_restore_warm", withDisks(clone,
			hypervisor.Disk{Path: "/run/vch/vms/0123abcd/rehearsal.qcow2", Format: "qcow2", Serial: "vch-root"},
			hypervisor.Disk{Path: "/run/vch/vms/0123abcd/slot1.img", Format: "raw", ReadOnly: true, Serial: "vch-base"}), AccelTCG},
		{"one_disk_tcg", withDisks(base, rw), AccelTCG},
		{"one_disk_kvm", withDisks(base, rw), AccelKVM},
		{"two_disks_readonly_raw", withDisks(base, image, rw), AccelTCG},
		{"comma_in_paths", commas, AccelTCG},
		{"smp_cmdline_kvm", smp, AccelKVM},
		{"disks_with_serials", withDisks(base,
			hypervisor.Disk{Path: rw.Path, Format: "qcow2", Serial: "vch-root"},
			hypervisor.Disk{Path: "/var/lib/vch/volumes/data/disk.ext4", Format: "raw", Serial: "vch-vol-0"},
			hypervisor.Disk{Path: "/var/lib/vch/volumes/ro/disk.ext4", Format: "raw", ReadOnly: true, Serial: "vch-vol-1"}), AccelTCG},
		{"shares", func() hypervisor.Spec {
			s := withDisks(base, rw)
			s.Shares = []hypervisor.Share{{Tag: "vch-share-0", Path: "/srv/data"}, {Tag: "vch-share-1", Path: "/srv/a,b", ReadOnly: true}}
			return s
		}(), AccelTCG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := argvWith(tc.spec, tc.accel, defaultTSCKHz, runtimePaths(tc.spec.RuntimeDir), opts[tc.name])
			golden(t, strings.Join(a, "\n")+"\n")
		})
	}
}

// TestArgvEscaping pins the quoting rule: inside a QEMU option list
// (-chardev, -drive, -device) a comma is written twice; plain path
// arguments (-kernel, -initrd, -pidfile, -serial file:) are taken
// literally and must not be doubled.
func TestArgvEscaping(t *testing.T) {
	spec := hypervisor.Spec{
		Name: "x", Kernel: "/k,1/vmlinuz", Initrd: "/k,1/initrd", MemoryMiB: 128, CPUs: 1,
		ChannelName: "ch,1", RuntimeDir: "/r,1",
		Disks: []hypervisor.Disk{{Path: "/d,1/root.raw", Format: "raw", ReadOnly: true}},
	}
	a := argv(spec, AccelTCG, defaultTSCKHz, runtimePaths(spec.RuntimeDir))
	opt := func(flag string) []string {
		var vals []string
		for i := 0; i+1 < len(a); i++ {
			if a[i] == flag {
				vals = append(vals, a[i+1])
			}
		}
		return vals
	}
	for _, tc := range []struct{ flag, want string }{
		{"-kernel", "/k,1/vmlinuz"},
		{"-initrd", "/k,1/initrd"},
		{"-pidfile", "/r,1/qemu.pid"},
		{"-serial", "file:/r,1/console.log"},
		{"-chardev", "path=/r,,1/tether.sock"},
		{"-device", "name=ch,,1"},
		{"-drive", "file=/d,,1/root.raw,format=raw"},
	} {
		found := false
		for _, v := range opt(tc.flag) {
			if strings.Contains(v, tc.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no value contains %q; got %q", tc.flag, tc.want, opt(tc.flag))
		}
	}
}

// TestArgvQEMUAccepts runs the real QEMU on argv() with commas in every
// path. The kernel is a dummy, so QEMU gets past option parsing, connects
// the channel and opens the disks, then stops at the kernel header: that
// error (and no option or open error) shows the escaping is what QEMU wants.
func TestArgvQEMUAccepts(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	for _, tc := range []struct {
		name, vmName string
		bug          string
	}{
		{"paths", "0123abcd", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bug != "" {
				t.Skip("BUG: " + tc.bug)
			}
			dir := filepath.Join(t.TempDir(), "a,b")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"vmlinuz,1", "initrd,1"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("not a kernel"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			disk := filepath.Join(dir, "root,1.raw")
			if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			spec := hypervisor.Spec{
				Name: tc.vmName, Kernel: filepath.Join(dir, "vmlinuz,1"), Initrd: filepath.Join(dir, "initrd,1"),
				MemoryMiB: 128, CPUs: 1, ChannelName: "org.vch,1", RuntimeDir: dir,
				Disks: []hypervisor.Disk{{Path: disk, Format: "raw", ReadOnly: true}},
			}
			p := runtimePaths(dir)
			if err := writeSparse(p.transfer, hypervisor.TransferDiskBytes); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("unix", p.channel)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan struct{})
			go func() {
				if c, err := ln.Accept(); err == nil {
					close(accepted)
					c.Close()
				}
			}()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			var out bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, append(argv(spec, AccelTCG, defaultTSCKHz, p), "-S")...)
			cmd.Stdout, cmd.Stderr = &out, &out
			err = cmd.Run()
			msg := out.String()
			if err == nil || !strings.Contains(msg, "kernel") {
				t.Fatalf("QEMU should stop only at the dummy kernel; err %v, output:\n%s", err, msg)
			}
			for _, bad := range []string{"Invalid parameter", "Could not open", "Failed to connect", "deprecated"} {
				if strings.Contains(msg, bad) {
					t.Errorf("QEMU output has %q:\n%s", bad, msg)
				}
			}
			select {
			case <-accepted:
			default:
				t.Errorf("QEMU never connected the guest channel socket; output:\n%s", msg)
			}
		})
	}
}
