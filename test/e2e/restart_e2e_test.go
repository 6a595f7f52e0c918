//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/vchproject/vch/internal/testenv"
)

// restartDaemon is a daemon of the test's own (not the shared one): the
// test stops, kills and restarts it on the same root.
type restartDaemon struct {
	t   *testing.T
	dir string
	d   *testenv.Daemon
}

func newRestartDaemon(t *testing.T) *restartDaemon {
	t.Helper()
	need(t)
	r := &restartDaemon{t: t, dir: t.TempDir()}
	r.start()
	t.Cleanup(func() {
		// Leave nothing running: remove every container, then stop.
		if out, err := dockerCmd(t, r.d.Host, "ps", "-aq").Output(); err == nil {
			if ids := strings.Fields(string(out)); len(ids) > 0 {
				_ = dockerCmd(t, r.d.Host, append([]string{"rm", "-f"}, ids...)...).Run()
			}
		}
		r.d.Stop(60 * time.Second)
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", r.d.Log(30000))
		}
	})
	if err := r.d.LoadBusybox(r.dir); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *restartDaemon) start() {
	r.t.Helper()
	d, err := testenv.StartDaemon(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	r.d = d
}

// docker runs the CLI against this daemon and fails the test on error.
func (r *restartDaemon) docker(args ...string) string {
	r.t.Helper()
	out, err := dockerCmd(r.t, r.d.Host, args...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("docker %s: %v\n%s\n--- daemon log:\n%s", strings.Join(args, " "), err, out, r.d.Log(8000))
	}
	return string(out)
}

func (r *restartDaemon) inspect(name, format string) string {
	r.t.Helper()
	return strings.TrimSpace(r.docker("inspect", "--format", format, name))
}

// counterCmd prints 0, 1, 2, … every 0.2 s.
var counterCmd = []string{"sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done"}

// counterLines checks that name's logs are 0, 1, 2, … with no gap and no
// repeat, and returns how many lines there are.
func (r *restartDaemon) counterLines(name string) int {
	r.t.Helper()
	out := r.docker("logs", name)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		if l != strconv.Itoa(i) {
			r.t.Fatalf("logs of %s: line %d is %q, want %d (a gap or a repeat)\n%s", name, i, l, i, out)
		}
	}
	return len(lines)
}

