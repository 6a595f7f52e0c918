package vsphere

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/agent/serialauth"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/vsphere/vcsimtest"
)

// The simulated vCenter's only credentials: distinctive, so a leak shows.
const (
	testUser = "vch-operator-7f3a"
	testPass = "Sekr1t-Pa55-9d2c"
)

// Names in the simulated inventory.
const (
	simDC      = "DC0"
	simCluster = "/DC0/host/DC0_C0"
	simDS      = "LocalDS_0"
	simPG      = "DC0_DVPG1"
	testVCH    = "vch-test"
	testISO    = "[LocalDS_0] iso/bootstrap.iso"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sim is a simulated vCenter: a cluster of 4 hosts, 2 datastores, 2
// distributed portgroups and a VM per pool that is not the VCH's, with a
// client of the test's own.
type sim struct {
	t      testing.TB
	model  *simulator.Model
	server *simulator.Server
	c      *vim25.Client
	dc     *object.Datacenter
	ds     *object.Datastore
	logs   *syncBuffer
}

func newSim(t testing.TB, mutate ...func(*simulator.Model)) *sim {
	t.Helper()
	vs := vcsimtest.Start(t, testUser, testPass, append([]func(*simulator.Model){func(m *simulator.Model) { m.Datastore, m.Portgroup, m.Machine = 2, 2, 1 }}, mutate...)...)
	m, s, f, dc := vs.Model, vs.Server, vs.Finder, vs.Datacenter
	ctx := t.Context()
	ds, err := f.Datastore(ctx, simDS)
	if err != nil {
		t.Fatal(err)
	}
	e := &sim{t: t, model: m, server: s, c: vs.Client, dc: dc, ds: ds, logs: &syncBuffer{}}
	if err := ds.Upload(ctx, strings.NewReader("stands in for the boot ISO"), "iso/bootstrap.iso", &soap.DefaultUpload); err != nil {
		t.Fatalf("upload ISO: %v", err)
	}
	t.Cleanup(func() {
		if l := e.logs.String(); strings.Contains(l, testPass) || strings.Contains(l, testUser) {
			t.Errorf("the driver's logs hold the credentials:\n%s", l)
		}
	})
	return e
}

// config is a valid Config for the simulator.
func (e *sim) config() Config {
	return Config{
		URL:             e.server.URL.String(),
		Insecure:        true,
		Datacenter:      simDC,
		ComputeResource: simCluster,
		ResourcePool:    testVCH,
		VMFolder:        testVCH,
		ImageStore:      simDS + "/" + testVCH,
		BridgePortgroup: simPG,
		ChannelListen:   "127.0.0.1:0",
		CPULimitMHz:     2000,
		MemoryLimitMiB:  4096,
		ConnectTimeout:  10 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// driver is a driver on the simulator, closed at the test's end.
func (e *sim) driver(mutate ...func(*Config)) *Driver {
	e.t.Helper()
	cfg := e.config()
	for _, m := range mutate {
		m(&cfg)
	}
	d, err := New(e.t.Context(), cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.t.Cleanup(func() { d.Close() })
	return d
}

// vch is a driver whose VCH exists.
func (e *sim) vch() *Driver {
	e.t.Helper()
	d := e.driver()
	if err := d.CreateVCH(e.t.Context()); err != nil {
		e.t.Fatalf("CreateVCH: %v", err)
	}
	return d
}

// baseDisk creates a flat disk at the datastore path p (its directory
// made) to be an overlay's base.
func (e *sim) baseDisk(p string) hypervisor.Disk {
	e.t.Helper()
	ctx := e.t.Context()
	dp, _ := dsPathAny(p)
	if dir := pathDir(dp); dir != "" {
		if err := object.NewFileManager(e.c).MakeDirectory(ctx, e.ds.Path(dir), e.dc, true); err != nil && !isAlreadyExists(err) {
			e.t.Fatal(err)
		}
	}
	t, err := object.NewVirtualDiskManager(e.c).CreateVirtualDisk(ctx, p, e.dc, &types.FileBackedVirtualDiskSpec{
		VirtualDiskSpec: types.VirtualDiskSpec{DiskType: string(types.VirtualDiskTypeThin), AdapterType: string(types.VirtualDiskAdapterTypeLsiLogic)},
		CapacityKb:      64 * 1024,
	})
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		e.t.Fatalf("create base disk %s: %v", p, err)
	}
	return hypervisor.Disk{Path: p, Format: "vmdk", ReadOnly: true}
}

// exists reports whether the datastore path p (file or directory)
// exists.
func (e *sim) exists(p string) bool {
	e.t.Helper()
	dp, _ := dsPathAny(p)
	_, err := e.ds.Stat(e.t.Context(), dp.Path)
	if err != nil && !isNotFound(err) {
		e.t.Fatalf("stat %s: %v", p, err)
	}
	return err == nil
}

// vmNames lists the names of all VMs in the inventory.
func (e *sim) vmNames() []string {
	e.t.Helper()
	ctx := e.t.Context()
	v, err := view.NewManager(e.c).CreateContainerView(ctx, e.c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		e.t.Fatal(err)
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name"}, &vms); err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	return names
}

// vm finds the VM named name in the VCH's folder, nil if there is none.
func (e *sim) vm(name string) *object.VirtualMachine {
	e.t.Helper()
	vm, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).VirtualMachine(e.t.Context(), "/"+simDC+"/vm/"+testVCH+"/"+name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return vm
}

// vmConfig is the VM's configuration and runtime as vSphere has them.
func (e *sim) vmConfig(vm *object.VirtualMachine) mo.VirtualMachine {
	e.t.Helper()
	var o mo.VirtualMachine
	if err := vm.Properties(e.t.Context(), vm.Reference(), []string{"config", "runtime", "resourcePool", "parent"}, &o); err != nil {
		e.t.Fatal(err)
	}
	return o
}

// extraConfig is a VM's extraConfig as a map.
func extraConfig(o mo.VirtualMachine) map[string]string {
	m := map[string]string{}
	for _, b := range o.Config.ExtraConfig {
		ov := b.GetOptionValue()
		if s, ok := ov.Value.(string); ok {
			m[ov.Key] = s
		}
	}
	return m
}

// spec is a valid spec named name, booting the test ISO.
func spec(name string) hypervisor.Spec {
	return hypervisor.Spec{Name: name, Kernel: testISO, Cmdline: "console=ttyS0 quiet", MemoryMiB: 256, CPUs: 2, ChannelName: "vch.tether"}
}

// guest plays a VM's ESX host and guest: it waits for the VM to be
// powered on, reads its guestinfo like the guest, and dials the driver's
// listener like the ESX host does for the serial port.
type guest struct {
	e    *sim
	d    *Driver
	name string
	// plain: no TLS after the hello (a guest of a VM made before the
	// driver set GuestinfoChannelTLS).
	plain bool
}

// waitInfo waits (bounded by ctx) for the VM to be powered on and
// returns its guestinfo.
func (g guest) waitInfo(ctx context.Context) (map[string]string, error) {
	for {
		// Through a container view, not an inventory path: vcsim's
		// SearchIndex can panic on a VM being created in the folder it
		// searches (entityName, govmomi v0.52.0) while holding an object
		// lock it then never releases, which hung concurrent starts.
		// Names first (cheap), then the one VM's configuration: reading
		// every VM's extraConfig on each poll made the fake guests, not
		// the driver, the cost with many VMs.
		err := fmt.Errorf("no VM %s yet", g.name)
		v, verr := view.NewManager(g.e.c).CreateContainerView(ctx, g.e.c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
		if verr != nil {
			err = verr
		} else {
			refs, ferr := v.Find(ctx, []string{"VirtualMachine"}, property.Match{"name": g.name})
			_ = v.Destroy(context.WithoutCancel(ctx))
			if ferr != nil {
				err = ferr
			}
			for _, ref := range refs {
				var o mo.VirtualMachine
				if rerr := property.DefaultCollector(g.e.c).RetrieveOne(ctx, ref, []string{"name", "config.extraConfig", "runtime.powerState"}, &o); rerr != nil {
					err = rerr
					continue
				}
				if o.Config != nil && o.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
					return extraConfig(o), nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("VM %s not powered on: %w (last: %v)", g.name, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (g guest) addr() string { return strings.TrimPrefix(g.d.ChannelURI(), "tcp://") }

// secret is the VM's channel secret from its guestinfo.
func (g guest) secret(ctx context.Context) ([]byte, error) {
	info, err := g.waitInfo(ctx)
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(info[GuestinfoChannelSecret])
}

// hello dials the listener and says hello as name with secret; it
// returns the connection once the driver answered ok with the right MAC.
func (g guest) hello(name string, secret []byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", g.addr(), 5*time.Second)
	if err != nil {
		return nil, err
	}
	return g.helloOn(c, name, secret)
}

// helloOn is hello on a connection of the caller's (closed on failure).
func (g guest) helloOn(c net.Conn, name string, secret []byte) (net.Conn, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := readLine(c, maxHello)
	if err != nil {
		c.Close()
		return nil, err
	}
	nonce, ok := strings.CutPrefix(line, helloMagic+" ")
	if !ok {
		c.Close()
		return nil, fmt.Errorf("nonce line %q", line)
	}
	if _, err := fmt.Fprintf(c, "%s %s %s\n", helloMagic, name, GuestMAC(secret, name, nonce)); err != nil {
		c.Close()
		return nil, err
	}
	line, err = readLine(c, maxHello)
	if err != nil {
		c.Close()
		return nil, err
	}
	if line != "ok "+ServerMAC(secret, name, nonce) {
		c.Close()
		return nil, fmt.Errorf("driver answered %q, not ok with its MAC", line)
	}
	if !g.plain {
		tc, err := serialauth.GuestHandshake(c, name, secret)
		if err != nil {
			c.Close()
			return nil, err
		}
		_ = c.SetDeadline(time.Time{})
		return tc, nil
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// connect waits for the VM and connects it as its guest would.
func (g guest) connect(ctx context.Context) (net.Conn, error) {
	secret, err := g.secret(ctx)
	if err != nil {
		return nil, err
	}
	return g.hello(g.name, secret)
}

// started is a VM started with a fake guest.
type started struct {
	vm     hypervisor.VM
	guest  net.Conn // the guest's end of the channel
	secret []byte
}

// start starts spec on d with a fake guest that connects as it should.
func (e *sim) start(d *Driver, s hypervisor.Spec) started {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 20*time.Second)
	defer cancel()
	st, err := e.tryStart(ctx, d, s)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// tryStart is start for any goroutine: it returns the error.
func (e *sim) tryStart(ctx context.Context, d *Driver, s hypervisor.Spec) (started, error) {
	return e.tryStartWith(ctx, d, s, false)
}

// waitedSecret is the secret d's Start of name waits for a hello with,
// once it waits (bounded by ctx).
func waitedSecret(ctx context.Context, d *Driver, name string) ([]byte, error) {
	for {
		d.mu.Lock()
		w := d.waiting[name]
		d.mu.Unlock()
		if w != nil {
			return w.secret, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no Start of %s waits: %w", name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// tryStartWith is tryStart; with fromDriver the fake guest takes the
// secret from the driver's wait instead of polling the simulator for the
// VM's guestinfo: for many concurrent starts, where vcsim's object locks
// could hang a view read racing CreateVM (placement tests). The
// guestinfo path is covered by the tests that use tryStart.
func (e *sim) tryStartWith(ctx context.Context, d *Driver, s hypervisor.Spec, fromDriver bool) (started, error) {
	g := guest{e: e, d: d, name: s.Name}
	type res struct {
		c      net.Conn
		secret []byte
		err    error
	}
	gr := make(chan res, 1)
	go func() {
		var secret []byte
		var err error
		if fromDriver {
			secret, err = waitedSecret(ctx, d, s.Name)
		} else {
			secret, err = g.secret(ctx)
		}
		if err != nil {
			gr <- res{err: err}
			return
		}
		c, err := g.hello(s.Name, secret)
		gr <- res{c, secret, err}
	}()
	vm, err := d.Start(ctx, s)
	if err != nil {
		return started{}, fmt.Errorf("Start %s: %w", s.Name, err)
	}
	r := <-gr
	if r.err != nil {
		vm.Kill()
		return started{}, fmt.Errorf("fake guest of %s: %w", s.Name, r.err)
	}
	e.t.Cleanup(func() { vm.Kill(); r.c.Close() })
	return started{vm: vm, guest: r.c, secret: r.secret}, nil
}

// logged waits up to 10 s for the driver's log to hold want lines
// containing s and returns how many it holds. A refusal is logged by
// the connection's goroutine after its peer has seen the hang-up, so
// a test that saw the refusal may look before the line is written.
func (e *sim) logged(s string, want int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := strings.Count(e.logs.String(), s)
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closedWithin reports whether c is closed within d.
func closedWithin(c <-chan struct{}, d time.Duration) bool {
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

// localDir is the simulated datastore's directory on this host.
func (e *sim) localDir(ctx context.Context) string {
	e.t.Helper()
	var o mo.Datastore
	if err := e.ds.Properties(ctx, e.ds.Reference(), []string{"info"}, &o); err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimPrefix(o.Info.GetDatastoreInfo().Url, "file://")
}
