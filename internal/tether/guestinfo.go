package tether

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/vmware/vmw-guestinfo/rpcout"
	"github.com/vmware/vmw-guestinfo/vmcheck"

	"github.com/vchproject/vch/internal/agent/serialauth"
)

// guestinfoExit is the guestinfo key of the guest's power-off mark
// (serialauth.ExitMark), which the vSphere driver reads to tell the
// guest's own power-off from anyone else's.
const guestinfoExit = "guestinfo.vch.exit"

// guestinfoStore is the VM's guestinfo (its "guestinfo.*" configuration
// keys) as tether reaches it on vSphere. Keys are whole ("guestinfo.vch.name").
type guestinfoStore interface {
	// Get is key's value; ok is false if the VM has no such key.
	Get(key string) (value string, ok bool, err error)
	// Set sets key to value for the VM's run (vSphere keeps it in the
	// VM's configuration, where the driver reads it).
	Set(key, value string) error
}

// backdoorGuestinfo reaches guestinfo through the VMware backdoor's RPCI
// channel ("info-get KEY", "info-set KEY VALUE"; open-vm-tools' rpctool
// speaks the same), via github.com/vmware/vmw-guestinfo. The backdoor is
// an I/O port, so every call runs on an OS thread of its own with I/O
// privilege level 3 (iopl(2) is per thread), which ends with the call,
// and one call runs at a time.
type backdoorGuestinfo struct{ mu *sync.Mutex }

// vmwareBackdoor is the backdoor's guestinfo if this guest runs on a
// VMware hypervisor whose backdoor answers: the CPUID hypervisor
// signature is "VMwareVMware" (checked first: the backdoor's port must
// not be touched elsewhere), I/O privilege is granted and the backdoor's
// get-version command answers. ok is false otherwise (QEMU, whose
// signature is "TCGTCGTCGTCG" or "KVMKVMKVM").
func vmwareBackdoor() (store guestinfoStore, ok bool, err error) {
	if !vmcheck.IsVirtualCPU() {
		return nil, false, nil
	}
	b := backdoorGuestinfo{mu: new(sync.Mutex)}
	err = b.do(func() error {
		var err error
		ok, err = vmcheck.IsVirtualWorld(false)
		return err
	})
	if err != nil || !ok {
		return nil, false, err
	}
	return b, true, nil
}

// do runs f on a thread of its own with I/O privilege: a goroutine that
// locks its thread and exits without unlocking it, so the Go runtime ends
// that thread and its privilege with it (a process started from a
// privileged thread, a container's, would inherit the privilege, across
// execve).
func (b backdoorGuestinfo) do(f func() error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		if err := unix.Iopl(3); err != nil {
			done <- fmt.Errorf("tether: VMware backdoor: I/O privilege: %w", err)
			return
		}
		done <- f()
	}()
	return <-done
}

func (b backdoorGuestinfo) Get(key string) (string, bool, error) {
	var out []byte
	var ok bool
	err := b.do(func() error {
		var err error
		out, ok, err = rpcout.SendOne("info-get %s", key)
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("tether: guestinfo %s: %w", key, err)
	}
	return string(out), ok, nil
}

func (b backdoorGuestinfo) Set(key, value string) error {
	var out []byte
	var ok bool
	err := b.do(func() error {
		var err error
		out, ok, err = rpcout.SendOne("info-set %s %s", key, value)
		return err
	})
	if err == nil && !ok {
		err = fmt.Errorf("refused: %q", out)
	}
	if err != nil {
		return fmt.Errorf("tether: set guestinfo %s: %w", key, err)
	}
	return nil
}

// errNoGuestinfo: a serial channel's guest found its identity neither on
// the kernel command line nor through the backdoor.
var errNoGuestinfo = errors.New("tether: serial channel: guestinfo has no VM name or channel secret")

// fillGuestinfo completes c's guestinfo from store when the kernel
// fillGuestinfo completes c's guestinfo from store when the kernel
// command line carried none (GuestinfoParam is the stand-in's way; on
// vSphere the keys come through the backdoor): the VM's name and channel
// secret, and its disks' serials and SCSI addresses. It then overwrites
// guestinfo's copy of the secret with "": the backdoor answers any
// process of the guest, a container's too, and none starts before this.
// (The vSphere driver keeps a copy the guest cannot read, for Adopt.) A
// failed overwrite is returned as overwriteErr, not as err: the guest
// can still reach its host.
func (c *channelChoice) fillGuestinfo(store guestinfoStore) (overwriteErr, err error) {
	if !c.serial || len(c.guestinfo) > 0 {
		return nil, nil
	}
	c.guestinfo = map[string]string{}
	keys := []string{guestinfoName, guestinfoSecret, guestinfoTLS}
	for i := range maxSCSIDisks {
		n := guestinfoDiskPrefix + strconv.Itoa(i)
		keys = append(keys, n+".serial", n+".address")
	}
	for _, k := range keys {
		v, ok, err := store.Get(k)
		if err != nil {
			return nil, err
		}
		if ok && v != "" {
			c.guestinfo[k] = v
		}
	}
	c.store = store
	if c.guestinfo[guestinfoSecret] != "" {
		overwriteErr = store.Set(guestinfoSecret, "")
	}
	return overwriteErr, nil
}

// markExit sets the guest's power-off mark, on vSphere, just before
// tether powers the VM off: hex(HMAC-SHA256(secret, "vch-exit v1 poweroff
// NAME")) (serialauth.ExitMark), so the driver ends the VM with no error
// instead of as powered off by someone else. Nothing without a store
// (the qemu driver's VMs and the stand-in, whose driver kills the VM).
func (c channelChoice) markExit() error {
	if c.store == nil {
		return nil
	}
	name, secret, err := c.identity()
	if err != nil {
		return err
	}
	return c.store.Set(guestinfoExit, serialauth.ExitMark(secret, name))
}
