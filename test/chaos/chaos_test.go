//go:build e2e

// Package chaos is vch's fault, load and leak suite: real daemons and
// real container VMs, each case ending with a leak check (VMMs, taps,
// daemon file descriptors, run directories, container records) against
// what the daemon held before it. `make test` runs the short part;
// `make chaos` (VCH_CHAOS_FULL=1) runs everything at full size.
package chaos

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"
)

// full reports whether the whole suite runs (make chaos).
func full() bool { return os.Getenv("VCH_CHAOS_FULL") == "1" }

// vch is one daemon under test, restartable on the same root.
type vch struct {
	t   *testing.T
	dir string
	d   *testenv.Daemon
}

// newVCH starts a daemon with busybox loaded and without warm VMs, so
// that the VMM count is the containers' alone.
func newVCH(t *testing.T) *vch {
	t.Helper()
	testenv.RequireVMs(t)
	testenv.RequireBinary(t, "docker")
	v := &vch{t: t, dir: t.TempDir()}
	v.start()
	t.Cleanup(func() { v.d.Stop(60 * time.Second) })
	if err := v.d.LoadBusybox(v.dir); err != nil {
		t.Fatal(err)
	}
	// One run builds the VM template (its builder VM then exits), so a
	// baseline taken next holds no VMM of its own.
	v.ok("run", "--rm", "busybox", "true")
	for deadline := time.Now().Add(60 * time.Second); v.holds().vmms > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("a VMM still runs with no container: %s", v.holds())
		}
		time.Sleep(250 * time.Millisecond)
	}
	return v
}

// start starts (or restarts) the daemon on the same root.
func (v *vch) start() {
	d, err := testenv.StartDaemon(v.dir, "--warm-vms", "0")
	if err != nil {
		v.t.Fatal(err)
	}
	v.d = d
}

// result is one docker CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// docker runs the docker CLI against the daemon.
func (v *vch) docker(args ...string) result {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+v.d.Host)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return result{out.String(), errb.String(), code}
}

// ok is docker, failing the test on a non-zero exit.
func (v *vch) ok(args ...string) string {
	v.t.Helper()
	r := v.docker(args...)
	if r.code != 0 {
		v.t.Fatalf("docker %s: exit %d\n%s%s\ndaemon log:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, v.d.Log(3000))
	}
	return r.stdout
}

// held is what the daemon holds at one moment.
type held struct {
	vmms, taps, fds, runDirs, containers int
}

func (h held) String() string {
	return fmt.Sprintf("%d VMMs, %d taps, %d daemon fds, %d run dirs, %d containers", h.vmms, h.taps, h.fds, h.runDirs, h.containers)
}

// holds counts the daemon's VMMs (processes whose command line names its
// root), the taps in its network namespace, its open file descriptors,
// its containers' run directories and its container records.
func (v *vch) holds() held {
	var h held
	root, _ := filepath.Abs(v.d.Root)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(root+"/")) && bytes.Contains(b, []byte("\x00-name\x00vch-")) {
			h.vmms++
		}
	}
	if out, err := exec.Command("ip", "-n", testenv.NamespaceName(root), "-o", "link", "show", "type", "tun").Output(); err == nil {
		h.taps = strings.Count(string(out), "\n")
	}
	fds, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(v.d.Pid()), "fd"))
	h.fds = len(fds)
	runs, _ := os.ReadDir(filepath.Join(v.d.Root, "compute", "run"))
	h.runDirs = len(runs)
	h.containers = len(strings.Fields(v.docker("ps", "-aq").stdout))
	return h
}

