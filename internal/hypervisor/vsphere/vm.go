package vsphere

import (
	"context"
	"crypto/hmac"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
)

// Why VMs end, in ExitStatus.Err.
var (
	// ErrKilled: Kill ended the VM.
	ErrKilled = errors.New("vsphere: VM killed")
	// ErrPoweredOff: the VM was powered off, not by its guest's own
	// marked power-off nor by Kill (someone powered it off in vSphere, or
	// the guest did without marking it).
	ErrPoweredOff = errors.New("vsphere: VM powered off outside the driver")
	// ErrRemoved: the VM disappeared from the inventory (destroyed or
	// unregistered outside the driver).
	ErrRemoved = errors.New("vsphere: VM removed outside the driver")
)

// watchProps are what the watcher follows of a VM: its end, its host (for
// Host and the health loop) and its connection state (an unreachable
// host shows there on vSphere).
var watchProps = []string{"runtime.powerState", "runtime.host", "runtime.connectionState"}

// exitKey is the guestinfo key of the guest's power-off mark.
const exitKey = "guestinfo.vch.exit"

// vm is one VM this driver started.
type vm struct {
	d      *Driver
	name   string
	secret []byte
	obj    *object.VirtualMachine
	done   chan struct{}
	status hypervisor.ExitStatus

	killing   atomic.Bool // Kill is ending the VM: a power-off is its own
	offSeen   atomic.Bool // the watcher is reading the VM's state or ending it
	offAgain  atomic.Bool // another update came meanwhile: read again
	noDestroy bool        // end leaves the VM in the inventory (endMu held)
	endMu     sync.Mutex  // one end at a time; Kill and the watcher race

	mu       sync.Mutex
	channel  net.Conn
	chClosed bool // no channel may be set any more
	// host is the VM's runtime.host, conn its runtime.connectionState
	// ("" until the watcher's first update), as last seen.
	host      *types.ManagedObjectReference
	conn      types.VirtualMachineConnectionState
	lostSince time.Time // since when the VM or its host is unreachable
	losing    bool      // the health loop is ending it with ErrHostLost
}

// Host is the name of the ESX host the VM runs on (vSphere's runtime.host,
// followed as it changes), "" if not known yet: implements
// [hypervisor.Placer].
func (v *vm) Host() string {
	h := v.hostRef()
	if h == nil {
		return ""
	}
	v.d.mu.Lock()
	defer v.d.mu.Unlock()
	return v.d.hostNameLocked(*h)
}

// hostRef is the VM's host, nil if not known.
func (v *vm) hostRef() *types.ManagedObjectReference {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.host
}

// setRuntime records the VM's host and connection state.
func (v *vm) setRuntime(host *types.ManagedObjectReference, conn types.VirtualMachineConnectionState) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if host != nil {
		h := *host
		v.host = &h
	}
	if conn != "" {
		v.conn = conn
	}
}

// lose ends the VM with ErrHostLost: it is powered off and destroyed if
// vSphere lets the driver (its disks kept), left in the inventory if not.
func (v *vm) lose() {
	if v.ended() {
		return
	}
	v.killing.Store(true) // the watcher leaves the end to us
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	v.d.logger.Warn("VM's host lost", "vm", v.name, "host", v.Host(), "grace", v.d.cfg.HostLostGrace)
	why := ErrHostLost
	if err := v.powerOff(ctx); err != nil {
		if isNotFound(err) {
			why = fmt.Errorf("%w: %w", ErrHostLost, ErrRemoved)
		} else {
			// Still on the lost host: leave it, end it here.
			err = v.d.fail("power off "+v.name, err)
			why = fmt.Errorf("%w (and left behind: %w)", ErrHostLost, err)
		}
		v.endNoDestroy(why)
		return
	}
	if err := v.end(ctx, why); err != nil {
		v.d.logger.Warn("ending VM", "vm", v.name, "err", err)
	}
}

func (v *vm) Channel() net.Conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.channel
}

// Pid is 0: the VMM runs on an ESX host, not here.
func (v *vm) Pid() int                      { return 0 }
func (v *vm) Done() <-chan struct{}         { return v.done }
func (v *vm) Status() hypervisor.ExitStatus { <-v.done; return v.status }

