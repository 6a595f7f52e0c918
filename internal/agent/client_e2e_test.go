//go:build e2e

package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/qemu"
	"github.com/vchproject/vch/internal/initramfs"
	"github.com/vchproject/vch/internal/testenv"
)

// bootBusybox boots a VM whose root disk holds Debian's static busybox and
// returns a connected guest client.
func bootBusybox(t *testing.T) (*agent.Client, hypervisor.VM) {
	t.Helper()
	testenv.RequireVMs(t)
	dir := t.TempDir()
	disk := testenv.BusyboxDisk(t, dir, "256M")
	kt := initramfs.KernelTree{Dir: testenv.KernelDir()}
	kernel, err := kt.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.img")
	if err := initramfs.WriteFile(initrd, filepath.Join(testenv.BinDir(), "tether"), kt, initramfs.BootModules); err != nil {
		t.Fatal(err)
	}
	drv, err := qemu.New(qemu.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	overlay, err := drv.CreateOverlay(t.Context(), hypervisor.Disk{Path: disk, Format: "raw"}, filepath.Join(dir, "rw.qcow2"), 0)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := drv.Start(t.Context(), hypervisor.Spec{
		Name: "guest-test", Kernel: kernel, Initrd: initrd, MemoryMiB: 256, CPUs: 1,
		ChannelName: wire.PortName, Disks: []hypervisor.Disk{overlay}, RuntimeDir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		<-vm.Done()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
			t.Logf("console:\n%s", b)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c, err := agent.Dial(ctx, vm.Channel())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Setup(ctx, wire.Setup{Hostname: "guesttest", TimeUnixNano: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	return c, vm
}

// run starts p and collects its output and exit code.
func run(t *testing.T, c *agent.Client, p wire.Process) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	proc, err := c.Start(ctx, p)
	if err != nil {
		t.Fatalf("start %v: %v", p.Args, err)
	}
	var out, errb bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&out, proc.Stdout()) }()
	go func() { defer wg.Done(); io.Copy(&errb, proc.Stderr()) }()
	code, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	return out.String(), errb.String(), code
}

func TestGuestProcesses(t *testing.T) {
	c, vm := bootBusybox(t)
	var uts unix.Utsname
	unix.Uname(&uts)
	host := unix.ByteSliceToString(uts.Release[:])

	out, _, code := run(t, c, wire.Process{Args: []string{"uname", "-r"}})
	if code != 0 || strings.TrimSpace(out) == "" || strings.TrimSpace(out) == host {
		t.Errorf("uname -r = %q (code %d), host %q: want the guest kernel", out, code, host)
	}
	out, _, _ = run(t, c, wire.Process{Args: []string{"cat", "/etc/hostname"}})
	if strings.TrimSpace(out) != "guesttest" {
		t.Errorf("hostname file = %q", out)
	}
	_, _, code = run(t, c, wire.Process{Args: []string{"sh", "-c", "exit 3"}})
	if code != 3 {
		t.Errorf("exit 3: got %d", code)
	}
	// PID 1 semantics: the process is PID 1 of its own namespace, so a
	// SIGTERM it has no handler for is ignored; SIGKILL ends it (137).
	out, _, _ = run(t, c, wire.Process{Args: []string{"sh", "-c", "echo $$; ps -o pid | wc -l"}})
	if !strings.HasPrefix(out, "1\n") {
		t.Errorf("main process PID = %q, want 1", out)
	}
	proc, err := c.Start(t.Context(), wire.Process{Args: []string{"sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, proc.Stdout())
	go io.Copy(io.Discard, proc.Stderr())
	if err := proc.Signal(t.Context(), 15); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(t.Context(), time.Second)
	if code, err := proc.Wait(waitCtx); err == nil {
		t.Errorf("SIGTERM without a handler ended PID 1 (code %d); it must be ignored", code)
	}
	cancel()
	// An exec joins the main process's PID namespace: it is not PID 1 and
	// sees the main process as PID 1.
	out, _, code = run(t, c, wire.Process{Args: []string{"sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"}, Exec: true})
	if lines := strings.Split(out, "\n"); code != 0 || len(lines) < 2 || lines[0] == "1" || lines[1] != "sleep 100 " {
		t.Errorf("exec: code %d out %q: want a PID other than 1 and PID 1 = sleep 100", code, out)
	}
	if _, err := c.Start(t.Context(), wire.Process{Args: []string{"true"}}); err == nil {
		t.Error("a second main process was started while one runs")
	}
	if err := proc.Signal(t.Context(), 9); err != nil {
		t.Fatal(err)
	}
	if code, err := proc.Wait(t.Context()); err != nil || code != 137 {
		t.Errorf("after SIGKILL: code %d err %v, want 137", code, err)
	}
	_, _, code = run(t, c, wire.Process{Args: []string{"sh", "-c", "trap 'exit 143' TERM; kill -TERM $$; sleep 5"}})
	if code != 143 {
		t.Errorf("TERM with a handler: got %d, want 143", code)
	}
	out, errOut, _ := run(t, c, wire.Process{Args: []string{"sh", "-c", "echo out; echo err >&2; printf last"}})
	if out != "out\nlast" || errOut != "err\n" {
		t.Errorf("streams: out %q err %q", out, errOut)
	}
	out, _, _ = run(t, c, wire.Process{Args: []string{"sh", "-c", "id -u; pwd; echo $HOME"}, User: "nobody", Dir: "/tmp"})
	if out != "65534\n/tmp\n/nonexistent\n" {
		t.Errorf("user/dir: %q", out)
	}
	_, err = c.Start(t.Context(), wire.Process{Args: []string{"nosuchcmd"}})
	var se *agent.StartError
	if !errors.As(err, &se) || se.ExitCode != 127 || !strings.Contains(se.Message, `exec: "nosuchcmd": executable file not found in $PATH`) {
		t.Errorf("nosuchcmd: %v", err)
	}
	out, _, _ = run(t, c, wire.Process{Args: []string{"seq", "1", "10000"}})
	if n := strings.Count(out, "\n"); n != 10000 || !strings.HasSuffix(out, "\n10000\n") {
		t.Errorf("seq 10000: %d lines", n)
	}
	if err := c.PowerOff(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Done():
		if err := vm.Status().Err; err != nil {
			t.Errorf("vm status after power-off: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("VM did not power off")
	}
}
