// Package standin runs real guests for the VMs of govmomi's simulator
// (vcsim), which runs none: for each VM powered on in a VM folder it boots
// a QEMU VM built from what the vsphere driver configured on the
// simulated vCenter, so that tests drive the driver's data plane (tether
// on the network-serial channel, the disk chains on the datastore) end
// to end. It is for tests only.
//
// What a stand-in is made of, from the simulated VM's configuration:
//   - the kernel and initramfs inside the VM's boot ISO (its CD-ROM's
//     file on the simulated datastore), booted directly: QEMU does not go
//     through ISOLINUX;
//   - its disks on a paravirtual SCSI controller (QEMU's pvscsi, on the
//     microvm's PCIe host), each at its SCSI unit as target, LUN 0, as on
//     vSphere (tether finds them by the addresses guestinfo gives);
//     a delta disk, which the simulator only records, is made real with
//     qemu-img over its parent; a base disk (an image's or a volume's,
//     imported by NFC: the simulator keeps the upload when started by
//     package vcsimtest) is read through the simulator's descriptor, or
//     one of the runner's naming the extent a move renamed (RunDir/disks);
//     independent-nonpersistent disks
//     are read-only, the others (deltas, volumes) written in place;
//   - its NICs as vmxnet3 NICs (QEMU's) with their MACs, each on a tap in the
//     bridge Runner.NIC names: what the VM's portgroup is attached to;
//   - its serial port's service URI as the guest's second UART (the first
//     is the console, a file), and its guestinfo on the kernel command
//     line (tether.GuestinfoParam), as QEMU has no VMware backdoor.
//
// When a stand-in's QEMU ends (the guest powered off, or it crashed) the
// runner powers the simulated VM off, as an ESX host would; after a clean
// exit it first writes the guest's exit mark (guestinfo.vch.exit, which
// tether on vSphere writes through the backdoor). A simulated VM powered
// off or destroyed by anyone else has its QEMU killed.
package standin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/hypervisor/vsphere"
	"github.com/vchproject/vch/internal/tether"
)

// Runner boots stand-ins for the powered-on VMs of one folder.
type Runner struct {
	// Client is a session on the simulator.
	Client *vim25.Client
	// Folder is the VM folder whose VMs get stand-ins (the VCH's).
	Folder *object.Folder
	// Datastores maps each simulated datastore's name to its directory
	// on this host.
	Datastores map[string]string
	// NIC says where a VM's NIC (its index among the VM's NICs and its
	// MAC) is plugged in: a bridge in a named network namespace, where
	// the portgroup it is on delivers its frames. ok false leaves the
	// stand-in without that NIC.
	NIC func(vm string, index int, mac string) (netns, bridge string, ok bool)
	// RunDir holds each stand-in's console log and QEMU log, in a
	// directory named after its VM.
	RunDir string
	// TSCKHz is the guest's tsc_early_khz; 0 reads the host's.
	TSCKHz int
	// Logf, if set, receives what the runner does.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	running map[types.ManagedObjectReference]*standIn
}

type standIn struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	qmp  string // the QMP socket
	uri  string // the serial port's service URI its channel connects to
}

