package qemu

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor"
)

// The test binary doubles as a fake VMM (the helper-process pattern): with
// FAKE_VMM_DIR set it behaves as QEMU's reconnecting chardev does — it
// connects to DIR/tether.sock, retrying every 100 ms, then holds the
// connection. When the peer closes it, it removes its pidfile and exits 0,
// as QEMU does after a guest power-off.
func TestMain(m *testing.M) {
	if dir := os.Getenv("FAKE_VMM_DIR"); dir != "" {
		p := runtimePaths(dir)
		for {
			c, err := net.Dial("unix", p.channel)
			if err == nil {
				_, _ = io.Copy(io.Discard, c)
				_ = os.Remove(p.pidfile)
				os.Exit(0)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	os.Exit(m.Run())
}

// waitExec waits until the command line of pid holds the argument arg:
// until a child has exec'd, its command line is the test binary's, and
// Adopt rightly finds no VMM there (NotFound; under load a clean-clone
// run once failed TestAdoptKill so).
func waitExec(t *testing.T, pid int, arg string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if bytes.Contains(b, []byte("\x00"+arg+"\x00")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stand-in VMM did not exec within 10 s: command line %q", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeVMM starts the fake VMM for a VM named name in dir (its command
// line carries "-name vch-<name>" as QEMU's does) and writes its pidfile.
func fakeVMM(t *testing.T, dir, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-name", "vch-"+name)
	cmd.Env = append(os.Environ(), "FAKE_VMM_DIR="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitExec(t, cmd.Process.Pid, "vch-"+name)
	if err := os.WriteFile(runtimePaths(dir).pidfile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func testDriver(t *testing.T) *Driver {
	return &Driver{cfg: Config{ConnectTimeout: 2 * time.Second}, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "adopt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestAdoptNotFound(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name    string
		pidfile string // "" for none
	}{
		{"no_pidfile", ""},
		{"garbage_pidfile", "not a pid"},
		{"dead_pid", "4194304"}, // above PID_MAX_LIMIT: never a process
		{"not_a_vmm", self},     // a live process whose command line is not the VM's
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := shortDir(t)
			if tt.pidfile != "" {
				if err := os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte(tt.pidfile), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := testDriver(t).Adopt(t.Context(), hypervisor.Spec{Name: "abc", RuntimeDir: dir})
			if !errdefs.IsNotFound(err) {
				t.Errorf("Adopt: %v, want NotFound", err)
			}
		})
	}
}

// A live process of the VM's name with another VM's name in its command
// line is not adopted.
func TestAdoptOtherVM(t *testing.T) {
	dir := shortDir(t)
	fakeVMM(t, dir, "other")
	if _, err := testDriver(t).Adopt(t.Context(), hypervisor.Spec{Name: "abc", RuntimeDir: dir}); !errdefs.IsNotFound(err) {
		t.Errorf("Adopt: %v, want NotFound", err)
	}
}

func TestAdoptKill(t *testing.T) {
	dir := shortDir(t)
	cmd := fakeVMM(t, dir, "abc")
	v, err := testDriver(t).Adopt(t.Context(), hypervisor.Spec{Name: "abc", RuntimeDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if v.Pid() != cmd.Process.Pid {
		t.Errorf("Pid = %d, want %d", v.Pid(), cmd.Process.Pid)
	}
	if v.Channel() == nil {
		t.Fatal("no channel")
	}
	select {
	case <-v.Done():
		t.Fatal("Done closed while the VMM runs")
	case <-time.After(50 * time.Millisecond):
	}
	if _, ok := v.(hypervisor.Pauser); !ok {
		t.Error("an adopted VM cannot be paused")
	}
	if err := v.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after Kill")
	}
	if err := v.Status().Err; !errors.Is(err, errKilled) {
		t.Errorf("Status().Err = %v, want killed", err)
	}
	if err := v.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
}

// A VMM that exits cleanly (removing its pidfile) ends with a nil status.
func TestAdoptCleanExit(t *testing.T) {
	dir := shortDir(t)
	fakeVMM(t, dir, "abc")
	v, err := testDriver(t).Adopt(t.Context(), hypervisor.Spec{Name: "abc", RuntimeDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v.Channel().Close() // the fake VMM then exits cleanly
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the VMM exited")
	}
	if err := v.Status().Err; err != nil {
		t.Errorf("Status().Err = %v after a clean exit, want nil", err)
	}
}

// A VMM that never connects is killed after ConnectTimeout: Unavailable.
func TestAdoptNoConnect(t *testing.T) {
	dir := shortDir(t)
	cmd := exec.Command("sh", "-c", "sleep 30; true", "-name", "vch-abc")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitExec(t, cmd.Process.Pid, "vch-abc")
	if err := os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testDriver(t)
	d.cfg.ConnectTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := d.Adopt(ctx, hypervisor.Spec{Name: "abc", RuntimeDir: dir}); !errdefs.IsUnavailable(err) {
		t.Errorf("Adopt: %v, want Unavailable", err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("the VMM that did not connect was not killed")
	}
}
