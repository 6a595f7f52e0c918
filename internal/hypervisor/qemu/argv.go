package qemu

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vchproject/vch/internal/hypervisor"
)

// machine is the microvm machine type with the options that make TCG boots
// of Debian kernels reliable (DESIGN.md: without pit/pic/rtc about half the
// boots hang in TSC calibration).
const machine = "microvm,x-option-roms=off,pit=on,pic=on,rtc=on,isa-serial=on"

// baseCmdline is the driver's own kernel arguments: serial console, no
// reboot loops on panic, the TSC settings that TCG needs (with
// tsc_early_khz appended), quiet boots, and highres=off.
//
// highres=off: the guest's timer is the local APIC's (no TSC deadline
// under TCG), and with high-resolution timers every hrtimer a busy guest
// arms (each Go timer, futex and epoll timeout) is a write to it, which
// QEMU's vCPU thread answers by waking its main loop to re-arm its own
// timer: 2,500 wakeups a second, the main thread at 87 % of a core and
// contending with the vCPU for QEMU's global lock during a 100 MiB
// transfer. Without them the guest's timers run on its tick (4 ms at
// Debian's HZ=250): the main thread falls to 3 %, the same transfer is
// 20–25 % faster, and an idle guest costs no more (it still stops its
// tick when idle).
const baseCmdline = "console=ttyS0 reboot=t panic=-1 tsc=reliable quiet loglevel=3 8250.nr_uarts=1 highres=off"

// tcgCmdline is added to baseCmdline under TCG: mitigations=off, as
// the guest's Spectre mitigations (retpolines, RSB filling, usercopy
// barriers: all that the 6.1 kernel enables on qemu64) defend against
// speculation by the guest's CPU, which an emulated CPU does not do,
// and are no barrier to the host CPU's speculation either (QEMU's x86
// backend emits no instruction for a guest lfence, and a retpoline's
// ret is an indirect jump through the translation-block lookup like any
// other). They cost the guest's kernel a retpoline per indirect call:
// a published port's throughput rises ~15 % without them (docs/notes.md).
// Under KVM the guest runs on the host's CPU and keeps the kernel's
// defaults.
const tcgCmdline = " mitigations=off"

// driverCmdline is the driver's own kernel arguments for accel.
func driverCmdline(accel string) string {
	if accel == AccelTCG {
		return baseCmdline + tcgCmdline
	}
	return baseCmdline
}

// defaultTSCKHz is used when the host's TSC rate cannot be read (DESIGN.md's
// measured setting).
const defaultTSCKHz = 2000000

// paths are the host files one VM uses, all inside Spec.RuntimeDir.
type paths struct {
	channel string // tether channel socket (we listen, QEMU connects)
	console string // serial console log
	pidfile string
	qmp     string // QMP monitor socket (QEMU listens)
	log     string // QEMU's own stdout and stderr
	// transfer is the transfer disk's placeholder image; "" for none.
	transfer string
}

// argv builds QEMU's command line (after the binary) for spec. The guest
// channel is a virtio-serial port whose chardev connects to our socket and
// reconnects every second after a disconnect (reconnect=1, QEMU 7.2's
// -chardev socket option; QEMU 9.2 renames it reconnect-ms), so a
// restarted daemon gets the channel back by listening on the socket again.
//
// tscKHz is the guest TSC's rate in kHz. The guest is told it at boot
// (tsc_early_khz) because calibrating under TCG hangs about half the boots;
// under TCG the guest TSC ticks at the host's rate, so a wrong value makes
// the guest clock run fast or slow by the same ratio.
func argv(spec hypervisor.Spec, accel string, tscKHz int, p paths) []string {
	return argvWith(spec, accel, tscKHz, p, vmOptions{})
}

// vmOptions are how a template is saved and restored: the same devices as
// a booted VM, the RAM in a file, and for a restore the saved state.
type vmOptions struct {
	// memPath, if set, backs guest RAM with this file (QEMU's
	// memory-backend-file): shared (memShared, a template: the guest's
	// writes land in the file) or a private copy-on-write mapping of it
	// (a restored VM: pages stay shared with the template until written).
	memPath   string
	memShared bool
	// incoming waits for a saved state instead of booting (-incoming
	// defer); RAM in the template's file is skipped both ways (migration
	// capability x-ignore-shared), so the state is device state only.
	incoming bool
	// noFreePageReporting turns the balloon's free page reporting off:
	// for a template and its restored VMs when the driver has no RAM
	// shim (Config.RAMShim), since QEMU would punch the guest's freed
	// pages out of the template's file, under every VM that maps it.
	noFreePageReporting bool
	// pluggable gives each disk a raw node (node-name diskN) over its
	// image's node (slotN: the file's, or a qcow2 node over it), so
	// PlugDisks can put another image under the device (QMP
	// blockdev-reopen of diskN with a new file child).
	pluggable bool
}

