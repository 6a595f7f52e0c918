//go:build e2e

package e2e

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMemoryLimitOOM: -m is a limit on the container's processes, not the
// size of the machine: a 32 MiB container that keeps allocating is
// killed by the guest kernel (exit 137, State.OOMKilled, an oom event
// before die) while its VM, sized to hold the limit, lives on to report it.
func TestMemoryLimitOOM(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	since := time.Now().Add(-time.Second).Unix()
	r := docker(t, "run", "--name", name, "-m", "32m", "--memory-swap", "32m", "busybox", "tail", "/dev/zero")
	defer docker(t, "rm", "-f", name)
	if r.code != 137 {
		t.Fatalf("run -m 32m tail /dev/zero: exit %d (%s), want 137", r.code, r.stderr)
	}
	if st := ok(t, "inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}", name); st != "true 137 33554432 33554432\n" {
		t.Errorf("state after the OOM kill: %q", st)
	}
	ev := ok(t, "events", "--since", strconv.FormatInt(since, 10), "--until", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10),
		"--filter", "container="+name, "--format", "{{.Action}}")
	if got := strings.Fields(ev); !slices.Contains(got, "oom") || slices.Index(got, "oom") > slices.Index(got, "die") {
		t.Errorf("events %q: want oom before die", got)
	}
	// The same program under a limit it never reaches is not marked.
	calm := uniqueName(t) + "-calm"
	if out := ok(t, "run", "--name", calm, "-m", "32m", "busybox", "head", "-c", "1000000", "/dev/zero"); len(out) != 1000000 {
		t.Errorf("head -c 1000000 printed %d bytes", len(out))
	}
	defer docker(t, "rm", "-f", calm)
	if st := ok(t, "inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", calm); st != "false 0\n" {
		t.Errorf("state of a container within its limit: %q", st)
	}
}

// TestCgroupLimitsInside: the container sees its own cgroup (cgroup v2,
// its namespace rooted at the container) with the limits docker run
// set, as on dockerd with cgroup v2; docker info reports that support.
func TestCgroupLimitsInside(t *testing.T) {
	t.Parallel()
	out := ok(t, "run", "--rm", "-m", "64m", "--cpus", "0.5", "--pids-limit", "20", "busybox", "cat",
		"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.swap.max", "/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/pids.max", "/proc/self/cgroup")
	want := "67108864\n67108864\n50000 100000\n20\n0::/\n"
	if out != want {
		t.Errorf("cgroup files inside the container:\n%s\nwant:\n%s", out, want)
	}
	if out := ok(t, "run", "--rm", "busybox", "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max"); out != "max\nmax\n" {
		t.Errorf("cgroup files without limits: %q", out)
	}
	if r := docker(t, "run", "--rm", "busybox", "sh", "-c", "echo 1 > /sys/fs/cgroup/pids.max"); r.code == 0 {
		t.Error("the container could write its own cgroup limits")
	}
	if info := ok(t, "info", "-f", "{{.CgroupDriver}} {{.CgroupVersion}} {{.MemoryLimit}} {{.SwapLimit}} {{.PidsLimit}}"); info != "cgroupfs 2 true true true\n" {
		t.Errorf("docker info cgroup fields: %q", info)
	}
	// docker stats: the processes' usage against their limit.
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "-m", "100m", "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", name)
	if use := ok(t, "stats", "--no-stream", "--format", "{{.MemUsage}}", name); !strings.HasSuffix(strings.TrimSpace(use), " / 100MiB") {
		t.Errorf("docker stats memory: %q, want usage / 100MiB", use)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-m", "5m"}, "Minimum memory limit allowed is 6MB"},
		{[]string{"-m", "64m", "--memory-swap", "32m"}, "Minimum memoryswap limit should be larger than memory limit, see usage"},
		{[]string{"--cpus", "0.5", "--cpu-quota", "50000"}, "Conflicting options: Nano CPUs and CPU Quota cannot both be set"},
	} {
		args := append(append([]string{"create"}, tc.args...), "busybox", "true")
		if r := docker(t, args...); r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("docker %s: exit %d %q, want %q", strings.Join(args, " "), r.code, r.stderr, tc.want)
		}
	}
}
