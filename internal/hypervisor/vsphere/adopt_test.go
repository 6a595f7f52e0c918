package vsphere

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
)

// serialURI is the service URI of the VM's network-backed serial port
// and whether the port is connected.
func (e *sim) serialURI(name string) (string, bool) {
	o := e.vmConfig(e.vm(name))
	for _, dev := range o.Config.Hardware.Device {
		if p, ok := dev.(*types.VirtualSerialPort); ok {
			if b, ok := p.Backing.(*types.VirtualSerialPortURIBackingInfo); ok {
				return b.ServiceURI, p.Connectable != nil && p.Connectable.Connected
			}
		}
	}
	return "", false
}

// TestAdopt checks that a second driver (a restarted daemon) takes back a
// VM the first one started: the VM's serial port is pointed, connected,
// at the new listener, the guest's hello with the secret from guestinfo
// is accepted, the channel carries bytes both ways, and the adopted VM
// ends and is destroyed by Kill. Adopting a VM again, or one that does
// not exist, fails with AlreadyExists and NotFound; a VM whose guest
// never says hello again is killed (Unavailable).
func TestAdopt(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	d1 := e.vch()
	st := e.start(d1, spec("adopt1"))
	lost := e.start(d1, spec("adopt2"))
	oldURI := d1.ChannelURI()
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	if st.vm.(*vm).ended() {
		t.Fatal("closing the driver ended its VM")
	}

	d2 := e.driver(func(c *Config) { c.ConnectTimeout = 3 * time.Second })
	if d2.ChannelURI() == oldURI {
		t.Fatalf("the second driver listens at the first one's %s: the test needs another port", oldURI)
	}
	if !d2.Capabilities().Adopt {
		t.Fatal("Capabilities().Adopt is false")
	}
	// The guest: once its port is connected to the new listener (an ESX
	// host connects it), it says its hello again.
	g := guest{e: e, d: d2, name: "adopt1"}
	conn := make(chan error, 1)
	var guestConn io.ReadWriteCloser
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if uri, on := e.serialURI("adopt1"); uri == d2.ChannelURI() && on {
				c, err := g.hello("adopt1", st.secret)
				guestConn = c
				conn <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		conn <- context.DeadlineExceeded
	}()
	// tether overwrote guestinfo's copy of the secret at boot: Adopt
	// takes the one the guest cannot read.
	task, err := e.vm("adopt1").Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
		&types.OptionValue{Key: GuestinfoChannelSecret, Value: ""}}})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	av, err := d2.Adopt(ctx, hypervisor.Spec{Name: "adopt1"})
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if err := <-conn; err != nil {
		t.Fatalf("the guest's second hello: %v", err)
	}
	defer guestConn.Close()
	if uri, on := e.serialURI("adopt1"); uri != d2.ChannelURI() || !on {
		t.Errorf("the adopted VM's serial port: %q connected=%v, want %q connected", uri, on, d2.ChannelURI())
	}
	if _, err := guestConn.Write([]byte("from the guest")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("from the guest"))
	if _, err := io.ReadFull(av.Channel(), buf); err != nil || string(buf) != "from the guest" {
		t.Fatalf("read on the adopted channel: %q %v", buf, err)
	}
	if _, err := av.Channel().Write([]byte("to the guest")); err != nil {
		t.Fatal(err)
	}
	buf = make([]byte, len("to the guest"))
	if _, err := io.ReadFull(guestConn, buf); err != nil || string(buf) != "to the guest" {
		t.Fatalf("read by the guest: %q %v", buf, err)
	}
	if h := av.(hypervisor.Placer).Host(); h == "" {
		t.Error("the adopted VM names no host")
	}

	if _, err := d2.Adopt(ctx, hypervisor.Spec{Name: "adopt1"}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("Adopt of a VM already adopted: %v, want AlreadyExists", err)
	}
	if _, err := d2.Adopt(ctx, hypervisor.Spec{Name: "nosuch"}); !errdefs.IsNotFound(err) {
		t.Errorf("Adopt of no VM: %v, want NotFound", err)
	}

	// A guest that never comes back: killed, so nobody's VM runs on.
	_, err = d2.Adopt(ctx, hypervisor.Spec{Name: "adopt2"})
	if !errdefs.IsUnavailable(err) {
		t.Errorf("Adopt of a VM whose guest never says hello: %v, want Unavailable", err)
	}
	if !lost.vm.(*vm).ended() && e.vm("adopt2") != nil {
		t.Error("the VM whose guest never came back still exists")
	}

	if err := av.Kill(); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(av.Done(), 10*time.Second) {
		t.Fatal("Kill did not end the adopted VM")
	}
	for _, n := range e.vmNames() {
		if n == "adopt1" || n == "adopt2" {
			t.Errorf("VM %s still in the inventory", n)
		}
	}
}
