package vsphere

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/hvtest"
)

func TestCreateDeleteVCH(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	before := e.vmNames()
	d := e.driver()
	if _, err := d.Start(ctx, spec("early")); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start before CreateVCH: %v, want FailedPrecondition", err)
	}
	if err := d.CreateVCH(ctx); err != nil {
		t.Fatalf("CreateVCH: %v", err)
	}
	if err := d.CreateVCH(ctx); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second CreateVCH: %v, want AlreadyExists", err)
	}

	f := find.NewFinder(e.c, false).SetDatacenter(e.dc)
	pool, err := f.ResourcePool(ctx, simCluster+"/Resources/"+testVCH)
	if err != nil {
		t.Fatalf("the VCH's pool: %v", err)
	}
	var p mo.ResourcePool
	if err := pool.Properties(ctx, pool.Reference(), []string{"config"}, &p); err != nil {
		t.Fatal(err)
	}
	if l := p.Config.CpuAllocation.Limit; l == nil || *l != 2000 {
		t.Errorf("pool CPU limit = %v, want 2000 MHz", l)
	}
	if l := p.Config.MemoryAllocation.Limit; l == nil || *l != 4096 {
		t.Errorf("pool memory limit = %v, want 4096 MiB", l)
	}
	if _, err := f.Folder(ctx, "/"+simDC+"/vm/"+testVCH); err != nil {
		t.Errorf("the VCH's folder: %v", err)
	}
	if !e.exists("[" + simDS + "] " + testVCH) {
		t.Errorf("image store [%s] %s not made", simDS, testVCH)
	}
	images := "[" + simDS + "] " + testVCH + "/images"

	// Give the VCH what it holds when in use: a base image, an overlay
	// (so the helper VM), and a running VM on them.
	base := e.baseDisk(images + "/base.vmdk")
	overlay, err := d.CreateOverlay(ctx, base, images+"/c1/rw.vmdk", 0)
	if err != nil {
		t.Fatalf("CreateOverlay: %v", err)
	}
	s := spec("c1")
	s.Disks = []hypervisor.Disk{overlay}
	st := e.start(d, s)
	if e.vm(HelperVM) == nil {
		t.Fatalf("no helper VM %s after CreateOverlay", HelperVM)
	}

	// Something in the folder that is not the VCH's stops DeleteVCH
	// before it removes anything.
	vchFolder, _ := f.Folder(ctx, "/"+simDC+"/vm/"+testVCH)
	foreign, err := vchFolder.CreateFolder(ctx, "someone-elses")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVCH(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("DeleteVCH with a foreign folder inside: %v, want FailedPrecondition", err)
	}
	if e.vm("c1") == nil || !e.exists(overlay.Path) {
		t.Fatal("a refused DeleteVCH removed the VCH's VM or disks")
	}
	if task, err := foreign.Destroy(ctx); err != nil || task.Wait(ctx) != nil {
		t.Fatal("remove the foreign folder", err)
	}

	if err := d.DeleteVCH(ctx); err != nil {
		t.Fatalf("DeleteVCH: %v", err)
	}
	if !closedWithin(st.vm.Done(), 5*time.Second) {
		t.Fatal("the VCH's VM not done after DeleteVCH")
	}
	if err := st.vm.Status().Err; !errors.Is(err, ErrKilled) {
		t.Errorf("VM status after DeleteVCH: %v, want ErrKilled", err)
	}
	if after := e.vmNames(); !sameSet(before, after) {
		t.Errorf("VMs after DeleteVCH = %q, want those before CreateVCH, %q", after, before)
	}
	if _, err := f.ResourcePool(ctx, simCluster+"/Resources/"+testVCH); !isNotFound(err) {
		t.Errorf("pool after DeleteVCH: %v, want not found", err)
	}
	if _, err := f.Folder(ctx, "/"+simDC+"/vm/"+testVCH); !isNotFound(err) {
		t.Errorf("folder after DeleteVCH: %v, want not found", err)
	}
	for _, p := range []string{"[" + simDS + "] " + testVCH, "[" + simDS + "] c1", "[" + simDS + "] " + HelperVM} {
		if e.exists(p) {
			t.Errorf("%s still exists after DeleteVCH", p)
		}
	}
	// Nothing else: the ISO outside the image store, the other pools.
	if !e.exists(testISO) {
		t.Errorf("DeleteVCH removed %s, which is not the VCH's", testISO)
	}
	if _, err := f.ResourcePool(ctx, simCluster+"/Resources"); err != nil {
		t.Errorf("root pool after DeleteVCH: %v", err)
	}
	if err := d.DeleteVCH(ctx); err != nil {
		t.Errorf("DeleteVCH of a deleted VCH: %v, want nil", err)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestStartRunsVM(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	d := e.vch()
	images := "[" + simDS + "] " + testVCH + "/images"
	base := e.baseDisk(images + "/base.vmdk")
	base.Serial = "image0"
	overlay, err := d.CreateOverlay(ctx, base, "["+simDS+"] "+testVCH+"/containers/c1/rw.vmdk", 0)
	if err != nil {
		t.Fatalf("CreateOverlay: %v", err)
	}
	if overlay.Format != "vmdk" || overlay.ReadOnly || overlay.Path == "" {
		t.Errorf("CreateOverlay = %+v, want a writable vmdk", overlay)
	}
	overlay.Serial = "root"
	s := spec("c1")
	s.CPUs, s.MemoryMiB = 3, 382 // rounded up to vSphere's multiple of 4
	s.Disks = []hypervisor.Disk{overlay, base}
	s.NICs = []hypervisor.NIC{{MAC: "02:42:ac:11:00:02"}, {MAC: "02:42:ac:12:00:07"}}
	st := e.start(d, s)

	t.Run("Channel", func(t *testing.T) {
		ch := st.vm.Channel()
		if ch == nil {
			t.Fatal("Channel() is nil")
		}
		if _, err := ch.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(st.guest, buf); err != nil || string(buf) != "ping\n" {
			t.Fatalf("guest read %q, %v; want ping", buf, err)
		}
		if _, err := st.guest.Write([]byte("pong\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(ch, buf); err != nil || string(buf) != "pong\n" {
			t.Fatalf("driver read %q, %v; want pong", buf, err)
		}
		if st.vm.Pid() != 0 {
			t.Errorf("Pid() = %d, want 0", st.vm.Pid())
		}
		select {
		case <-st.vm.Done():
			t.Errorf("Done closed while running: %v", st.vm.Status().Err)
		default:
		}
	})

	vm := e.vm("c1")
	if vm == nil {
		t.Fatal("no VM c1 in the VCH's folder")
	}
	o := e.vmConfig(vm)
	t.Run("Hardware", func(t *testing.T) {
		if o.Config.Hardware.NumCPU != 3 || o.Config.Hardware.MemoryMB != 384 {
			t.Errorf("VM has %d vCPUs, %d MiB; want 3, 384", o.Config.Hardware.NumCPU, o.Config.Hardware.MemoryMB)
		}
		if o.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			t.Errorf("power state %s", o.Runtime.PowerState)
		}
		pool, _, _ := d.vch()
		if o.ResourcePool == nil || *o.ResourcePool != pool.Reference() {
			t.Errorf("VM in pool %v, want the VCH's %v", o.ResourcePool, pool.Reference())
		}
	})
	devices := object.VirtualDeviceList(o.Config.Hardware.Device)
	t.Run("NICs", func(t *testing.T) {
		pg, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).Network(ctx, simPG)
		if err != nil {
			t.Fatal(err)
		}
		var dvpg mo.DistributedVirtualPortgroup
		if err := property.DefaultCollector(e.c).RetrieveOne(ctx, pg.Reference(), []string{"key"}, &dvpg); err != nil {
			t.Fatal(err)
		}
		nics := devices.SelectByType((*types.VirtualEthernetCard)(nil))
		var macs []string
		for _, n := range nics {
			if _, ok := n.(*types.VirtualVmxnet3); !ok {
				t.Errorf("NIC %T, want vmxnet3", n)
			}
			c := n.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
			macs = append(macs, c.MacAddress)
			if c.AddressType != string(types.VirtualEthernetCardMacTypeManual) {
				t.Errorf("NIC %s address type %q, want manual", c.MacAddress, c.AddressType)
			}
			b, ok := c.Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo)
			if !ok || b.Port.PortgroupKey != dvpg.Key {
				t.Errorf("NIC %s backing %#v, want portgroup %s", c.MacAddress, c.Backing, dvpg.Key)
			}
		}
		if !slices.Equal(macs, []string{"02:42:ac:11:00:02", "02:42:ac:12:00:07"}) {
			t.Errorf("NIC MACs %q, want the spec's in order", macs)
		}
	})
	t.Run("Guestinfo", func(t *testing.T) {
		info := extraConfig(o)
		want := map[string]string{
			GuestinfoName: "c1", GuestinfoCmdline: "console=ttyS0 quiet", GuestinfoChannelName: "vch.tether",
			"guestinfo.vch.disk.0.serial": "root", "guestinfo.vch.disk.0.address": "scsi0:0",
			"guestinfo.vch.disk.1.serial": "image0", "guestinfo.vch.disk.1.address": "scsi0:1",
		}
		for k, v := range want {
			if info[k] != v {
				t.Errorf("%s = %q, want %q", k, info[k], v)
			}
		}
		if got := info[GuestinfoChannelSecret]; len(got) != 2*secretBytes || got != fmt.Sprintf("%x", st.secret) {
			t.Errorf("%s = %q, want the 32-byte secret the guest used", GuestinfoChannelSecret, got)
		}
	})
	t.Run("SerialPort", func(t *testing.T) {
		ports := devices.SelectByType((*types.VirtualSerialPort)(nil))
		if len(ports) != 1 {
			t.Fatalf("%d serial ports, want 1", len(ports))
		}
		b, ok := ports[0].GetVirtualDevice().Backing.(*types.VirtualSerialPortURIBackingInfo)
		if !ok {
			t.Fatalf("serial port backing %T, want a URI backing", ports[0].GetVirtualDevice().Backing)
		}
		if b.Direction != "client" || b.ServiceURI != d.ChannelURI() || !strings.HasPrefix(b.ServiceURI, "tcp://127.0.0.1:") {
			t.Errorf("serial port %s %s, want client to %s", b.Direction, b.ServiceURI, d.ChannelURI())
		}
	})
	t.Run("BootISO", func(t *testing.T) {
		cds := devices.SelectByType((*types.VirtualCdrom)(nil))
		if len(cds) != 1 {
			t.Fatalf("%d CD-ROMs, want 1", len(cds))
		}
		if b, ok := cds[0].GetVirtualDevice().Backing.(*types.VirtualCdromIsoBackingInfo); !ok || b.FileName != testISO {
			t.Errorf("CD-ROM backing %#v, want ISO %s", cds[0].GetVirtualDevice().Backing, testISO)
		}
	})
	t.Run("Disks", func(t *testing.T) {
		disks := devices.SelectByType((*types.VirtualDisk)(nil))
		if len(disks) != 2 {
			t.Fatalf("%d disks, want 2", len(disks))
		}
		rw := disks[0].GetVirtualDevice().Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if rw.FileName != overlay.Path || rw.DiskMode != string(types.VirtualDiskModePersistent) {
			t.Errorf("disk 0 %s %s, want the overlay %s persistent", rw.FileName, rw.DiskMode, overlay.Path)
		}
		if rw.Parent == nil || rw.Parent.FileName != base.Path || rw.Parent.Parent != nil {
			t.Errorf("overlay's parent chain %#v, want just the base %s", rw.Parent, base.Path)
		}
		ro := disks[1].GetVirtualDevice().Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if ro.FileName != base.Path || ro.DiskMode != string(types.VirtualDiskModeIndependent_nonpersistent) {
			t.Errorf("disk 1 %s %s, want the base %s independent_nonpersistent", ro.FileName, ro.DiskMode, base.Path)
		}
	})

	t.Run("Kill", func(t *testing.T) {
		if err := st.vm.Kill(); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		if !closedWithin(st.vm.Done(), hvtest.KillTimeout) {
			t.Fatal("Done not closed after Kill")
		}
		if err := st.vm.Status().Err; !errors.Is(err, ErrKilled) {
			t.Errorf("Status().Err = %v, want ErrKilled", err)
		}
		if err := st.vm.Kill(); err != nil {
			t.Errorf("second Kill: %v", err)
		}
		if e.vm("c1") != nil {
			t.Error("VM c1 still in the inventory after Kill")
		}
		if e.exists("[" + simDS + "] c1") {
			t.Error("VM c1's directory still on the datastore after Kill")
		}
		if !e.exists(overlay.Path) || !e.exists(base.Path) {
			t.Error("Kill deleted the VM's disks; they are the caller's")
		}
		_ = st.guest.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.vm.Channel().Read(make([]byte, 1)); err == nil {
			t.Error("channel still readable after Kill")
		}
		// The name is free again.
		st2 := e.start(d, spec("c1"))
		if err := st2.vm.Kill(); err != nil {
			t.Error(err)
		}
	})
}

