//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSignalRightAfterStart: a signal sent the moment `docker run -d`
// returns reaches the handler the program installs an instant later, as
// on dockerd (the kernel drops a signal to a namespace's PID 1 that has
// no handler yet; tether holds it while the program is young).
func TestSignalRightAfterStart(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sh", "-c", "trap 'echo got-term; exit 99' TERM; while true; do usleep 10000; done")
	defer docker(t, "rm", "-f", name)
	ok(t, "kill", "-s", "TERM", name)
	if code := strings.TrimSpace(ok(t, "wait", name)); code != "99" {
		t.Errorf("exit code after an immediate TERM = %s, want 99 (the trap's)", code)
	}
	if logs := ok(t, "logs", name); logs != "got-term\n" {
		t.Errorf("logs = %q", logs)
	}
	// docker stop right after start: the stop signal, not the kill
	// after the timeout.
	stopped := uniqueName(t) + "-stop"
	ok(t, "run", "-d", "--name", stopped, "busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do usleep 10000; done")
	defer docker(t, "rm", "-f", stopped)
	start := time.Now()
	ok(t, "stop", stopped)
	if code := strings.TrimSpace(ok(t, "inspect", "-f", "{{.State.ExitCode}}", stopped)); code != "0" {
		t.Errorf("exit code after an immediate stop = %s (after %v), want 0", code, time.Since(start))
	}
}

// TestKillReturnsOnceDead: `docker kill` returns once the container has
// exited, so inspect right after it says so.
func TestKillReturnsOnceDead(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "600")
	defer docker(t, "rm", "-f", name)
	ok(t, "kill", name)
	if st := ok(t, "inspect", "-f", "{{.State.Status}} {{.State.Running}} {{.State.ExitCode}}", name); st != "exited false 137\n" {
		t.Errorf("state right after kill = %q, want exited false 137", st)
	}
}

// TestDiffHidesIdentityFiles: the files written into /etc at start (hosts,
// hostname, resolv.conf) do not make diff list /etc, as Docker's init
// layer keeps them out of it.
func TestDiffHidesIdentityFiles(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "--name", name, "busybox", "sh", "-c", "mkdir /foo; echo xyzzy > /foo/bar")
	defer docker(t, "rm", "-f", name)
	if diff := ok(t, "diff", name); diff != "A /foo\nA /foo/bar\n" {
		t.Errorf("diff = %q, want A /foo and A /foo/bar only", diff)
	}
}