// waitLines waits until name has logged more than n lines.
func (r *restartDaemon) waitLines(name string, n int) int {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := r.counterLines(name)
		if got > n {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s logged %d lines in 60 s, want more than %d", name, got, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// running is the state of a running container to compare across a
// daemon restart.
type running struct{ startedAt, pid, hostPort string }

func (r *restartDaemon) snapshot(name string) running {
	return running{startedAt: r.inspect(name, "{{.State.StartedAt}}"), pid: r.inspect(name, "{{.State.Pid}}")}
}

// checkSurvived checks what a daemon restart must keep: both containers
// running with the same StartedAt (and the same VMM), logs continuing with
// nothing lost or repeated, exec, attach and the published port working.
func (r *restartDaemon) checkSurvived(counter, web string, before map[string]running, linesBefore int, hostPort string) {
	r.t.Helper()
	for _, name := range []string{counter, web} {
		if st := r.docker("ps", "--filter", "name=^"+name+"$", "--format", "{{.Status}}"); !strings.HasPrefix(st, "Up ") {
			r.t.Errorf("%s after the restart: ps status %q, want Up", name, st)
		}
		if now := r.snapshot(name); now.startedAt != before[name].startedAt || now.pid != before[name].pid {
			r.t.Errorf("%s: StartedAt/Pid %v after the restart, %v before", name, now, before[name])
		}
	}
	// Lines written while no daemon ran are in the log, once.
	n := r.waitLines(counter, linesBefore+3)
	if top := r.docker("top", counter); !strings.Contains(top, "sleep") && !strings.Contains(top, "sh -c") {
		r.t.Errorf("docker top after the restart: %q", top)
	}
	if got := strings.TrimSpace(r.docker("exec", counter, "echo", "exec after restart")); got != "exec after restart" {
		r.t.Errorf("exec after the restart: %q", got)
	}
	if body := getURL(r.t, "http://"+hostPort+"/"); strings.TrimSpace(body) != "hello from "+web {
		r.t.Errorf("published port after the restart: %q", body)
	}
	// docker attach streams the running counter's live output.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "attach", "--no-stdin", counter)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+r.d.Host, "DOCKER_CONFIG="+r.t.TempDir())
	out, _ := cmd.Output()
	if lines := strings.Fields(string(out)); len(lines) < 2 {
		r.t.Errorf("docker attach after the restart got %q, want live lines", out)
	} else if v, err := strconv.Atoi(lines[0]); err != nil || v < n-2 {
		r.t.Errorf("docker attach starts at %q, want live output (logged %d lines)", lines[0], n)
	}
	r.counterLines(counter)
}

// TestDaemonRestartKeepsContainers: container VMs survive their daemon —
// a SIGTERM, then a kill -9 — and the next daemon on the same root takes
// them back; then a simulated host reboot (every VMM killed while no
// daemon runs) brings back only the container whose restart policy says
// so.
func TestDaemonRestartKeepsContainers(t *testing.T) {
	t.Parallel()
	r := newRestartDaemon(t)
	counter, web := "counter", "web"
	r.docker(append([]string{"run", "-d", "--name", counter, "--restart", "always", "busybox"}, counterCmd...)...)
	r.docker(append([]string{"run", "-d", "--name", web, "-p", "127.0.0.1::8080", "busybox"}, httpdCmd(web)...)...)
	hostPort := strings.TrimSpace(r.docker("port", web, "8080/tcp"))
	if body := getURL(t, "http://"+hostPort+"/"); strings.TrimSpace(body) != "hello from "+web {
		t.Fatalf("published port: %q", body)
	}
	n := r.waitLines(counter, 3)
	before := map[string]running{counter: r.snapshot(counter), web: r.snapshot(web)}

	t.Run("SIGTERM", func(t *testing.T) {
		r.t = t
		if !r.d.Terminate(60 * time.Second) {
			t.Fatalf("daemon did not stop on SIGTERM within 60 s")
		}
		if _, err := os.Stat(filepath.Join(r.dir, "docker.sock")); !os.IsNotExist(err) {
			t.Errorf("socket still there after the stop: %v", err)
		}
		for name, s := range before {
			if err := syscall.Kill(atoi(t, s.pid), 0); err != nil {
				t.Errorf("%s's VM (QEMU pid %s) did not survive the daemon's stop: %v", name, s.pid, err)
			}
		}
		time.Sleep(time.Second) // the counter counts on while no daemon runs
		r.start()
		r.checkSurvived(counter, web, before, n, hostPort)
		n = r.counterLines(counter)
	})

	t.Run("KILL", func(t *testing.T) {
		r.t = t
		// A paused container stays paused across the restart.
		r.docker("pause", web)
		r.d.Kill()
		time.Sleep(time.Second)
		r.start()
		if st := r.inspect(web, "{{.State.Status}}"); st != "paused" {
			t.Errorf("%s after the restart: %s, want paused", web, st)
		}
		r.docker("unpause", web)
		r.checkSurvived(counter, web, before, n, hostPort)
		n = r.counterLines(counter)
	})

	t.Run("HostReboot", func(t *testing.T) {
		r.t = t
		if !r.d.Terminate(60 * time.Second) {
			t.Fatalf("daemon did not stop on SIGTERM within 60 s")
		}
		for _, s := range before {
			pid := atoi(t, s.pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("QEMU pid %d still there", pid)
				}
			}
		}
		r.start()
		// --restart always: started again (a new VM, a new StartedAt).
		deadline := time.Now().Add(90 * time.Second)
		for r.inspect(counter, "{{.State.Status}}") != "running" {
			if time.Now().After(deadline) {
				t.Fatalf("%s not running again: %s", counter, r.docker("ps", "-a"))
			}
			time.Sleep(300 * time.Millisecond)
		}
		if s := r.snapshot(counter); s.startedAt == before[counter].startedAt {
			t.Errorf("%s: StartedAt %s unchanged, want a new run", counter, s.startedAt)
		}
		// No policy: exited, with 255 as its VM is gone.
		if st := r.inspect(web, "{{.State.Status}} {{.State.ExitCode}}"); st != "exited 255" {
			t.Errorf("%s after the host reboot: %q, want exited 255", web, st)
		}
		if st := r.docker("ps", "-a", "--filter", "name=^"+web+"$", "--format", "{{.Status}}"); !strings.HasPrefix(st, "Exited (255)") {
			t.Errorf("ps status of %s: %q", web, st)
		}
		// The new run's output follows the old one's in the log (the new
		// run may not have printed yet when it shows running).
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
			out := r.docker("logs", counter)
			if strings.HasSuffix(strings.TrimSpace(out), "\n0") || strings.Contains(out, "\n0\n") {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("new run's output missing from the log: %q", out)
				break
			}
		}
		// A stop by hand ends it (a docker wait sees the exit) and the
		// policy leaves it stopped.
		wait := dockerCmd(t, r.d.Host, "wait", counter)
		var waitOut strings.Builder
		wait.Stdout = &waitOut
		if err := wait.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		r.docker("stop", "-t", "1", counter)
		if err := wait.Wait(); err != nil || strings.TrimSpace(waitOut.String()) != "137" {
			t.Errorf("docker wait: %q, %v; want 137", waitOut.String(), err)
		}
		if st := r.inspect(counter, "{{.State.Status}}"); st != "exited" {
			t.Errorf("%s after stop: %s", counter, st)
		}
		time.Sleep(time.Second)
		if st := r.inspect(counter, "{{.State.Status}} {{.RestartCount}}"); st != "exited 0" {
			t.Errorf("%s restarted after a stop by hand: %s", counter, st)
		}
	})
}

