//go:build e2e

package e2e

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestUpdate: docker update sets the restart policy in any state and the
// container's limits: while it is stopped (its next VM is sized to hold
// them) and while it runs, at once in its guest cgroup when its VM can
// hold them; a limit its running VM cannot hold is refused with a
// message naming the VM's size.
func TestUpdate(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "create", "--name", name, "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", name)
	ok(t, "update", "--memory", "192m", "--cpus", "2", "--restart", "on-failure:2", name)
	if hc := ok(t, "inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}", name); hc != "201326592 2000000000 on-failure:2\n" {
		t.Errorf("host config after update: %q", hc)
	}
	ok(t, "start", name)
	out := strings.Fields(ok(t, "exec", name, "sh", "-c", "nproc; cat /sys/fs/cgroup/memory.max; awk '/MemTotal/ {print $2}' /proc/meminfo"))
	if len(out) != 3 || out[0] != "2" || out[1] != "201326592" {
		t.Fatalf("guest after update (nproc, memory.max, MemTotal kB): %q", out)
	}
	// 192 MiB plus the VM's overhead rounds up to a 512 MiB VM.
	if kb, _ := strconv.Atoi(out[2]); kb > 512*1024 || kb < 400*1024 {
		t.Errorf("guest MemTotal %d kB, want a 512 MiB VM", kb)
	}
	ok(t, "update", "--memory", "300m", "--memory-swap", "500m", name)
	if got := strings.Fields(ok(t, "exec", name, "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.swap.max")); !slices.Equal(got, []string{"314572800", "209715200"}) {
		t.Errorf("memory.max, memory.swap.max after a live update: %q", got)
	}
	if r := docker(t, "update", "--memory", "1g", "--memory-swap", "2g", name); r.code == 0 || !strings.Contains(r.stderr, "its VM runs with 512 MiB and 2 vCPU, which a running VM cannot change") {
		t.Errorf("a limit past the running VM's size: exit %d %s", r.code, r.stderr)
	}
	if m := ok(t, "inspect", "-f", "{{.HostConfig.Memory}}", name); m != "314572800\n" {
		t.Errorf("memory after a refused update: %q", m)
	}
	ok(t, "update", "--restart", "always", name)
	if p := ok(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name); p != "always\n" {
		t.Errorf("policy after update: %q", p)
	}
	rm := uniqueName(t) + "-rm"
	ok(t, "create", "--rm", "--name", rm, "busybox", "true")
	defer docker(t, "rm", "-f", rm)
	if r := docker(t, "update", "--restart", "always", rm); r.code == 0 || !strings.Contains(r.stderr, "Restart policy cannot be updated because AutoRemove is enabled for the container") {
		t.Errorf("update of an --rm container: exit %d %s", r.code, r.stderr)
	}
	if r := docker(t, "update", "--cpu-shares", "512", name); r.code == 0 || !strings.Contains(r.stderr, "--cpu-shares is not supported by vch") {
		t.Errorf("--cpu-shares: exit %d %s", r.code, r.stderr)
	}
}