// Run watches the folder every 50 ms until ctx ends, then kills every
// stand-in it started and returns.
func (r *Runner) Run(ctx context.Context) {
	r.mu.Lock()
	r.running = map[types.ManagedObjectReference]*standIn{}
	r.mu.Unlock()
	defer r.killAll()
	for {
		r.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *Runner) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

func (r *Runner) killAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.running {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// scan starts stand-ins for newly powered-on VMs and ends those whose VM
// is no longer on.
func (r *Runner) scan(ctx context.Context) {
	v, err := view.NewManager(r.Client).CreateContainerView(ctx, r.Folder.Reference(), []string{"VirtualMachine"}, false)
	if err != nil {
		return
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "config", "runtime.powerState"}, &vms); err != nil {
		return
	}
	on := map[types.ManagedObjectReference]bool{}
	for _, o := range vms {
		if o.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || o.Config == nil {
			continue
		}
		on[o.Self] = true
		r.mu.Lock()
		running, ok := r.running[o.Self]
		r.mu.Unlock()
		if ok {
			// A serial port given a new backing and connected: an ESX
			// host connects it to the new URI (a restarted daemon's
			// driver adopting the VM), so QEMU's chardev is swapped.
			if uri, on := serialPort(o); on && uri != running.uri {
				if err := running.retarget(uri); err != nil {
					r.logf("stand-in for %s: serial port to %s: %v", o.Name, uri, err)
				} else {
					r.logf("stand-in for %s: serial port connected to %s", o.Name, uri)
				}
			}
			continue
		}
		s, err := r.boot(ctx, o)
		if err != nil {
			r.logf("stand-in for %s: %v", o.Name, err)
			on[o.Self] = false
			continue
		}
		r.mu.Lock()
		r.running[o.Self] = s
		r.mu.Unlock()
		go r.watch(o.Self, s, o)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for ref, s := range r.running {
		if !on[ref] {
			select {
			case <-s.done:
			default:
				r.logf("stand-in for %s: its VM is no longer on: killed", s.name)
				_ = s.cmd.Process.Kill()
			}
		}
	}
}

// watch waits for s's QEMU to end and powers its VM off.
func (r *Runner) watch(ref types.ManagedObjectReference, s *standIn, o mo.VirtualMachine) {
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm := object.NewVirtualMachine(r.Client, ref)
	if s.err == nil {
		info := extraConfig(o)
		if secret, err := hex.DecodeString(info[vsphere.GuestinfoChannelSecret]); err == nil {
			t, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
				&types.OptionValue{Key: "guestinfo.vch.exit", Value: vsphere.ExitMark(secret, info[vsphere.GuestinfoName])},
			}})
			if err == nil {
				_ = t.Wait(ctx)
			}
		}
	}
	r.logf("stand-in for %s ended (%v): powering its VM off", s.name, s.err)
	if t, err := vm.PowerOff(ctx); err == nil {
		_ = t.Wait(ctx)
	}
	r.mu.Lock()
	if r.running[ref] == s {
		delete(r.running, ref)
	}
	r.mu.Unlock()
}

func extraConfig(o mo.VirtualMachine) map[string]string {
	m := map[string]string{}
	for _, ov := range o.Config.ExtraConfig {
		if v := ov.GetOptionValue(); v != nil {
			if s, ok := v.Value.(string); ok {
				m[v.Key] = s
			}
		}
	}
	return m
}

// local is the host path of the datastore path p.
func (r *Runner) local(p string) (string, error) {
	var dp object.DatastorePath
	if !dp.FromString(p) {
		return "", fmt.Errorf("datastore path %q", p)
	}
	dir, ok := r.Datastores[dp.Datastore]
	if !ok {
		return "", fmt.Errorf("disk %q: datastore %s unknown", p, dp.Datastore)
	}
	return filepath.Join(dir, dp.Path), nil
}

