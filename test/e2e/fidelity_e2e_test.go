//go:build e2e

package e2e

import (
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
