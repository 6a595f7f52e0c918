package tether

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmware/vmw-guestinfo/vmcheck"

	"github.com/vchproject/vch/internal/agent/serialauth"
	"github.com/vchproject/vch/internal/hypervisor/vsphere"
)

// fakeGuestinfo is a VM's guestinfo as a map; gets and sets are counted.
type fakeGuestinfo struct {
	keys       map[string]string
	gets, sets int
	fail       error
}

func (f *fakeGuestinfo) Get(key string) (string, bool, error) {
	f.gets++
	if f.fail != nil {
		return "", false, f.fail
	}
	v, ok := f.keys[key]
	return v, ok, nil
}

func (f *fakeGuestinfo) Set(key, value string) error {
	f.sets++
	if f.fail != nil {
		return f.fail
	}
	f.keys[key] = value
	return nil
}

// TestGuestinfoFromStore: on a serial channel without GuestinfoParam the
// identity comes from the store (the backdoor on vSphere), guestinfo's
// copy of the secret is overwritten (the guest's processes reach the
// backdoor too), and the power-off mark is the one the
// vSphere driver accepts; the command line's guestinfo wins and then
// nothing is read or marked; a store without the keys, or failing, is an
// error that says so.
func TestGuestinfoFromStore(t *testing.T) {
	secret := strings.Repeat("5a", serialauth.SecretBytes)
	key, _ := serialauth.ParseSecret(secret)

	store := &fakeGuestinfo{keys: map[string]string{guestinfoName: "web-1a2b3c", guestinfoSecret: secret}}
	c := channelChoice{serial: true, device: "ttyS0"}
	if werr, err := c.fillGuestinfo(store); err != nil || werr != nil {
		t.Fatal(err, werr)
	}
	name, got, err := c.identity()
	if err != nil || name != "web-1a2b3c" || string(got) != string(key) {
		t.Fatalf("identity %q %x %v", name, got, err)
	}
	if err := c.markExit(); err != nil {
		t.Fatal(err)
	}
	if m := store.keys[guestinfoExit]; m != vsphere.ExitMark(key, "web-1a2b3c") {
		t.Fatalf("exit mark %q, want the driver's %q", m, vsphere.ExitMark(key, "web-1a2b3c"))
	}
	if v, ok := store.keys[guestinfoSecret]; !ok || v != "" {
		t.Fatalf("guestinfo's secret after boot: %q, want it overwritten with \"\" (the guest's processes reach the backdoor)", v)
	}

	// The command line's guestinfo (the stand-in) is used as it is.
	other := &fakeGuestinfo{keys: map[string]string{}}
	c = channelChoice{serial: true, guestinfo: map[string]string{guestinfoName: "c9", guestinfoSecret: secret}}
	if _, err := c.fillGuestinfo(other); err != nil {
		t.Fatal(err)
	}
	if err := c.markExit(); err != nil || other.gets+other.sets != 0 {
		t.Fatalf("with command-line guestinfo the store was used: %d gets, %d sets, %v", other.gets, other.sets, err)
	}
	// A virtio channel reads no guestinfo.
	c = channelChoice{}
	if _, err := c.fillGuestinfo(other); err != nil || other.gets != 0 {
		t.Fatalf("virtio channel: %d gets, %v", other.gets, err)
	}

	// No keys: the identity's error, and no mark.
	empty := &fakeGuestinfo{keys: map[string]string{}}
	c = channelChoice{serial: true}
	if _, err := c.fillGuestinfo(empty); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.identity(); !errors.Is(err, errNoGuestinfo) {
		t.Fatalf("identity with no keys: %v, want errNoGuestinfo", err)
	}
	if err := c.markExit(); !errors.Is(err, errNoGuestinfo) || empty.sets != 0 {
		t.Fatalf("markExit with no keys: %v (%d sets)", err, empty.sets)
	}

	// A failing store.
	broken := &fakeGuestinfo{fail: errors.New("backdoor gone")}
	c = channelChoice{serial: true}
	if _, err := c.fillGuestinfo(broken); err == nil || !strings.Contains(err.Error(), "backdoor gone") {
		t.Fatalf("fillGuestinfo on a failing store: %v", err)
	}
}

// TestNoBackdoorOffVMware: off a VMware hypervisor (this host, or a QEMU
// guest) the backdoor is not there and its port is never touched.
func TestNoBackdoorOffVMware(t *testing.T) {
	if vmcheck.IsVirtualCPU() {
		t.Skip("this host runs on VMware")
	}
	store, ok, err := vmwareBackdoor()
	if ok || store != nil || err != nil {
		t.Fatalf("vmwareBackdoor() = %v, %v, %v off VMware", store, ok, err)
	}
}
