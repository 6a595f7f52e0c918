package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vchproject/vch/internal/busyboximage"
)

// Daemon is a `vch daemon` process started for tests, with its own root
// and unix socket under a private directory.
type Daemon struct {
	// Host is the DOCKER_HOST value, "unix://<dir>/docker.sock".
	Host string
	// Root is the daemon's --root; LogPath its combined output.
	Root, LogPath string
	cmd           *exec.Cmd
	exited        chan struct{}
}

// StartDaemon starts bin/vch daemon in dir (with extraArgs after its own
// flags; again on the same root and socket when dir was used before) and
// waits (up to 30 s) until its
// socket accepts connections.
func StartDaemon(dir string, extraArgs ...string) (*Daemon, error) {
	d := &Daemon{Root: filepath.Join(dir, "root"), LogPath: filepath.Join(dir, "daemon.log")}
	sock := filepath.Join(dir, "docker.sock")
	d.Host = "unix://" + sock
	// Appended to: a daemon restarted on the same dir keeps the earlier
	// one's log before its own.
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(filepath.Join(BinDir(), "vch"), append([]string{"daemon", "--root", d.Root, "-H", d.Host}, extraArgs...)...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// If the test binary dies (a timeout), the daemon exits; its container
	// VMs outlive it (Stop, which would end them, does not run then).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	d.exited = make(chan struct{})
	var waitErr error
	go func() { waitErr = d.cmd.Wait(); close(d.exited) }()
	deadline := time.After(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("daemon exited at start: %v: %s", waitErr, d.Log(2000))
		case <-deadline:
			_ = d.cmd.Process.Kill()
			return nil, fmt.Errorf("daemon did not listen on %s within 30 s", sock)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid is the daemon's process ID.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Stop sends SIGINT and waits up to timeout for the daemon to exit, then
// kills it. Then it ends what a stopped daemon leaves running on purpose
// (the next daemon would take it back): its container VMs, killed, and
// the VCH's network namespace; a test leaves nothing behind. It reports
// whether the daemon exited by itself.
func (d *Daemon) Stop(timeout time.Duration) bool {
	_ = d.cmd.Process.Signal(os.Interrupt)
	exited := true
	select {
	case <-d.exited:
	case <-time.After(timeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
		exited = false
	}
	d.reap()
	return exited
}

// reap kills the VMMs whose command line names a path under the daemon's
// root and deletes its network namespace.
func (d *Daemon) reap() {
	root, err := filepath.Abs(d.Root)
	if err != nil {
		return
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(root+"/")) || !bytes.Contains(b, []byte("\x00-name\x00vch-")) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = netns.DeleteNamed(NamespaceName(root))
}

// NamespaceName is vch.NamespaceName (testenv cannot import package vch,
// which imports the drivers whose tests use testenv): "vch-" and 12 hex
// digits of the root path's SHA-256.
func NamespaceName(root string) string {
	h := sha256.Sum256([]byte(root))
	return "vch-" + hex.EncodeToString(h[:6])
}

// Terminate sends SIGTERM and waits up to timeout for the daemon to exit,
// then kills it. It reports whether the daemon exited by itself.
func (d *Daemon) Terminate(timeout time.Duration) bool {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return true
	case <-time.After(timeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return false
	}
}

// Kill kills the daemon with SIGKILL (it cannot clean up) and waits for it.
func (d *Daemon) Kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// Exited is closed once the daemon process has ended.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Log returns the tail of the daemon's log (at most n bytes).
func (d *Daemon) Log(n int) string {
	b, _ := os.ReadFile(d.LogPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// LoadBusybox builds the busybox image from Debian's busybox-static and
// loads it as busybox:latest with the docker CLI.
func (d *Daemon) LoadBusybox(dir string) error {
	tar := filepath.Join(dir, "busybox.tar")
	f, err := os.Create(tar)
	if err != nil {
		return err
	}
	img, err := busyboximage.Build(busyboximage.DefaultBusybox)
	if err == nil {
		err = busyboximage.WriteArchive(f, img, "busybox:latest")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	out, err := exec.Command("docker", "-H", d.Host, "load", "-i", tar).CombinedOutput()
	if err != nil {
		return errors.Join(fmt.Errorf("docker load: %s", out), err)
	}
	return nil
}