func argvWith(spec hypervisor.Spec, accel string, tscKHz int, p paths, o vmOptions) []string {
	cpu := "max"
	if accel == AccelTCG {
		cpu = "qemu64,+arat"
	}
	cmdline := driverCmdline(accel) + " tsc_early_khz=" + strconv.Itoa(tscKHz)
	if spec.Cmdline != "" {
		cmdline += " " + spec.Cmdline
	}
	m := machine
	if o.memPath != "" {
		m += ",memory-backend=mem0"
	}
	a := []string{
		"-name", "vch-" + spec.Name,
		"-M", m,
		"-accel", accel,
		"-cpu", cpu,
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-smp", strconv.Itoa(spec.CPUs),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "file:" + p.console,
		"-kernel", spec.Kernel,
		"-initrd", spec.Initrd,
		"-append", cmdline,
		"-pidfile", p.pidfile,
		"-qmp", "unix:" + escape(p.qmp) + ",server=on,wait=off",
		"-device", "virtio-serial-device,max_ports=2",
		"-chardev", "socket,id=tether,path=" + escape(p.channel) + ",reconnect=1",
		"-device", "virtserialport,chardev=tether,name=" + escape(spec.ChannelName),
	}
	if o.memPath != "" {
		share := "off"
		if o.memShared {
			share = "on"
		}
		a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=mem0,size=%dM,mem-path=%s,share=%s", spec.MemoryMiB, escape(o.memPath), share))
	}
	if o.incoming {
		// The state comes over QMP (migrate-incoming), after the
		// x-ignore-shared capability is set: QEMU 7.2 has no
		// command-line form of it.
		a = append(a, "-incoming", "defer")
	}
	// The balloon never inflates (the guest keeps its whole -m); it is
	// there for free page reporting: pages the guest frees go back to the
	// host (virtio 1.2 "Free Page Reporting", Linux's page_reporting).
	reporting := "on"
	if o.noFreePageReporting {
		reporting = "off"
	}
	a = append(a, "-device", "virtio-balloon-device,free-page-reporting="+reporting)
	for i, d := range spec.Disks {
		if o.pluggable {
			ro := "off"
			if d.ReadOnly {
				ro = "on"
			}
			dev := fmt.Sprintf("virtio-blk-device,drive=disk%d", i)
			if d.Serial != "" {
				dev += ",serial=" + escape(d.Serial)
			}
			slot := fmt.Sprintf("driver=file,node-name=slot%d,filename=%s,read-only=%s,discard=unmap", i, escape(d.Path), ro)
			if d.Format == "qcow2" {
				// The file is the qcow2 node's implicit child, so
				// blockdev-del of slotN removes both.
				slot = fmt.Sprintf("driver=qcow2,node-name=slot%d,file.driver=file,file.filename=%s,read-only=%s,discard=unmap", i, escape(d.Path), ro)
			}
			a = append(a,
				"-blockdev", slot,
				"-blockdev", fmt.Sprintf("driver=raw,node-name=disk%d,file=slot%d,read-only=%s,discard=unmap", i, i, ro),
				"-device", dev)
			continue
		}
		drive := fmt.Sprintf("id=disk%d,file=%s,format=%s,if=none,cache=writeback,discard=unmap", i, escape(d.Path), d.Format)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		dev := fmt.Sprintf("virtio-blk-device,drive=disk%d", i)
		if d.Serial != "" {
			dev += ",serial=" + escape(d.Serial)
		}
		a = append(a, "-drive", drive, "-device", dev)
	}
	// NIC i is the tap passed as the child's fd 3+i (exec.Cmd.ExtraFiles);
	// a NIC without a file (a template's) has no backend.
	for i, n := range spec.NICs {
		if n.File == nil {
			a = append(a, "-device", fmt.Sprintf("virtio-net-device,mac=%s", n.MAC))
			continue
		}
		a = append(a, "-netdev", fmt.Sprintf("tap,id=net%d,fd=%d", i, 3+i),
			"-device", fmt.Sprintf("virtio-net-device,netdev=net%d,mac=%s", i, n.MAC))
	}
	for i, sh := range spec.Shares {
		// passthrough: files keep the guest's owners and modes on the host
		// (QEMU runs as root), as a Docker bind mount shows them;
		// multidevs=remap keeps inode numbers unique across host mounts.
		fsdev := fmt.Sprintf("local,id=share%d,path=%s,security_model=passthrough,multidevs=remap", i, escape(sh.Path))
		if sh.ReadOnly {
			fsdev += ",readonly=on"
		}
		a = append(a, "-fsdev", fsdev, "-device", fmt.Sprintf("virtio-9p-device,fsdev=share%d,mount_tag=%s", i, escape(sh.Tag)))
	}
	if p.transfer != "" {
		a = append(a, transferArgs(p.transfer)...)
	}
	return a
}

// escape doubles commas, QEMU's quoting inside option values.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