// boot starts o's stand-in.
func (r *Runner) boot(ctx context.Context, o mo.VirtualMachine) (*standIn, error) {
	info := extraConfig(o)
	runDir := filepath.Join(r.RunDir, o.Name)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, err
	}
	var iso, serialURI string
	var macs []string
	type disk struct {
		unit int32
		file string
		ro   bool
	}
	var disks []disk
	for _, dev := range o.Config.Hardware.Device {
		switch dev := dev.(type) {
		case *types.VirtualCdrom:
			if b, ok := dev.Backing.(*types.VirtualCdromIsoBackingInfo); ok {
				iso = b.FileName
			}
		case types.BaseVirtualEthernetCard:
			macs = append(macs, dev.GetVirtualEthernetCard().MacAddress)
		case *types.VirtualDisk:
			b, ok := dev.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				return nil, fmt.Errorf("disk %d: backing %T", dev.Key, dev.Backing)
			}
			file, err := r.realise(b)
			if err != nil {
				return nil, err
			}
			disks = append(disks, disk{unit: *dev.UnitNumber, file: file, ro: b.DiskMode == string(types.VirtualDiskModeIndependent_nonpersistent)})
		}
	}
	serialURI, _ = serialPort(o)
	sort.Slice(disks, func(i, j int) bool { return disks[i].unit < disks[j].unit })
	kernel, initrd, err := r.bootFiles(iso, runDir)
	if err != nil {
		return nil, err
	}
	tsc := r.TSCKHz
	if tsc == 0 {
		tsc = hostTSCKHz()
	}
	args := []string{
		"-M", "microvm,x-option-roms=off,pit=on,pic=on,rtc=on,isa-serial=on,pcie=on",
		"-accel", "tcg", "-cpu", "qemu64,+arat",
		"-m", strconv.Itoa(int(o.Config.Hardware.MemoryMB)), "-smp", strconv.Itoa(int(o.Config.Hardware.NumCPU)),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-serial", "file:" + filepath.Join(runDir, "console.log"),
	}
	if len(disks) > 0 {
		args = append(args, "-device", "pvscsi,id=scsi0")
	}
	for i, d := range disks {
		ro := ""
		if d.ro {
			ro = ",readonly=on"
		}
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,format=vmdk,if=none,id=d%d%s", d.file, i, ro),
			"-device", fmt.Sprintf("scsi-hd,drive=d%d,bus=scsi0.0,channel=0,scsi-id=%d,lun=0", i, d.unit))
	}
	var taps []*os.File
	defer func() {
		for _, f := range taps {
			f.Close() // QEMU holds its own copies
		}
	}()
	for i, mac := range macs {
		if r.NIC == nil {
			break
		}
		ns, bridge, ok := r.NIC(o.Name, i, mac)
		if !ok {
			continue
		}
		f, err := tapIn(ns, bridge, fmt.Sprintf("vs%.8s%d", o.Name, i))
		if err != nil {
			return nil, fmt.Errorf("NIC %s: %w", mac, err)
		}
		taps = append(taps, f)
		n := len(taps) - 1
		args = append(args, "-netdev", fmt.Sprintf("tap,id=net%d,fd=%d", n, 3+n),
			"-device", fmt.Sprintf("vmxnet3,netdev=net%d,mac=%s", n, mac))
	}
	addr, ok := strings.CutPrefix(serialURI, "tcp://")
	if !ok {
		return nil, fmt.Errorf("serial port URI %q: want tcp://", serialURI)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("serial port URI %q: %w", serialURI, err)
	}
	args = append(args, "-chardev", "socket,id=channel,host="+host+",port="+port, "-device", "isa-serial,chardev=channel,index=1")
	qmpPath := filepath.Join(runDir, "qmp.sock")
	_ = os.Remove(qmpPath)
	args = append(args, "-qmp", "unix:"+qmpPath+",server=on,wait=off")
	keep := map[string]string{}
	for k, v := range info {
		if strings.HasPrefix(k, "guestinfo.") {
			keep[k] = v
		}
	}
	cmdline := []string{"console=ttyS0", "reboot=t", "panic=-1", "tsc=reliable", "tsc_early_khz=" + strconv.Itoa(tsc), "8250.nr_uarts=2",
		info[vsphere.GuestinfoCmdline], tether.ChannelParam + "=serial", tether.SerialDeviceParam + "=ttyS1",
		tether.GuestinfoParam + "=" + tether.EncodeGuestinfo(keep)}
	args = append(args, "-append", strings.Join(cmdline, " "))
	cmd := exec.Command("qemu-system-x86_64", args...)
	logf, err := os.Create(filepath.Join(runDir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = taps
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r.logf("stand-in for %s: QEMU %d with %d disks, channel %s", o.Name, cmd.Process.Pid, len(disks), serialURI)
	s := &standIn{name: o.Name, cmd: cmd, done: make(chan struct{}), qmp: qmpPath, uri: serialURI}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	return s, nil
}

// realise makes the disk of backing b readable by QEMU and returns its
// host path: its parent first, then, for a delta disk the simulator only
// recorded, a qemu-img overlay over the parent; a base disk (an image's
// or a volume's, imported by NFC, whose upload vcsimtest keeps) gets back
// the extent a move renamed.
func (r *Runner) realise(b *types.VirtualDiskFlatVer2BackingInfo) (string, error) {
	file, err := r.local(b.FileName)
	if err != nil {
		return "", err
	}
	if b.Parent != nil {
		parent, err := r.realise(b.Parent)
		if err != nil {
			return "", err
		}
		if simulated(file) {
			if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", file).CombinedOutput(); err != nil {
				return "", fmt.Errorf("delta disk %s over %s: %s: %w", file, parent, out, err)
			}
		}
		return file, nil
	}
	if !simulated(file) {
		return file, nil
	}
	// The extent the simulator's descriptor names (a name from the
	// disk's creation, kept by a move).
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	desc, err := vmdk.ParseDescriptor(f)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("base disk %s: descriptor: %w", file, err)
	}
	if len(desc.Extent) != 1 {
		return "", fmt.Errorf("base disk %s: %d extents, want 1", file, len(desc.Extent))
	}
	flat := filepath.Join(filepath.Dir(file), desc.Extent[0].Info)
	// The disk's own extent, which the simulator's move renamed after
	// the disk (NAME-flat.vmdk) without rewriting the descriptor: QEMU
	// gets a descriptor of the runner's naming it, so nothing is added
	// to the simulated datastore (whose directories the driver removes
	// when empty).
	moved := strings.TrimSuffix(file, ".vmdk") + "-flat.vmdk"
	if _, err := os.Lstat(flat); err == nil || moved == flat {
		return file, nil
	}
	if _, err := os.Stat(moved); err != nil {
		return "", fmt.Errorf("disk %s: no extent %s nor %s", file, flat, moved)
	}
	desc.Extent[0].Info = moved
	sum := sha256.Sum256([]byte(file))
	fixed := filepath.Join(r.RunDir, "disks", hex.EncodeToString(sum[:8])+".vmdk")
	var buf bytes.Buffer
	if err := desc.Write(&buf); err != nil {
		return "", fmt.Errorf("base disk %s: descriptor: %w", file, err)
	}
	if err := os.MkdirAll(filepath.Dir(fixed), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(fixed), "desc-")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(buf.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), fixed) // atomic: stand-ins may share the disk
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("base disk %s: descriptor: %w", file, err)
	}
	return fixed, nil
}

