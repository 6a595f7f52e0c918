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
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vchproject/vch/internal/busyboximage"
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
	return newVCHIn(t, t.TempDir())
}

// newVCHIn is newVCH with the daemon's files (its root among them) in dir.
func newVCHIn(t *testing.T, dir string) *vch {
	t.Helper()
	testenv.RequireVMs(t)
	testenv.RequireBinary(t, "docker")
	v := &vch{t: t, dir: dir}
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
// runs, while an exec runs, while a client is attached, while a docker
// cp streams and while a docker commit reads the container's changes: each ends with a clear non-zero exit or error, the
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

	t.Run("commit", func(t *testing.T) {
		v.t = t
		const size = 48 << 20
		v.ok("run", "-d", "--name", "k-commit", "busybox", "sh", "-c", "dd if=/dev/urandom of=/big bs=1M count=48 2>/dev/null && sync && touch /done && sleep 600")
		for deadline := time.Now().Add(60 * time.Second); v.docker("exec", "k-commit", "test", "-e", "/done").code != 0; {
			if time.Now().After(deadline) {
				t.Fatal("the container did not write /big within 60 s")
			}
			time.Sleep(250 * time.Millisecond)
		}
		killVMMAfter(v.vmmPid("k-commit"), 300*time.Millisecond)
		if r := v.docker("commit", "k-commit", "k-commit-img"); r.code == 0 {
			// The commit may finish before the kill; its image must then
			// be whole.
			t.Logf("docker commit finished before the VM's kill")
			if out := v.ok("run", "--rm", "k-commit-img", "stat", "-c", "%s", "/big"); strings.TrimSpace(out) != strconv.Itoa(size) {
				t.Errorf("the committed image's /big has %s bytes, want %d", out, size)
			}
			v.ok("rmi", "k-commit-img")
		} else {
			t.Logf("docker commit across the VM's kill: %s", strings.TrimSpace(r.stderr))
			if v.docker("image", "inspect", "k-commit-img").code == 0 {
				t.Errorf("a failed commit left an image k-commit-img")
			}
		}
		if st := strings.TrimSpace(v.ok("inspect", "-f", "{{.State.Status}}", "k-commit")); st == "running" || st == "paused" {
			time.Sleep(2 * time.Second)
			if st = strings.TrimSpace(v.ok("inspect", "-f", "{{.State.Status}}", "k-commit")); st == "running" || st == "paused" {
				t.Errorf("container %s after its VM was killed", st)
			}
		}
		v.ok("rm", "-f", "k-commit")
	})

	v.t = t
	v.serves()
	v.settled(base)
}

