//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHealthcheck: an image's HEALTHCHECK (from docker build) and
// --health-* flags run as probes in the guest; docker ps and inspect show
// starting, unhealthy and healthy as dockerd does, with the last probes
// in State.Health.Log; --no-healthcheck turns the image's off.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox\nHEALTHCHECK --interval=1s --timeout=5s --retries=2 CMD test -e /tmp/ok\nCMD [\"sleep\", \"300\"]\n"), 0o644)
	tag := "vch-e2e/health:" + strings.ToLower(uniqueName(t))
	if r := dockerBuild(t, "-q", "-t", tag, dir); r.code != 0 {
		t.Fatalf("build: %s", r.stderr)
	}
	defer docker(t, "rmi", tag)
	if hc := ok(t, "image", "inspect", "-f", "{{json .Config.Healthcheck.Test}} {{.Config.Healthcheck.Retries}}", tag); hc != `["CMD-SHELL","test -e /tmp/ok"] 2`+"\n" {
		t.Errorf("image healthcheck: %q", hc)
	}
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, tag)
	defer docker(t, "rm", "-f", name)
	waitHealth := func(c, want string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			got := strings.TrimSpace(ok(t, "inspect", "-f", "{{.State.Health.Status}}", c))
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: health %q, want %q", c, got, want)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitHealth(name, "unhealthy")
	if st := ok(t, "ps", "--filter", "name="+name, "--format", "{{.Status}}"); !strings.HasSuffix(st, "(unhealthy)\n") {
		t.Errorf("ps status: %q", st)
	}
	ok(t, "exec", name, "touch", "/tmp/ok")
	waitHealth(name, "healthy")
	if log := ok(t, "inspect", "-f", "{{.State.Health.FailingStreak}} {{len .State.Health.Log}} {{(index .State.Health.Log 0).ExitCode}}", name); !strings.HasPrefix(log, "0 ") {
		t.Errorf("health log: %q", log)
	}

	// Flags: a probe that prints and fails; and --no-healthcheck.
	flagged := uniqueName(t) + "-flags"
	ok(t, "run", "-d", "--name", flagged, "--health-cmd", "echo probe-out; exit 1", "--health-interval", "1s", "--health-retries", "1", "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", flagged)
	waitHealth(flagged, "unhealthy")
	if out := ok(t, "inspect", "-f", "{{(index .State.Health.Log 0).Output}}", flagged); out != "probe-out\n\n" {
		t.Errorf("probe output: %q", out)
	}
	off := uniqueName(t) + "-off"
	ok(t, "run", "-d", "--name", off, "--no-healthcheck", tag)
	defer docker(t, "rm", "-f", off)
	if h := ok(t, "inspect", "-f", "{{.State.Health}}", off); h != "<nil>\n" {
		t.Errorf("--no-healthcheck: health %q", h)
	}
	if r := docker(t, "run", "--rm", "--health-interval", "1us", "busybox", "true"); r.code == 0 || !strings.Contains(r.stderr, "Interval in Healthcheck cannot be less than 1ms") {
		t.Errorf("bad interval: exit %d %s", r.code, r.stderr)
	}
}

// TestHealthcheckTimeout: a probe's timeout counts from its start in the
// guest, so a short one is not eaten by the exec's start; a probe that
// outlives it fails with dockerd's text and what it printed, and is
// killed (the probes do not pile up in the container).
func TestHealthcheckTimeout(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "--health-cmd", "echo started; sleep 30", "--health-timeout", "300ms",
		"--health-interval", "1s", "--health-retries", "1", "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", name)
	var log string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		log = ok(t, "inspect", "-f", "{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}|{{end}}", name)
		if strings.Count(log, "|") >= 3 {
			break
		}
	}
	if !strings.Contains(log, "-1 Health check exceeded timeout (300ms): started\n|") {
		t.Errorf("health log %q: want the timeout text with the probe's output", log)
	}
	if st := ok(t, "inspect", "-f", "{{.State.Health.Status}}", name); st != "unhealthy\n" {
		t.Errorf("health status %q, want unhealthy", st)
	}
	// Each timed-out probe was killed: at most the running one sleeps.
	if n := strings.Count(ok(t, "exec", name, "ps", "-o", "args"), "sleep 30"); n > 1 {
		t.Errorf("%d probes still sleeping in the container, want at most 1", n)
	}
}