func TestOverlayChains(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	d := e.vch()
	dir := "[" + simDS + "] " + testVCH + "/images"
	base := e.baseDisk(dir + "/base.vmdk")
	mid, err := d.CreateOverlay(ctx, base, dir+"/mid.vmdk", 0)
	if err != nil {
		t.Fatalf("CreateOverlay: %v", err)
	}
	mid.ReadOnly = true
	top, err := d.CreateOverlay(ctx, mid, "["+simDS+"] "+testVCH+"/c/top.vmdk", 0)
	if err != nil {
		t.Fatalf("CreateOverlay over an overlay: %v", err)
	}
	s := spec("chained")
	s.Disks = []hypervisor.Disk{top}
	e.start(d, s)
	o := e.vmConfig(e.vm("chained"))
	disks := object.VirtualDeviceList(o.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil))
	b := disks[0].GetVirtualDevice().Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	var chain []string
	for p := b.Parent; p != nil; p = p.Parent {
		chain = append(chain, p.FileName)
	}
	if !slices.Equal(chain, []string{mid.Path, base.Path}) {
		t.Errorf("parent chain %q, want [%s %s]", chain, mid.Path, base.Path)
	}
	// The helper VM holds no disk once an overlay is made.
	hv := e.vmConfig(e.vm(HelperVM))
	if n := len(object.VirtualDeviceList(hv.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil))); n != 0 {
		t.Errorf("helper VM holds %d disks, want 0", n)
	}
	if hv.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("helper VM is %s", hv.Runtime.PowerState)
	}

	for _, tc := range []struct {
		name      string
		base      hypervisor.Disk
		path      string
		size      int64
		is        func(error) bool
		wantClass string
	}{
		{"exists", base, top.Path, 0, errdefs.IsAlreadyExists, "AlreadyExists"},
		{"missing_base", hypervisor.Disk{Path: dir + "/nope.vmdk", Format: "vmdk"}, dir + "/x.vmdk", 0, errdefs.IsNotFound, "NotFound"},
		{"qcow2_base", hypervisor.Disk{Path: dir + "/b.qcow2", Format: "qcow2"}, dir + "/y.vmdk", 0, errdefs.IsInvalidArgument, "InvalidArgument"},
		{"host_path", base, "/tmp/rw.vmdk", 0, errdefs.IsInvalidArgument, "InvalidArgument"},
		{"grow", base, dir + "/z.vmdk", 1 << 30, errdefs.IsNotImplemented, "NotImplemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := d.CreateOverlay(ctx, tc.base, tc.path, tc.size); !tc.is(err) {
				t.Errorf("CreateOverlay: %v, want %s", err, tc.wantClass)
			}
		})
	}
	if e.exists(dir+"/x.vmdk") || e.exists(dir+"/z.vmdk") {
		t.Error("a refused CreateOverlay left a disk")
	}
}