// pushedImage serves go-containerregistry's in-memory registry on
// 127.0.0.1 for the test's life and pushes busybox with a layer of
// layerBytes random bytes to it; it returns the image's reference.
func pushedImage(t *testing.T, layerBytes int64) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	img, err := busyboximage.Build(busyboximage.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := random.Layer(layerBytes, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	ref := l.Addr().String() + "/chaos/pull:1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestDaemonKilled: kill -9 of the daemon in the middle of a pull, a
// load, a commit, a cp into a container, a volume create, a network
// create and a container removal. The next daemon on the same root lists a consistent
// state (each object whole or absent), every operation can be redone,
// and nothing leaks.
func TestDaemonKilled(t *testing.T) {
	v := newVCH(t)
	base := v.holds()
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := exec.Command("dd", "if=/dev/urandom", "of="+big, "bs=1M", "count=32", "status=none").Run(); err != nil {
		t.Fatal(err)
	}
	sum := func(s string) string { return strings.Fields(s + " x")[0] }
	want, err := exec.Command("md5sum", big).Output()
	if err != nil {
		t.Fatal(err)
	}
	// An image to load: busybox with the big file, saved and removed.
	v.ok("run", "-d", "--name", "src", "busybox", "sleep", "600")
	v.ok("cp", big, "src:/big")
	v.ok("commit", "src", "chaos-load:1")
	tarball := filepath.Join(dir, "load.tar")
	v.ok("save", "-o", tarball, "chaos-load:1")
	v.ok("rmi", "chaos-load:1")
	v.ok("run", "-d", "--name", "victim", "busybox", "sleep", "600")
	v.ok("run", "-d", "--name", "cp-target", "busybox", "sleep", "600")
	pullRef := pushedImage(t, 48<<20)
	ops := [][]string{
		{"pull", pullRef},
		{"load", "-i", tarball},
		{"commit", "src", "chaos-commit:1"},
		{"cp", big, "cp-target:/big"},
		{"volume", "create", "chaos-vol"},
		{"network", "create", "chaos-net"},
		{"rm", "-f", "victim"},
	}
	type opResult struct {
		op []string
		r  result
	}
	done := make(chan opResult, len(ops))
	for _, op := range ops {
		go func() { done <- opResult{op, v.docker(op...)} }()
	}
	time.Sleep(400 * time.Millisecond)
	v.d.Kill()
	cut := 0
	for range ops {
		o := <-done
		if o.r.code != 0 {
			cut++
		}
		t.Logf("docker %s across the kill: exit %d", strings.Join(o.op, " "), o.r.code)
	}
	t.Logf("%d of %d operations were cut by the kill", cut, len(ops))
	v.start()
	// Each image is whole (its file intact) or absent and loadable again.
	for _, img := range []string{"chaos-load:1", "chaos-commit:1"} {
		if v.docker("image", "inspect", img).code != 0 {
			if img == "chaos-load:1" {
				v.ok("load", "-i", tarball)
			} else {
				v.ok("commit", "src", img)
			}
		}
		if got := v.ok("run", "--rm", img, "md5sum", "/big"); sum(got) != sum(string(want)) {
			t.Errorf("%s after the daemon's kill: /big %s, want %s", img, got, want)
		}
	}
	// The pulled image is whole or absent; a pull again completes it.
	v.ok("pull", pullRef)
	v.ok("run", "--rm", pullRef, "true")
	// The cp is redone; the container (its VM outlived the daemon) has
	// the whole file.
	v.ok("cp", big, "cp-target:/big")
	if got := v.ok("exec", "cp-target", "md5sum", "/big"); sum(got) != sum(string(want)) {
		t.Errorf("cp redone after the daemon's kill: %s, want %s", got, want)
	}
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
		t.Error("victim still listed after its removal was redone")
	}
	v.ok("rm", "-f", "src", "cp-target")
	v.ok("rmi", "chaos-load:1", "chaos-commit:1", pullRef)
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

// rssKiB is a process's resident set, in KiB (/proc/PID/status VmRSS).
func rssKiB(pid int) int {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// floodBoundKiB is how much the daemon's RSS may grow while a guest
// floods stdout to a client that does not read: the guest agent's spool
// (1 MiB a stream), the daemon's copy buffers and the HTTP connection's
// are each bounded, so the growth is a few MiB whatever the flood's size.
const floodBoundKiB = 64 << 10

// TestFloodSlowReader: a guest writing stdout as fast as it can to an
// attached client that reads nothing for 10 s, then reads slowly: the
// daemon's memory stays within floodBoundKiB (the guest blocks on its own
// writes instead), the log rotates within its bound, and the output the
// client reads in the end is whole lines.
func TestFloodSlowReader(t *testing.T) {
	v := newVCH(t)
	base := v.holds()
	v.ok("run", "-d", "--name", "flood", "--log-opt", "max-size=1m", "--log-opt", "max-file=2", "busybox", "sh", "-c", "yes 0123456789012345678901234567890123456789")
	cmd := exec.Command("docker", "attach", "--no-stdin", "flood")
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+v.d.Host)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	before := rssKiB(v.d.Pid())
	worst := before
	for range 20 {
		time.Sleep(500 * time.Millisecond)
		worst = max(worst, rssKiB(v.d.Pid()))
	}
	// Now read slowly: 64 KiB every 100 ms for 2 s.
	buf := make([]byte, 64<<10)
	var got []byte
	for range 20 {
		n, _ := out.Read(buf)
		got = append(got, buf[:n]...)
		worst = max(worst, rssKiB(v.d.Pid()))
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	t.Logf("daemon RSS %d KiB before the unread flood, at most %d KiB during it (bound: +%d KiB)", before, worst, floodBoundKiB)
	if worst-before > floodBoundKiB {
		t.Errorf("the daemon grew by %d KiB while a client did not read a flood", worst-before)
	}
	if lines := strings.Split(string(got), "\n"); len(lines) < 3 || lines[1] != "0123456789012345678901234567890123456789" {
		t.Errorf("the slow reader got %q…", got[:min(len(got), 120)])
	}
	logs, _ := filepath.Glob(filepath.Join(v.d.Root, "compute", "containers", "*", "*.log*"))
	var logBytes int64
	for _, l := range logs {
		if st, err := os.Stat(l); err == nil {
			logBytes += st.Size()
		}
	}
	if logBytes > 3<<20 {
		t.Errorf("the flood's log files hold %d bytes; max-size=1m max-file=2 bounds them to ~2 MiB", logBytes)
	}
	v.ok("rm", "-f", "flood")
	v.serves()
	v.settled(base)
}

// TestDiskFull: a container that fills its volume's disk gets ENOSPC
// ("No space left on device") and goes on; the data written before is
// whole; the daemon serves on.
func TestDiskFull(t *testing.T) {
	v := newVCH(t)
	base := v.holds()
	v.ok("volume", "create", "--opt", "size=64m", "small")
	r := v.docker("run", "--rm", "-v", "small:/v", "busybox", "sh", "-c",
		"echo keep > /v/keep; dd if=/dev/zero of=/v/fill bs=1M count=200 2>&1; echo dd=$?; sync; cat /v/keep")
	if r.code != 0 || !strings.Contains(r.stdout, "No space left on device") || !strings.Contains(r.stdout, "dd=1") || !strings.HasSuffix(r.stdout, "keep\n") {
		t.Errorf("filling a 64 MiB volume: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out := v.ok("run", "--rm", "-v", "small:/v", "busybox", "sh", "-c", "rm /v/fill && echo freed > /v/after && cat /v/keep /v/after"); out != "keep\nfreed\n" {
		t.Errorf("after freeing the volume: %q", out)
	}
	v.ok("volume", "rm", "small")
	v.serves()
	v.settled(base)
}

// TestRootFull: the filesystem of the VCH's root fills up while a
// container writes to its root disk. The container's VM stops (no write
// is lost) and shows paused with State.Error saying why; exec is refused
// with a clear error meanwhile, `docker ps` answers; once space is freed
// on the host the container runs again by itself and finishes with all
// it wrote intact.
func TestRootFull(t *testing.T) {
	testenv.RequireVMs(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1g,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v: %s", err, out)
	}
	// Registered first, so it runs after the daemon's stop.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	v := newVCHIn(t, dir)
	base := v.holds()
	// Leave 160 MiB free: the container writes 320 MiB.
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	filler := filepath.Join(dir, "filler")
	if out, err := exec.Command("fallocate", "-l", strconv.FormatInt(free-160<<20, 10), filler).CombinedOutput(); err != nil {
		t.Fatalf("fallocate: %v: %s", err, out)
	}
	v.ok("run", "-d", "--name", "fills", "busybox", "sh", "-c",
		"echo before > /keep && sync && dd if=/dev/zero of=/fill bs=1M count=320 2>/dev/null; echo dd=$?; sync; cat /keep; ls -l /fill | awk '{print $5}'")
	var state string
	for deadline := time.Now().Add(120 * time.Second); ; {
		state = v.ok("inspect", "-f", "{{.State.Status}} {{.State.Error}}", "fills")
		if strings.HasPrefix(state, "paused ") {
			break
		}
		if !strings.HasPrefix(state, "running") || time.Now().After(deadline) {
			t.Fatalf("while the disk fills the container is %q; want paused\n%s", state, v.d.Log(3000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(state, "disk is full") {
		t.Errorf("State.Error of the stopped container: %q", state)
	}
	if r := v.docker("exec", "fills", "true"); r.code == 0 || !strings.Contains(r.stderr, "paused") {
		t.Errorf("exec while the disk is full: exit %d %s", r.code, r.stderr)
	}
	if out := v.ok("ps", "--filter", "name=fills", "--format", "{{.Status}}"); !strings.Contains(out, "Paused") {
		t.Errorf("ps while the disk is full: %q", out)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	code := strings.TrimSpace(v.ok("wait", "fills"))
	logs := v.ok("logs", "fills")
	if code != "0" || logs != "dd=0\nbefore\n"+strconv.Itoa(320<<20)+"\n" {
		t.Errorf("after space was freed: exit %s, output %q", code, logs)
	}
	v.ok("rm", "fills")
	v.serves()
	v.settled(base)
}