// TestContainerDefaults: what dockerd sets in every container is set in
// the VM too: unprivileged ports and ping (sysctls), --sysctl on top, the
// container's own hostname through the embedded DNS on a user network,
// and the IPC mode inspect reports.
func TestContainerDefaults(t *testing.T) {
	t.Parallel()
	out := ok(t, "run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", "busybox", "sh", "-c",
		"cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range /proc/sys/net/ipv4/ip_forward")
	if f := strings.Fields(out); strings.Join(f, " ") != "0 0 2147483647 1" {
		t.Errorf("sysctls in the container: %q, want 0, \"0 2147483647\" and the --sysctl's 1", out)
	}
	if r := docker(t, "run", "--rm", "--sysctl", "../../etc/x=1", "busybox", "true"); r.code == 0 {
		t.Error("a --sysctl naming a path outside /proc/sys was accepted")
	}
	net := uniqueName(t) + "-net"
	ok(t, "network", "create", net)
	defer docker(t, "network", "rm", net)
	// With /etc/hosts emptied, only the embedded DNS knows the hostname.
	if r := docker(t, "run", "--rm", "--network", net, "--hostname", "foobar", "busybox", "sh", "-c", "echo 127.0.0.1 localhost > /etc/hosts && nslookup foobar 127.0.0.11"); r.code != 0 {
		t.Errorf("the container's own hostname through the embedded DNS: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	name := uniqueName(t)
	ok(t, "create", "--name", name, "busybox", "true")
	defer docker(t, "rm", "-f", name)
	if m := ok(t, "inspect", "-f", "{{.HostConfig.IpcMode}} {{.HostConfig.ShmSize}} {{.HostConfig.CgroupnsMode}} {{.HostConfig.PidsLimit}}", name); m != "private 67108864 private <nil>\n" {
		t.Errorf("IpcMode ShmSize CgroupnsMode PidsLimit = %q, want dockerd's defaults private 67108864 private <nil>", m)
	}
	mem := name + "-mem"
	ok(t, "create", "--name", mem, "-m", "64m", "busybox", "true")
	defer docker(t, "rm", "-f", mem)
	if m := ok(t, "inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}", mem); m != "67108864 134217728\n" {
		t.Errorf("Memory MemorySwap = %q, want swap defaulting to twice the memory", m)
	}
	// --network none takes -p (it publishes nothing) and lists none.
	none := name + "-none"
	ok(t, "create", "--name", none, "--network", "none", "-p", "80", "busybox", "true")
	defer docker(t, "rm", "-f", none)
	if n := ok(t, "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", none); n != "none\n" {
		t.Errorf("networks of a --network none container: %q", n)
	}
	if p := ok(t, "info", "-f", "{{.Plugins.Network}} {{.Plugins.Volume}} {{.IPv4Forwarding}}"); p != "[bridge null] [local] true\n" {
		t.Errorf("info Plugins and IPv4Forwarding: %q", p)
	}
}

// TestSecurityOpts: --security-opt no-new-privileges keeps a process from
// gaining privileges (the kernel's NoNewPrivs flag is set in every
// process, exec too), writable-cgroups makes the container's cgroup
// mount writable, and a bad option is dockerd's 400.
func TestSecurityOpts(t *testing.T) {
	t.Parallel()
	if out := ok(t, "run", "--rm", "--security-opt", "no-new-privileges", "busybox", "grep", "NoNewPrivs", "/proc/self/status"); strings.Join(strings.Fields(out), " ") != "NoNewPrivs: 1" {
		t.Errorf("no-new-privileges: %q", out)
	}
	if out := ok(t, "run", "--rm", "busybox", "grep", "NoNewPrivs", "/proc/self/status"); strings.Join(strings.Fields(out), " ") != "NoNewPrivs: 0" {
		t.Errorf("without no-new-privileges: %q", out)
	}
	if r := docker(t, "run", "--rm", "busybox", "mkdir", "/sys/fs/cgroup/foo"); r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("mkdir in a read-only cgroup mount: exit %d %q", r.code, r.stderr)
	}
	ok(t, "run", "--rm", "--security-opt", "writable-cgroups=true", "busybox", "mkdir", "/sys/fs/cgroup/foo")
	// A seccomp profile (the CLI sends the file's content) filters the
	// container's syscalls, exec's too; unconfined is no filter.
	prof := filepath.Join(t.TempDir(), "seccomp.json")
	if err := os.WriteFile(prof, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chown","chown32","fchownat","lchown","fchown"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := docker(t, "run", "--rm", "--security-opt", "seccomp="+prof, "busybox", "chown", "1", "/tmp"); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("chown under a profile that denies it: exit %d %q", r.code, r.stderr)
	}
	ok(t, "run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "chown", "1", "/tmp")
	sc := uniqueName(t) + "-seccomp"
	ok(t, "run", "-d", "--name", sc, "--security-opt", "seccomp="+prof, "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", sc)
	if r := docker(t, "exec", sc, "chown", "1", "/tmp"); r.code == 0 {
		t.Error("an exec escaped the container's seccomp profile")
	}
	if r := docker(t, "create", "--security-opt", "writable-cgroups=potato", "busybox"); r.code == 0 || !strings.Contains(r.stderr, `invalid --security-opt 2: \"writable-cgroups=potato\"`) && !strings.Contains(r.stderr, `invalid --security-opt 2: "writable-cgroups=potato"`) {
		t.Errorf("a bad --security-opt: exit %d %q", r.code, r.stderr)
	}
}

// TestMaskedPaths: dockerd's default masked and read-only paths are in
// effect in the container (/proc/kcore reads empty, /proc/sys cannot be
// written) and shown by inspect; --privileged and
// --security-opt systempaths=unconfined lift them.
func TestMaskedPaths(t *testing.T) {
	t.Parallel()
	probe := "head -c 1 /proc/kcore | wc -c; if echo 1 > /proc/sys/kernel/sysrq; then echo rw; else echo ro; fi"
	if out := strings.Fields(ok(t, "run", "--rm", "busybox", "sh", "-c", probe+" 2>/dev/null")); strings.Join(out, " ") != "0 ro" {
		t.Errorf("default container: kcore bytes and /proc/sys %q, want 0 ro", out)
	}
	for _, opt := range [][]string{{"--privileged"}, {"--security-opt", "systempaths=unconfined"}} {
		args := append(append([]string{"run", "--rm"}, opt...), "busybox", "sh", "-c", probe+" 2>/dev/null")
		if out := strings.Fields(ok(t, args...)); strings.Join(out, " ") != "1 rw" {
			t.Errorf("%v: kcore bytes and /proc/sys %q, want 1 rw", opt, out)
		}
	}
	name := uniqueName(t)
	ok(t, "create", "--name", name, "busybox", "true")
	defer docker(t, "rm", "-f", name)
	if mp := ok(t, "inspect", "-f", "{{json .HostConfig.MaskedPaths}} {{json .HostConfig.ReadonlyPaths}}", name); !strings.Contains(mp, `"/proc/kcore"`) || !strings.Contains(mp, `"/proc/sys"`) {
		t.Errorf("inspect MaskedPaths ReadonlyPaths: %s", mp)
	}
}

// TestExecUserChecked: an exec's user is looked up in the container when
// the exec is created, as dockerd does: a user or group the container
// does not know is refused with the user database's words before anything
// runs; a known one runs.
func TestExecUserChecked(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", name)
	for user, want := range map[string]string{
		"no-such-user":    "unable to find user no-such-user: no matching entries in passwd file",
		"1:no-such-group": "unable to find group no-such-group: no matching entries in group file",
	} {
		if r := docker(t, "exec", "-u", user, name, "id"); r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("exec -u %s: exit %d %q, want %q", user, r.code, r.stderr, want)
		}
	}
	if out := ok(t, "exec", "-u", "daemon", name, "id", "-un"); out != "daemon\n" {
		t.Errorf("exec -u daemon: %q", out)
	}
}