func TestHelloRefused(t *testing.T) {
	e := newSim(t)
	d := e.vch()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	res := startAsync(ctx, d, spec("c1"))
	g := guest{e: e, d: d, name: "c1"}
	secret, err := g.secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wrong := append([]byte(nil), secret...)
	wrong[0] ^= 1

	// refused dials c and sends what send writes after reading the
	// nonce; it wants the connection closed and Start still waiting.
	refused := func(t *testing.T, send func(c net.Conn, nonce string)) {
		c, err := net.DialTimeout("tcp", g.addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(helloTimeout + 5*time.Second))
		line, err := readLine(c, maxHello)
		if err != nil {
			t.Fatal(err)
		}
		send(c, strings.TrimPrefix(line, helloMagic+" "))
		// Closed with the bad hello unread is a reset.
		if b, err := io.ReadAll(c); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(b) != 0 {
			t.Errorf("after a bad hello the driver sent %q (%v), want the connection closed", b, err)
		}
		select {
		case r := <-res:
			t.Fatalf("Start returned after a bad hello: %v", r.err)
		default:
		}
	}
	t.Run("leftovers", func(t *testing.T) {
		// Lines that are no hello (what a guest's last session still
		// wrote) get no answer; the nudge after them gets the listener's
		// line again; more than maxLeftovers of them close the
		// connection.
		refused(t, func(c net.Conn, nonce string) {
			fmt.Fprintf(c, "\x17\x03\x03\x00\x13 GET / HTTP/1.0\n\n")
			line, err := readLine(c, maxHello)
			if err != nil || line != helloMagic+" "+nonce {
				t.Fatalf("answer to leftovers and a nudge: %q, %v; want the nonce line once", line, err)
			}
			junk := strings.Repeat("\x17\x03\x03\x40\x00"+strings.Repeat("x", 1000)+"\n", maxLeftovers/1000+1)
			if _, err := io.WriteString(c, junk); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("too_long", func(t *testing.T) {
		refused(t, func(c net.Conn, _ string) { c.Write([]byte(strings.Repeat("x", maxHello+maxLeftovers+1))) })
	})
	t.Run("unknown_name", func(t *testing.T) {
		refused(t, func(c net.Conn, nonce string) {
			fmt.Fprintf(c, "%s %s %s\n", helloMagic, "c2", GuestMAC(secret, "c2", nonce))
		})
	})
	t.Run("wrong_secret", func(t *testing.T) {
		refused(t, func(c net.Conn, nonce string) {
			fmt.Fprintf(c, "%s %s %s\n", helloMagic, "c1", GuestMAC(wrong, "c1", nonce))
		})
	})
	t.Run("replayed", func(t *testing.T) {
		// A MAC for another nonce (a recorded hello) does not pass.
		refused(t, func(c net.Conn, _ string) {
			fmt.Fprintf(c, "%s %s %s\n", helloMagic, "c1", GuestMAC(secret, "c1", strings.Repeat("00", nonceBytes)))
		})
	})

	c, err := g.hello("c1", secret)
	if err != nil {
		t.Fatalf("good hello after bad ones: %v", err)
	}
	defer c.Close()
	r := <-res
	if r.err != nil {
		t.Fatalf("Start: %v", r.err)
	}
	defer r.vm.Kill()
	t.Run("second_hello", func(t *testing.T) {
		// The channel is handed out once.
		if c2, err := g.hello("c1", secret); err == nil {
			c2.Close()
			t.Error("a second good hello for a connected VM was accepted")
		}
	})
	if n := e.logged("guest channel refused", 6); n < 6 {
		t.Errorf("%d refusals logged, want 6:\n%s", n, e.logs.String())
	}
	if strings.Contains(e.logs.String(), fmt.Sprintf("%x", secret)) {
		t.Error("the logs hold the channel secret")
	}
}

func TestStartTimeout(t *testing.T) {
	e := newSim(t)
	d := e.driver(func(c *Config) { c.ConnectTimeout = 500 * time.Millisecond })
	if err := d.CreateVCH(t.Context()); err != nil {
		t.Fatal(err)
	}
	secret := make(chan []byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		s, _ := (guest{e: e, d: d, name: "lonely"}).secret(ctx)
		secret <- s
	}()
	vm, err := d.Start(t.Context(), spec("lonely"))
	if !errdefs.IsUnavailable(err) {
		if vm != nil {
			vm.Kill()
		}
		t.Fatalf("Start with no guest: %v, want Unavailable", err)
	}
	if e.vm("lonely") != nil {
		t.Error("a Start that timed out left its VM")
	}
	// A hello that comes too late is refused, though its secret is right.
	s := <-secret
	if len(s) != secretBytes {
		t.Fatalf("the fake guest read no secret (%d bytes)", len(s))
	}
	if _, err := (guest{e: e, d: d, name: "lonely"}).hello("lonely", s); err == nil {
		t.Error("a late hello was accepted")
	}

	t.Run("EndedBeforeHello", func(t *testing.T) {
		// A VM powered off before its guest connects fails Start at
		// once, not after the connect timeout. A second driver on the
		// same VCH, with a long timeout.
		d2 := e.driver(func(c *Config) { c.ConnectTimeout = time.Minute })
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		go func() {
			if _, err := (guest{e: e, d: d2, name: "doomed"}).waitInfo(ctx); err != nil {
				return
			}
			if task, err := e.vm("doomed").PowerOff(ctx); err == nil {
				_ = task.Wait(ctx)
			}
		}()
		begin := time.Now()
		vm, err := d2.Start(ctx, spec("doomed"))
		if !errdefs.IsUnavailable(err) || !errors.Is(err, ErrPoweredOff) {
			if vm != nil {
				vm.Kill()
			}
			t.Fatalf("Start of a VM powered off before its hello: %v, want Unavailable and ErrPoweredOff", err)
		}
		if time.Since(begin) > 10*time.Second {
			t.Errorf("Start took %s to notice", time.Since(begin))
		}
		if e.vm("doomed") != nil {
			t.Error("the VM is left behind")
		}
	})
}

func TestEndedBehindTheDriversBack(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	d := e.vch()
	off := func(t *testing.T, name string, mark string) hypervisor.ExitStatus {
		t.Helper()
		st := e.start(d, spec(name))
		vm := e.vm(name)
		if mark != "" {
			// What the guest's "info-set guestinfo.vch.exit …" does.
			task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
				&types.OptionValue{Key: exitKey, Value: mark},
			}})
			if err != nil || task.Wait(ctx) != nil {
				t.Fatal("set the exit mark", err)
			}
		}
		before := time.Now()
		task, err := vm.PowerOff(ctx)
		if err != nil || task.Wait(ctx) != nil {
			t.Fatal("power off", err)
		}
		if !closedWithin(st.vm.Done(), 5*time.Second) {
			t.Fatal("Done not closed 5 s after the VM was powered off")
		}
		status := st.vm.Status()
		if status.At.Before(before) || status.At.After(time.Now()) {
			t.Errorf("Status().At = %v, want after %v", status.At, before)
		}
		if e.vm(name) != nil {
			t.Errorf("VM %s still in the inventory after it ended", name)
		}
		_ = st.guest.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.vm.Channel().Read(make([]byte, 1)); err == nil {
			t.Error("channel still readable after the VM ended")
		}
		if err := st.vm.Kill(); err != nil {
			t.Errorf("Kill after the end: %v", err)
		}
		return status
	}
	t.Run("PoweredOff", func(t *testing.T) {
		if err := off(t, "c1", "").Err; !errors.Is(err, ErrPoweredOff) {
			t.Errorf("Status().Err = %v, want ErrPoweredOff", err)
		}
	})
	t.Run("ForgedMark", func(t *testing.T) {
		if err := off(t, "c2", ExitMark(make([]byte, secretBytes), "c2")).Err; !errors.Is(err, ErrPoweredOff) {
			t.Errorf("Status().Err = %v with a mark of the wrong secret, want ErrPoweredOff", err)
		}
	})
	t.Run("GuestPowerOff", func(t *testing.T) {
		// The mark needs the VM's secret, which the fake guest read from guestinfo.
		name := "c3"
		st := e.start(d, spec(name))
		vm := e.vm(name)
		task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
			&types.OptionValue{Key: exitKey, Value: ExitMark(st.secret, name)},
		}})
		if err != nil || task.Wait(ctx) != nil {
			t.Fatal("set the exit mark", err)
		}
		if task, err = vm.PowerOff(ctx); err != nil || task.Wait(ctx) != nil {
			t.Fatal("power off", err)
		}
		if !closedWithin(st.vm.Done(), 5*time.Second) {
			t.Fatal("Done not closed 5 s after the guest powered off")
		}
		if err := st.vm.Status().Err; err != nil {
			t.Errorf("Status().Err = %v after the guest's marked power-off, want nil", err)
		}
	})
}

