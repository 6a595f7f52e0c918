//go:build e2e

package vsphere

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/initramfs"
	"github.com/vchproject/vch/internal/testenv"
	"github.com/vchproject/vch/internal/tether"
)

// TestStandInGuest drives a real guest through the vSphere driver: vcsim
// is the control plane (the VM, its disks, guestinfo, its serial port),
// and a QEMU VM stands in for the simulated VM's execution, built from
// what the driver configured on the simulated vCenter: its disks are the
// VMDK files of the VM's disk chain on the simulated datastore (the
// driver's delta disk over an image disk; qemu reads VMDK), its guestinfo
// reaches tether on the kernel command line (QEMU has no VMware
// backdoor), and its first serial port connects to the service URI of
// the VM's network-backed serial port, where tether speaks package
// serialauth's hello and then the agent protocol. What stands in: the ISO
// boot (QEMU boots the kernel and initramfs directly) and the disk
// controller (virtio-blk, not paravirtual SCSI).
func TestStandInGuest(t *testing.T) {
	testenv.RequireVMs(t)
	e := newSim(t)
	d := e.driver(func(c *Config) { c.ConnectTimeout = 40 * time.Second })
	if err := d.CreateVCH(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dsDir := e.localDir(ctx)

	// The image disk: busybox in ext4, as VMDK on the image store.
	base := e.baseDisk("[" + simDS + "] " + testVCH + "/images/busybox.vmdk")
	bp, _ := dsPathAny(base.Path)
	baseFile := filepath.Join(dsDir, bp.Path)
	overlay, err := d.CreateOverlay(ctx, base, "["+simDS+"] "+testVCH+"/c1/rw.vmdk", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The simulator reads its own descriptor of the base whenever it
	// chains a delta disk to it (here and in the VM's creation); the
	// disk QEMU reads replaces it once the VM is powered on.
	image := filepath.Join(t.TempDir(), "busybox.vmdk")
	busyboxVMDK(t, image)
	var baseSum string
	realise := func() error {
		if out, err := exec.Command("cp", image, baseFile).CombinedOutput(); err != nil {
			return fmt.Errorf("image disk: %s: %w", out, err)
		}
		baseSum = fileSum(t, baseFile)
		return nil
	}

	kt := initramfs.KernelTree{Dir: testenv.KernelDir()}
	kernel, err := kt.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	runDir := t.TempDir()
	initrd := filepath.Join(runDir, "initrd.img")
	if err := initramfs.WriteFile(initrd, filepath.Join(testenv.BinDir(), "tether"), kt, initramfs.BootModules); err != nil {
		t.Fatal(err)
	}

	s := spec("c1")
	s.CPUs = 1
	s.Cmdline = "quiet"
	s.Disks = []hypervisor.Disk{overlay}
	standIn := make(chan error, 1)
	var qemu *exec.Cmd
	go func() {
		var err error
		qemu, err = e.standIn(ctx, "c1", dsDir, kernel, initrd, runDir, realise)
		standIn <- err
	}()
	vm, err := d.Start(ctx, s)
	if err != nil {
		serr := <-standIn
		b, _ := os.ReadFile(filepath.Join(runDir, "console.log"))
		q, _ := os.ReadFile(filepath.Join(runDir, "qemu.log"))
		b = append(q, b...)
		cancel()
		t.Fatalf("Start: %v (stand-in: %v)\nconsole:\n%s\ndriver's log:\n%s", err, serr, b, e.logs.String())
	}
	if serr := <-standIn; serr != nil {
		t.Fatalf("stand-in: %v", serr)
	}
	t.Cleanup(func() {
		qemu.Process.Kill()
		qemu.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(runDir, "console.log"))
			t.Logf("stand-in's console:\n%s", b)
		}
	})
	c, err := agent.Dial(ctx, vm.Channel())
	if err != nil {
		t.Fatalf("agent over the serial channel: %v", err)
	}
	if err := c.Setup(ctx, wire.Setup{Hostname: "standin", TimeUnixNano: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	out, code := runGuest(t, c, "uname", "-r")
	if code != 0 || out == "" || out == unix.ByteSliceToString(uts.Release[:]) {
		t.Errorf("uname -r = %q (code %d): want the guest's kernel", out, code)
	}
	// Writes land in the delta disk; the image disk is untouched.
	if out, code := runGuest(t, c, "sh", "-c", "echo written > /tmp/f && sync && cat /tmp/f"); code != 0 || out != "written" {
		t.Errorf("write on the root disk: %q (code %d)", out, code)
	}
	if out, code := runGuest(t, c, "cat", "/proc/cmdline"); code != 0 || !strings.Contains(out, "vch.channel=serial") {
		t.Errorf("guest's command line %q: want the serial channel", out)
	}
	c.Close()
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	<-vm.Done()
	qemu.Process.Kill()
	qemu.Wait()
	if got := fileSum(t, baseFile); got != baseSum {
		t.Error("the image disk changed under its delta disk")
	}
}

// standIn waits for the VM name to be powered on in the simulator and
// runs a QEMU VM from its configuration: the disks of its disk chains
// (each delta disk made real with qemu-img over its parent, which the
// simulator only records), its guestinfo and the service URI of its
// serial port. realise runs first, once the VM is on: it writes the
// image disks' real contents. It returns the running QEMU.
func (e *sim) standIn(ctx context.Context, name, dsDir, kernel, initrd, runDir string, realise func() error) (*exec.Cmd, error) {
	var o mo.VirtualMachine
	for {
		vm, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).VirtualMachine(ctx, "/"+simDC+"/vm/"+testVCH+"/"+name)
		if err == nil {
			err = vm.Properties(ctx, vm.Reference(), []string{"config", "runtime.powerState"}, &o)
			if err == nil && o.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("VM %s not powered on: %w (last: %v)", name, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := realise(); err != nil {
		return nil, err
	}
	local := func(p string) (string, error) {
		dp, ok := dsPathAny(p)
		if !ok || dp.Datastore != simDS {
			return "", fmt.Errorf("disk %q is not on %s", p, simDS)
		}
		return filepath.Join(dsDir, dp.Path), nil
	}
	info := extraConfig(o)
	args := []string{
		"-M", "microvm,x-option-roms=off,pit=on,pic=on,rtc=on,isa-serial=on",
		"-accel", "tcg", "-cpu", "qemu64,+arat",
		"-m", strconv.Itoa(int(o.Config.Hardware.MemoryMB)), "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-serial", "file:" + filepath.Join(runDir, "console.log"),
	}
	var serial string
	disks := 0
	for _, dev := range o.Config.Hardware.Device {
		switch dev := dev.(type) {
		case *types.VirtualSerialPort:
			if b, ok := dev.Backing.(*types.VirtualSerialPortURIBackingInfo); ok {
				serial = b.ServiceURI
			}
		case *types.VirtualDisk:
			b, ok := dev.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				return nil, fmt.Errorf("disk %d: backing %T", dev.Key, dev.Backing)
			}
			file, err := local(b.FileName)
			if err != nil {
				return nil, err
			}
			if b.Parent != nil {
				parent, err := local(b.Parent.FileName)
				if err != nil {
					return nil, err
				}
				if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", file).CombinedOutput(); err != nil {
					return nil, fmt.Errorf("delta disk %s over %s: %s: %w", file, parent, out, err)
				}
			}
			args = append(args,
				"-drive", fmt.Sprintf("file=%s,format=vmdk,if=none,id=d%d", file, disks),
				"-device", fmt.Sprintf("virtio-blk-device,drive=d%d", disks))
			disks++
		}
	}
	addr, ok := strings.CutPrefix(serial, "tcp://")
	if !ok {
		return nil, fmt.Errorf("serial port URI %q: want tcp://", serial)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("serial port URI %q: %w", serial, err)
	}
	// The console is the first UART (a file), the channel the second,
	// as a VM with two serial ports.
	args = append(args, "-chardev", "socket,id=channel,host="+host+",port="+port, "-device", "isa-serial,chardev=channel,index=1")
	cmdline := []string{"console=ttyS0", "reboot=t", "panic=-1", "tsc=reliable", "tsc_early_khz=" + strconv.Itoa(tscKHz()), "8250.nr_uarts=2",
		info[GuestinfoCmdline], tether.ChannelParam + "=serial", tether.SerialDeviceParam + "=ttyS1",
		tether.GuestinfoParam + "=" + tether.EncodeGuestinfo(map[string]string{GuestinfoName: info[GuestinfoName], GuestinfoChannelSecret: info[GuestinfoChannelSecret]})}
	args = append(args, "-append", strings.Join(cmdline, " "))
	cmd := exec.Command("qemu-system-x86_64", args...)
	stderr, err := os.Create(filepath.Join(runDir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var once sync.Once
	go func() {
		<-ctx.Done()
		once.Do(func() { cmd.Process.Kill() })
	}()
	return cmd, nil
}

// tscKHz is the host's TSC rate for the guest's tsc_early_khz.
func tscKHz() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			if mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && mhz > 0 {
				return int(mhz * 1000)
			}
		}
	}
	return 2000000
}

// busyboxVMDK writes an ext4 root disk holding Debian's static busybox to
// file as a monolithic sparse VMDK (over what the simulator made there).
func busyboxVMDK(t *testing.T, file string) {
	t.Helper()
	raw := testenv.BusyboxDisk(t, t.TempDir(), "64M")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", raw, file).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %s: %v", out, err)
	}
}

func fileSum(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// runGuest runs args in the guest and returns its stdout, trimmed, and
// exit code.
func runGuest(t *testing.T, c *agent.Client, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p, err := c.Start(ctx, wire.Process{Args: args})
	if err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&out, p.Stdout()); close(done) }()
	go io.Copy(io.Discard, p.Stderr())
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %v: %v", args, err)
	}
	<-done
	return strings.TrimSpace(out.String()), code
}
