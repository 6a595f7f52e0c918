//go:build e2e

package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// TestUpdate: docker update sets the restart policy in any state and the
// VM's memory and vCPUs while it is stopped (the guest then sees them); a
// running VM's size is refused with a message naming it.
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
	out := strings.Fields(ok(t, "exec", name, "sh", "-c", "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo"))
	if len(out) != 2 || out[0] != "2" {
		t.Fatalf("guest after update: %q", out)
	}
	if kb, _ := strconv.Atoi(out[1]); kb > 192*1024 || kb < 100*1024 {
		t.Errorf("guest MemTotal %d kB, want a 192 MiB VM", kb)
	}
	if r := docker(t, "update", "--memory", "256m", name); r.code == 0 || !strings.Contains(r.stderr, "a running VM cannot change") {
		t.Errorf("resize while running: exit %d %s", r.code, r.stderr)
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