// closeChannel closes v's channel at once. A TLS channel's own Close
// would first send its closing alert, waiting up to 5 s on a connection
// nobody reads (under v.mu, VM after VM in Driver.Close): its connection
// is closed instead, which the guest reads as its host gone either way.
func (v *vm) closeChannel() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.chClosed = true
	if tc, ok := v.channel.(*tls.Conn); ok {
		tc.NetConn().Close()
	} else if v.channel != nil {
		v.channel.Close()
	}
}

func (v *vm) ended() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// Kill powers the VM off (hard), detaches its disks and destroys it;
// Done is closed when it returns nil. Idempotent: nil once the VM has
// ended. An error (vSphere unreachable) leaves the VM as it is; Kill may
// be called again.
func (v *vm) Kill() error {
	if v.ended() {
		return nil
	}
	v.killing.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := v.powerOff(ctx); err != nil {
		if isNotFound(err) {
			return v.end(ctx, ErrRemoved)
		}
		v.killing.Store(false) // still running: the watcher keeps it
		return v.d.fail("kill "+v.name, err)
	}
	return v.end(ctx, ErrKilled)
}

// powerOff powers the VM off; nil if it already is.
func (v *vm) powerOff(ctx context.Context) error {
	t, err := v.obj.PowerOff(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil && !fault.IsAlreadyPoweredOffError(err) {
		return err
	}
	return nil
}

// end releases the VM, powered off or gone, and closes Done with why
// (nil: the guest's marked power-off). Once: later calls return nil.
func (v *vm) end(ctx context.Context, why error) error {
	v.endMu.Lock()
	defer v.endMu.Unlock()
	if v.ended() {
		return nil
	}
	var err error
	if !errors.Is(why, ErrRemoved) && !v.noDestroy {
		if err = v.d.destroyKeepingDisks(ctx, v.obj); err != nil {
			if isNotFound(err) {
				err = nil
			} else {
				err = v.d.fail("destroy "+v.name, err)
				v.d.logger.Error("VM ended but not destroyed: it is left powered off", "vm", v.name, "err", err)
				why = fmt.Errorf("%w (and left behind: %w)", why, err)
			}
		}
	}
	v.status = hypervisor.ExitStatus{Err: why, At: time.Now()}
	v.closeChannel()
	v.d.mu.Lock()
	if w := v.d.watched[v.obj.Reference()]; w == v {
		delete(v.d.watched, v.obj.Reference())
	}
	if v.d.vms[v.name] == v {
		delete(v.d.vms, v.name)
		for _, h := range v.d.hosts {
			delete(h.reserved, v.name)
		}
	}
	v.d.mu.Unlock()
	close(v.done)
	v.d.logger.Info("vm ended", "vm", v.name, "status", why)
	return err
}

// endNoDestroy ends the VM with why, leaving it in the inventory.
func (v *vm) endNoDestroy(why error) {
	v.endMu.Lock()
	v.noDestroy = true
	v.endMu.Unlock()
	_ = v.end(context.Background(), why)
}

// destroyKeepingDisks detaches obj's disks, keeping their files, and
// destroys it (vSphere's Destroy deletes the disks still attached). obj
// must be powered off.
func (d *Driver) destroyKeepingDisks(ctx context.Context, obj *object.VirtualMachine) error {
	devices, err := obj.Device(ctx)
	if err != nil {
		return err
	}
	if disks := devices.SelectByType((*types.VirtualDisk)(nil)); len(disks) > 0 {
		if err := obj.RemoveDevice(ctx, true, disks...); err != nil {
			return err
		}
	}
	t, err := obj.Destroy(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	return err
}

// exitReason is why a powered-off VM ended: nil if its guest marked the
// power-off as its own (guestinfo.vch.exit holds ExitMark), ErrPoweredOff
// otherwise.
func (v *vm) exitReason(ctx context.Context) error {
	var o mo.VirtualMachine
	if err := v.obj.Properties(ctx, v.obj.Reference(), []string{"config.extraConfig"}, &o); err != nil || o.Config == nil {
		return ErrPoweredOff
	}
	want := ExitMark(v.secret, v.name)
	for _, b := range o.Config.ExtraConfig {
		ov := b.GetOptionValue()
		if ov.Key != exitKey {
			continue
		}
		if s, ok := ov.Value.(string); ok && hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrPoweredOff
}

var _ hypervisor.Placer = (*vm)(nil)