func TestInvalidSpecs(t *testing.T) {
	e := newSim(t)
	d := e.vch()
	var n atomic.Int32
	valid := func(t *testing.T) hypervisor.Spec {
		s := spec(fmt.Sprintf("noguest%d", n.Add(1)))
		s.RuntimeDir = t.TempDir()
		return s
	}
	leftovers := func(t *testing.T, s hypervisor.Spec) []string {
		var left []string
		for _, name := range e.vmNames() {
			if s.Name != "" && name == s.Name {
				left = append(left, name)
			}
		}
		return left
	}
	hvtest.RunWithoutGuest(t, func(t *testing.T) hypervisor.Driver { return d }, hvtest.NoGuest{
		Spec:          valid,
		BadDisk:       hypervisor.Disk{Path: "[" + simDS + "] x/disk.qcow2", Format: "qcow2"},
		MissingKernel: "[" + simDS + "] iso/no-such.iso",
		Leftovers:     leftovers,
	})

	// This driver's own forms.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	many := make([]hypervisor.Disk, maxDisks+1)
	for i := range many {
		many[i] = hypervisor.Disk{Path: fmt.Sprintf("[%s] d/%d.vmdk", simDS, i), Format: "vmdk"}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*hypervisor.Spec)
	}{
		{"host_kernel", func(s *hypervisor.Spec) { s.Kernel = "/boot/vmlinuz" }},
		{"initrd", func(s *hypervisor.Spec) { s.Initrd = "[" + simDS + "] iso/initrd.img" }},
		{"bad_mac", func(s *hypervisor.Spec) { s.NICs = []hypervisor.NIC{{MAC: "01:00:5e:00:00:01"}} }},
		{"host_disk", func(s *hypervisor.Spec) { s.Disks = []hypervisor.Disk{{Path: "/var/lib/rw.vmdk", Format: "vmdk"}} }},
		{"bad_serial", func(s *hypervisor.Spec) {
			s.Disks = []hypervisor.Disk{{Path: "[" + simDS + "] d/a.vmdk", Format: "vmdk", Serial: "no spaces"}}
		}},
		{"too_many_disks", func(s *hypervisor.Spec) { s.Disks = many }},
		{"long_name", func(s *hypervisor.Spec) { s.Name = strings.Repeat("a", maxName+1) }},
		{"helper_name", func(s *hypervisor.Spec) { s.Name = HelperVM }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := valid(t)
			tc.mutate(&s)
			vm, err := d.Start(t.Context(), s)
			if err == nil {
				vm.Kill()
				t.Fatal("Start accepted a bad spec")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Start: %v, want InvalidArgument", err)
			}
			if left := leftovers(t, s); len(left) > 0 {
				t.Errorf("refused Start left VMs %q", left)
			}
		})
	}
	t.Run("ExactCapabilities", func(t *testing.T) {
		want := hypervisor.Capabilities{Accelerator: "vsphere", Adopt: true}
		if c := d.Capabilities(); c != want {
			t.Errorf("Capabilities() = %+v, want %+v", c, want)
		}
	})
}