// simulated reports whether file is still the simulator's descriptor
// (text), not a disk QEMU made.
func simulated(file string) bool {
	b := make([]byte, 32)
	f, err := os.Open(file)
	if err != nil {
		return true
	}
	defer f.Close()
	n, _ := f.Read(b)
	return bytes.HasPrefix(b[:n], []byte("# Disk DescriptorFile"))
}

// bootFiles extracts the kernel and initramfs from the boot ISO (the
// files ImportBoot put there) into runDir.
func (r *Runner) bootFiles(iso, runDir string) (string, string, error) {
	local, err := r.local(iso)
	if err != nil {
		return "", "", err
	}
	kernel, initrd := filepath.Join(runDir, "vmlinuz"), filepath.Join(runDir, "initrd.img")
	_ = os.Remove(kernel)
	_ = os.Remove(initrd)
	out, err := exec.Command("xorriso", "-osirrox", "on", "-indev", local, "-extract", "/vmlinuz", kernel, "-extract", "/initrd.img", initrd).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("boot ISO %s: xorriso: %s: %w", iso, out, err)
	}
	return kernel, initrd, nil
}

// tapIn opens a tap named name in the network namespace ns, attached
// to bridge there and up; the tap goes when its last descriptor closes.
func tapIn(ns, bridge, name string) (*os.File, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	defer netns.Set(orig)
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
	link, err := netlink.LinkByName(name)
	if err == nil {
		var br netlink.Link
		if br, err = netlink.LinkByName(bridge); err == nil {
			if err = netlink.LinkSetMaster(link, br); err == nil {
				err = netlink.LinkSetUp(link)
			}
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tap %s on %s: %w", name, bridge, err)
	}
	return f, nil
}

// hostTSCKHz is the host's TSC rate for the guest's tsc_early_khz.
func hostTSCKHz() int {
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

// serialPort is the service URI of o's network-backed serial port and
// whether the port is connected.
func serialPort(o mo.VirtualMachine) (string, bool) {
	for _, dev := range o.Config.Hardware.Device {
		if p, ok := dev.(*types.VirtualSerialPort); ok {
			if b, ok := p.Backing.(*types.VirtualSerialPortURIBackingInfo); ok {
				return b.ServiceURI, p.Connectable == nil || p.Connectable.Connected
			}
		}
	}
	return "", false
}

// retarget connects the stand-in's channel chardev to uri ("tcp://HOST:PORT")
// in place of the one it had (QMP chardev-change: the guest's UART keeps
// running, its bytes go to the new peer).
func (s *standIn) retarget(uri string) error {
	addr, ok := strings.CutPrefix(uri, "tcp://")
	if !ok {
		return fmt.Errorf("serial port URI %q: want tcp://", uri)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("serial port URI %q: %w", uri, err)
	}
	mon, err := qmp.NewSocketMonitor("unix", s.qmp, 5*time.Second)
	if err != nil {
		return err
	}
	if err := mon.Connect(); err != nil {
		return err
	}
	defer mon.Disconnect()
	cmd, err := json.Marshal(map[string]any{"execute": "chardev-change", "arguments": map[string]any{
		"id": "channel",
		"backend": map[string]any{"type": "socket", "data": map[string]any{
			"addr":   map[string]any{"type": "inet", "data": map[string]any{"host": host, "port": port}},
			"server": false,
		}},
	}})
	if err != nil {
		return err
	}
	if _, err := mon.Run(cmd); err != nil {
		return err
	}
	s.uri = uri
	return nil
}
