package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/hypervisor"
)

// Adopt implements hypervisor.Adopter. It reads the VM's pidfile, opens a
// pidfd for that PID (pidfd_open(2): a handle that cannot be confused with
// a later process reusing the PID), checks that the process is this VM's
// QEMU (/proc/PID/cmdline holds "-name vch-<Name>"), and listens on the
// channel socket until QEMU's reconnecting chardev connects (within a
// second; ConnectTimeout bounds it).
//
// A VM found paused (QMP "stop") is resumed before its channel is
// offered, as the contract says; the caller pauses it again.
//
// The adopted VMM is not this process's child: Done is closed when the
// pidfd becomes readable (the process ended), and Status can only tell a
// clean exit (QEMU removes its pidfile when it exits normally, which for a
// microVM under -no-reboot means the guest powered off) from any other.
func (d *Driver) Adopt(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	if !validName.MatchString(spec.Name) {
		return nil, fmt.Errorf("qemu: VM name %q: want letters, digits, '_', '.', '-': %w", spec.Name, errdefs.ErrInvalidArgument)
	}
	p := runtimePaths(spec.RuntimeDir)
	if len(p.channel) > maxSocketPath {
		return nil, fmt.Errorf("qemu: runtime dir %s too long for a unix socket: %w", spec.RuntimeDir, errdefs.ErrInvalidArgument)
	}
	b, err := os.ReadFile(p.pidfile)
	if err != nil {
		return nil, fmt.Errorf("qemu: VM %s: no VMM pidfile: %w: %w", spec.Name, err, errdefs.ErrNotFound)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("qemu: VM %s: bad pidfile %q: %w", spec.Name, b, errdefs.ErrNotFound)
	}
	pidfd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("qemu: VM %s: VMM pid %d: %w: %w", spec.Name, pid, err, errdefs.ErrNotFound)
	}
	proc := newPidfdProcess(pid, pidfd)
	// The command line read after the pidfd was opened belongs to the
	// pidfd's process if that process still runs afterwards.
	ours := isVMM(pid, spec.Name)
	select {
	case <-proc.done:
		ours = false
	default:
	}
	if !ours {
		proc.close()
		return nil, fmt.Errorf("qemu: VM %s: pid %d is not its VMM: %w", spec.Name, pid, errdefs.ErrNotFound)
	}
	mon := monitor{qmpPath: p.qmp, transfer: &transferSlot{placeholder: p.transfer}}
	wasPaused, _ := mon.paused(ctx)
	if wasPaused {
		if err := mon.Resume(ctx); err != nil {
			proc.close()
			return nil, fmt.Errorf("qemu: adopt %s: resume the paused VM: %w", spec.Name, err)
		}
		d.logger.Info("paused vm resumed for adoption", "vm", spec.Name)
	}
	ln, err := listenChannel(p.channel)
	if err != nil {
		proc.close()
		return nil, err
	}
	defer ln.Close()
	defer os.Remove(p.channel)
	c, err := d.accept(ctx, ln, proc.done, proc.kill)
	if err == nil && wasPaused {
		// The virtio-serial port's open and close notices do not reach a
		// guest while its VM is stopped (QEMU 7.2): a guest whose channel
		// closed while it was frozen still believes the old connection
		// open, and would read the new one's first bytes as the old
		// session's. One more close, while it runs, tells it; then the
		// channel is taken back once QEMU reconnects (after 1 s).
		c.Close()
		c, err = d.accept(ctx, ln, proc.done, proc.kill)
	}
	if err != nil {
		if errors.Is(err, errVMMEnded) {
			return nil, fmt.Errorf("qemu: VM %s ended while being adopted: %w", spec.Name, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("qemu: adopt %s: %w", spec.Name, err)
	}
	// The log's reconnect complaints from the time without a daemon are
	// of no further use (QEMU appends, so truncating is safe).
	_ = os.Truncate(p.log, 0)
	v := &adopted{monitor: mon, proc: proc, pidfile: p.pidfile, channel: c, done: make(chan struct{})}
	go v.wait()
	d.logger.Info("vm adopted", "vm", spec.Name, "pid", pid)
	return v, nil
}

// isVMM reports whether process pid runs QEMU for the VM named name.
func isVMM(pid int, name string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(append([]byte{0}, b...), []byte("\x00-name\x00vch-"+name+"\x00"))
}

// pidfdProcess watches a process that is not our child through a pidfd.
type pidfdProcess struct {
	pid  int
	file *os.File // the pidfd, in Go's poller
	done chan struct{}
}

func newPidfdProcess(pid, pidfd int) *pidfdProcess {
	p := &pidfdProcess{pid: pid, file: os.NewFile(uintptr(pidfd), "pidfd:"+strconv.Itoa(pid)), done: make(chan struct{})}
	go p.watch()
	return p
}

// watch closes done once the process has ended: a pidfd polls readable
// then (pidfd_open(2)). The wait parks in Go's poller, not a thread.
func (p *pidfdProcess) watch() {
	defer close(p.done)
	rc, err := p.file.SyscallConn()
	if err != nil {
		return
	}
	ended := func(fd uintptr, timeoutMs int) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeoutMs)
		return (err != nil && !errors.Is(err, unix.EINTR)) || n > 0
	}
	err = rc.Read(func(fd uintptr) bool { return ended(fd, 0) })
	if err == nil || errors.Is(err, os.ErrClosed) {
		return
	}
	// Not in the poller after all: poll with a bound, so close still
	// ends the wait.
	for {
		var gone bool
		if rc.Control(func(fd uintptr) { gone = ended(fd, 1000) }) != nil || gone {
			return
		}
	}
}

// kill sends SIGKILL through the pidfd. Harmless after the process ended.
func (p *pidfdProcess) kill() error {
	rc, err := p.file.SyscallConn()
	if err != nil {
		return nil // closed: the process is gone
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	}); err != nil {
		return nil
	}
	if errors.Is(serr, unix.ESRCH) {
		return nil
	}
	return serr
}

func (p *pidfdProcess) close() {
	_ = p.file.Close()
	<-p.done
}

// adopted is a QEMU VM started by an earlier daemon.
type adopted struct {
	monitor
	proc    *pidfdProcess
	pidfile string
	done    chan struct{}

	mu      sync.Mutex
	channel net.Conn
	killed  bool
	status  hypervisor.ExitStatus
}

// errKilled is the status of an adopted VM ended by Kill.
var errKilled = errors.New("qemu: VMM killed")

func (v *adopted) wait() {
	<-v.proc.done
	st := hypervisor.ExitStatus{At: time.Now()}
	v.mu.Lock()
	switch _, err := os.Stat(v.pidfile); {
	case v.killed:
		st.Err = errKilled
	case err == nil:
		// QEMU removes its pidfile when it exits normally; it is left
		// behind by a kill or a crash.
		st.Err = errors.New("qemu: VMM ended without a clean exit (killed or crashed)")
	}
	v.status = st
	v.channel.Close()
	v.mu.Unlock()
	_ = v.proc.file.Close()
	close(v.done)
}

func (v *adopted) Channel() net.Conn     { return v.channel }
func (v *adopted) Pid() int              { return v.proc.pid }
func (v *adopted) Done() <-chan struct{} { return v.done }
func (v *adopted) Status() hypervisor.ExitStatus {
	<-v.done
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.status
}

// Kill sends SIGKILL to QEMU. Idempotent; harmless after exit.
func (v *adopted) Kill() error {
	v.mu.Lock()
	select {
	case <-v.proc.done:
		v.mu.Unlock()
		return nil
	default:
	}
	v.killed = true
	v.mu.Unlock()
	return v.proc.kill()
}