// TestRestartPolicyOnFailure: a failing container is restarted by its
// policy as often as it allows, with RestartCount counting, then stays
// exited; --rm with a restart policy is refused.
func TestRestartPolicyOnFailure(t *testing.T) {
	t.Parallel()
	need(t)
	c := apiClient(t)
	ctx := t.Context()
	name := uniqueName(t)
	resp, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       name,
		Config:     &container.Config{Image: "busybox", Cmd: []string{"sh", "-c", "echo run; exit 3"}},
		HostConfig: &container.HostConfig{RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyOnFailure, MaximumRetryCount: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = c.ContainerRemove(context.Background(), resp.ID, client.ContainerRemoveOptions{Force: true})
	})
	if _, err := c.ContainerStart(ctx, resp.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		res, err := c.ContainerInspect(ctx, resp.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		in := res.Container
		if in.RestartCount == 1 && in.State.Status == container.StateExited {
			if in.State.ExitCode != 3 || in.HostConfig.RestartPolicy.Name != container.RestartPolicyOnFailure {
				t.Errorf("final state %+v, policy %+v", in.State, in.HostConfig.RestartPolicy)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %s, RestartCount %d after 2 min", in.State.Status, in.RestartCount)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if logs := ok(t, "logs", name); logs != "run\nrun\n" {
		t.Errorf("logs %q, want one line per run", logs)
	}

	_, err = c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config:     &container.Config{Image: "busybox", Cmd: []string{"true"}},
		HostConfig: &container.HostConfig{AutoRemove: true, RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyAlways}},
	})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "can't create 'AutoRemove' container with restart policy") {
		t.Errorf("--rm with --restart always: %v", err)
	}
	if r := docker(t, "create", "--restart", "always:3", "busybox", "true"); r.code == 0 || !strings.Contains(r.stderr, "maximum retry count can only be used with 'on-failure'") {
		t.Errorf("--restart always:3: exit %d, %q", r.code, r.stderr)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("pid %q", s)
	}
	return n
}

// TestRestartAutoRemove: docker restart of an --rm container restarts it
// (the exit in between does not remove it, as on dockerd); a stop then
// removes it.
func TestRestartAutoRemove(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	since := time.Now().Add(-time.Second).Unix()
	ok(t, "run", "-d", "--rm", "--name", name, "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", name)
	ok(t, "restart", "-t", "0", name)
	if st := ok(t, "inspect", "-f", "{{.State.Status}} {{.HostConfig.AutoRemove}}", name); st != "running true\n" {
		t.Fatalf("after restart: %q, want running true", st)
	}
	ev := ok(t, "events", "--since", strconv.FormatInt(since, 10), "--until", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10),
		"--filter", "container="+name, "--format", "{{.Action}}")
	if got := strings.Fields(ev); !slices.Contains(got, "restart") || slices.Index(got, "restart") < slices.Index(got, "stop") {
		t.Errorf("events of the restart %q: want stop, start, then restart", got)
	}
	ok(t, "stop", "-t", "0", name)
	deadline := time.Now().Add(30 * time.Second)
	for docker(t, "inspect", name).code == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the --rm container was not removed after its stop")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