// settled waits (up to 30 s) until the daemon holds no more than base
// (file descriptors may wander by a few: idle HTTP connections, log
// files), and fails the test with both counts otherwise.
func (v *vch) settled(base held) {
	v.t.Helper()
	var now held
	for deadline := time.Now().Add(30 * time.Second); ; {
		now = v.holds()
		if now.vmms <= base.vmms && now.taps <= base.taps && now.runDirs <= base.runDirs &&
			now.containers <= base.containers && now.fds <= base.fds+8 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	v.t.Errorf("leak: the daemon holds %s, against %s before", now, base)
}

// vmmPid is the QEMU process of a running container.
func (v *vch) vmmPid(name string) int {
	v.t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(v.ok("inspect", "-f", "{{.State.Pid}}", name)))
	if err != nil || pid <= 0 {
		v.t.Fatalf("%s has no VMM pid: %v", name, err)
	}
	return pid
}

// serves checks that the daemon still answers and runs containers.
func (v *vch) serves() {
	v.t.Helper()
	if out := v.ok("run", "--rm", "busybox", "echo", "alive"); out != "alive\n" {
		v.t.Errorf("a run after the fault printed %q", out)
	}
}

// killVMMAfter kills a container's VMM with SIGKILL once d has passed.
func killVMMAfter(pid int, d time.Duration) {
	time.AfterFunc(d, func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
}

// TestVMMKilled: kill -9 of a container's QEMU while its main process
// runs, while an exec runs, while a client is attached and while a
// docker cp streams: each ends with a clear non-zero exit or error, the
// container is recorded exited, the daemon serves on and nothing leaks.
func TestVMMKilled(t *testing.T) {
	v := newVCH(t)
	base := v.holds()

	t.Run("run", func(t *testing.T) {
		v.t = t
		v.ok("run", "-d", "--name", "k-run", "busybox", "sleep", "600")
		// The counters see a running container (so the leak check can
		// see one left behind).
		if h := v.holds(); h.vmms != base.vmms+1 || h.taps <= base.taps || h.runDirs <= base.runDirs || h.containers != base.containers+1 {
			t.Errorf("with one container running the daemon holds %s (before: %s)", h, base)
		}
		_ = syscall.Kill(v.vmmPid("k-run"), syscall.SIGKILL)
		code := strings.TrimSpace(v.ok("wait", "k-run"))
		if code == "0" {
			t.Errorf("exit code after the VMM's kill: %s, want non-zero", code)
		}
		if st := v.ok("inspect", "-f", "{{.State.Status}} {{.State.Error}}", "k-run"); !strings.HasPrefix(st, "exited ") || !strings.Contains(st, "container VM ended unexpectedly") {
			t.Errorf("state after the VMM's kill: %q", st)
		}
		v.ok("rm", "k-run")
	})

	t.Run("exec", func(t *testing.T) {
		v.t = t
		v.ok("run", "-d", "--name", "k-exec", "busybox", "sleep", "600")
		killVMMAfter(v.vmmPid("k-exec"), 2*time.Second)
		if r := v.docker("exec", "k-exec", "sleep", "60"); r.code == 0 {
			t.Error("docker exec returned 0 after its VM was killed")
		}
		v.ok("rm", "-f", "k-exec")
	})

	t.Run("attach", func(t *testing.T) {
		v.t = t
		v.ok("run", "-d", "--name", "k-attach", "busybox", "sh", "-c", "while true; do echo tick; sleep 0.2; done")
		killVMMAfter(v.vmmPid("k-attach"), 2*time.Second)
		if r := v.docker("attach", "k-attach"); r.code == 0 || !strings.Contains(r.stdout, "tick") {
			t.Errorf("docker attach across the VM's kill: exit %d, output %q", r.code, r.stdout)
		}
		v.ok("rm", "-f", "k-attach")
	})

	t.Run("cp", func(t *testing.T) {
		v.t = t
		src := filepath.Join(t.TempDir(), "big")
		if err := exec.Command("dd", "if=/dev/urandom", "of="+src, "bs=1M", "count=64", "status=none").Run(); err != nil {
			t.Fatal(err)
		}
		v.ok("run", "-d", "--name", "k-cp", "busybox", "sleep", "600")
		killVMMAfter(v.vmmPid("k-cp"), 300*time.Millisecond)
		if r := v.docker("cp", src, "k-cp:/big"); r.code == 0 {
			// The copy may finish first on a fast host; the container
			// must be dead either way.
			t.Logf("docker cp finished before the VM's kill")
		}
		if st := strings.TrimSpace(v.ok("inspect", "-f", "{{.State.Status}}", "k-cp")); st == "running" {
			time.Sleep(2 * time.Second)
			if st = strings.TrimSpace(v.ok("inspect", "-f", "{{.State.Status}}", "k-cp")); st == "running" {
				t.Errorf("container still running after its VM was killed")
			}
		}
		v.ok("rm", "-f", "k-cp")
	})

	v.t = t
	v.serves()
	v.settled(base)
}

// TestDaemonKilled: kill -9 of the daemon in the middle of a volume
// create, a network create and a container removal. The next daemon on
// the same root lists a consistent state (each object whole or absent),
// the operation can be retried, and nothing leaks.
func TestDaemonKilled(t *testing.T) {
	v := newVCH(t)
	base := v.holds()
	v.ok("run", "-d", "--name", "victim", "busybox", "sleep", "600")
	ops := [][]string{
		{"volume", "create", "chaos-vol"},
		{"network", "create", "chaos-net"},
		{"rm", "-f", "victim"},
	}
	done := make(chan result, len(ops))
	for _, op := range ops {
		go func() { done <- v.docker(op...) }()
	}
	time.Sleep(150 * time.Millisecond)
	v.d.Kill()
	for range ops {
		<-done
	}
	v.start()
	// Every object is whole or absent; each operation can be redone.
	if r := v.docker("volume", "inspect", "chaos-vol"); r.code == 0 {
		v.ok("run", "--rm", "-v", "chaos-vol:/v", "busybox", "touch", "/v/ok")
	}
	v.ok("volume", "create", "chaos-vol")
	v.ok("run", "--rm", "-v", "chaos-vol:/v", "busybox", "touch", "/v/ok")
	if r := v.docker("network", "inspect", "chaos-net"); r.code != 0 {
		v.ok("network", "create", "chaos-net")
	}
	v.ok("run", "--rm", "--network", "chaos-net", "busybox", "true")
	if r := v.docker("inspect", "victim"); r.code == 0 {
		v.ok("rm", "-f", "victim")
	}
	if r := v.docker("inspect", "victim"); r.code == 0 {
		t.Error("victim still listed after its removal was retried")
	}
	v.ok("volume", "rm", "chaos-vol")
	v.ok("network", "rm", "chaos-net")
	v.serves()
	v.settled(held{vmms: base.vmms, taps: base.taps, fds: base.fds + 64, runDirs: base.runDirs, containers: base.containers})
}

// TestChurn: containers created, started, exec'd into and removed, 8 at
// a time (16 in make test, 200 in make chaos): no error, nothing left.
func TestChurn(t *testing.T) {
	v := newVCH(t)
	base := v.holds()
	n := 16
	if full() {
		n = 200
	}
	sem := make(chan struct{}, 8)
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			name := fmt.Sprintf("churn-%d", i)
			for _, args := range [][]string{
				{"create", "--name", name, "busybox", "sleep", "600"},
				{"start", name},
				{"exec", name, "echo", name},
				{"rm", "-f", name},
			} {
				if r := v.docker(args...); r.code != 0 {
					errs <- fmt.Errorf("docker %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
					return
				}
			}
			errs <- nil
		}()
	}
	failed := 0
	for range n {
		if err := <-errs; err != nil {
			failed++
			if failed <= 3 {
				t.Error(err)
			}
		}
	}
	t.Logf("%d containers created, started, exec'd into and removed, 8 at a time, in %v; %d failed", n, time.Since(start).Round(time.Millisecond), failed)
	v.settled(base)
}