func TestFailRedacts(t *testing.T) {
	d := &Driver{creds: secretWords{testUser, testPass}}
	err := d.fail("log in", fmt.Errorf("server said: user %s with password %s: %w", testUser, testPass, errdefs.ErrNotFound))
	if s := err.Error(); strings.Contains(s, testUser) || strings.Contains(s, testPass) || !strings.Contains(s, "user *** with password ***") {
		t.Errorf("fail() = %q, want the credentials replaced by ***", s)
	}
	if !errdefs.IsNotFound(err) {
		t.Errorf("fail() lost the class: %v", err)
	}
	if errors.Unwrap(err) != nil && strings.Contains(fmt.Sprint(errors.Unwrap(err)), testPass) {
		t.Error("the unredacted error is reachable through Unwrap")
	}
	if s := redactURL("https://" + testUser + ":" + testPass + "@vc.example/sdk"); s != "https://***@vc.example/sdk" {
		t.Errorf("redactURL = %q", s)
	}
}

func TestCredentialsNeverShown(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	leaks := func(t *testing.T, what, s string) {
		t.Helper()
		if strings.Contains(s, testPass) || strings.Contains(s, testUser) {
			t.Errorf("%s shows the credentials: %s", what, s)
		}
	}
	cfg := e.config()
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		leaks(t, "Config "+format, fmt.Sprintf(format, cfg))
		leaks(t, "*Config "+format, fmt.Sprintf(format, &cfg))
	}
	if !strings.Contains(cfg.String(), e.server.URL.Host) {
		t.Errorf("Config.String() = %s, want the server's host in it", cfg.String())
	}

	t.Run("WrongPassword", func(t *testing.T) {
		bad := e.config()
		bad.URL = strings.Replace(bad.URL, testPass, testPass+"-wrong", 1)
		_, err := New(ctx, bad)
		if !errdefs.IsUnauthorized(err) {
			t.Errorf("New with a wrong password: %v, want Unauthenticated", err)
		}
		if err != nil {
			t.Logf("New with a wrong password: %v", err)
			leaks(t, "its error", err.Error())
			leaks(t, "its error", fmt.Sprintf("%+v %#v", err, err))
			if strings.Contains(err.Error(), testPass+"-wrong") {
				t.Errorf("error shows the wrong password: %v", err)
			}
		}
	})
	t.Run("WrongThumbprint", func(t *testing.T) {
		bad := e.config()
		bad.Insecure = false
		bad.Thumbprint = strings.TrimSuffix(strings.Repeat("AB:", 20), ":")
		_, err := New(ctx, bad)
		if err == nil {
			t.Fatal("New trusted a server whose thumbprint does not match")
		}
		t.Logf("New with a wrong thumbprint: %v", err)
		leaks(t, "its error", err.Error())
	})
	t.Run("RightThumbprint", func(t *testing.T) {
		d := e.driver(func(c *Config) {
			c.Insecure = false
			c.Thumbprint = e.server.CertificateInfo().ThumbprintSHA1
		})
		leaks(t, "Driver %v", fmt.Sprintf("%v %+v %#v %s", d, d, d, d))
	})
	t.Run("BadConfigs", func(t *testing.T) {
		for _, u := range []string{
			"http://" + testUser + ":" + testPass + "@" + e.server.URL.Host + "/sdk",
			"https://" + testUser + "@" + e.server.URL.Host + "/sdk",
			"https://" + testUser + ":" + testPass + "@" + e.server.URL.Host + "/sdk%zz",
		} {
			bad := e.config()
			bad.URL = u
			_, err := New(ctx, bad)
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("New(%s): %v, want InvalidArgument", redactURL(u), err)
			}
			if err != nil {
				leaks(t, "its error", err.Error())
			}
		}
	})
	t.Run("Operations", func(t *testing.T) {
		// Errors of a logged-in driver hold no credentials either.
		d := e.vch()
		_, err := d.CreateOverlay(ctx, hypervisor.Disk{Path: "[" + simDS + "] none/base.vmdk", Format: "vmdk"}, "["+simDS+"] none/rw.vmdk", 0)
		if err == nil {
			t.Fatal("CreateOverlay over a missing base succeeded")
		}
		leaks(t, "CreateOverlay error", err.Error())
		s := spec("c1")
		s.Kernel = "[" + simDS + "] none/boot.iso"
		_, err = d.Start(ctx, s)
		if err == nil {
			t.Fatal("Start with a missing ISO succeeded")
		}
		leaks(t, "Start error", err.Error())
		leaks(t, "CreateVCH error", fmt.Sprint(d.CreateVCH(ctx)))
	})
}
