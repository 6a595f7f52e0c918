//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// TestExec: docker exec runs in the container's PID namespace with the
// container's environment, honours -u, -w, -e, -i and -d, returns exit
// codes, fails like Docker for a missing command and a stopped container.
func TestExec(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "-e", "FROM_RUN=1", "busybox", "sleep", "600")
	defer docker(t, "rm", "-f", name)

	out := ok(t, "exec", name, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $FROM_RUN $HOSTNAME")
	lines := strings.Split(out, "\n")
	if lines[0] != "sleep 600 " || !strings.HasPrefix(lines[1], "1 ") {
		t.Errorf("exec sees PID 1 %q, env %q", lines[0], lines[1])
	}
	if out := ok(t, "exec", "-u", "nobody", "-w", "/tmp", "-e", "X=y", name, "sh", "-c", "id -u; pwd; echo $X"); out != "65534\n/tmp\ny\n" {
		t.Errorf("exec -u -w -e: %q", out)
	}
	if r := docker(t, "exec", name, "sh", "-c", "echo err >&2; exit 5"); r.code != 5 || r.stderr != "err\n" {
		t.Errorf("exec exit 5: code %d stderr %q", r.code, r.stderr)
	}
	if r := dockerIn(t, []byte("line1\nline2\n"), "exec", "-i", name, "cat"); r.code != 0 || r.stdout != "line1\nline2\n" {
		t.Errorf("exec -i cat: code %d out %q", r.code, r.stdout)
	}
	if r := dockerIn(t, []byte{}, "exec", "-i", name, "cat"); r.code != 0 || r.stdout != "" {
		t.Errorf("exec -i with empty stdin: code %d out %q", r.code, r.stdout)
	}
	r := docker(t, "exec", name, "nosuchcmd")
	if r.code != 127 || !strings.Contains(r.stdout+r.stderr, `exec: "nosuchcmd": executable file not found in $PATH`) {
		t.Errorf("exec nosuchcmd: code %d out %q err %q", r.code, r.stdout, r.stderr)
	}
	if r := docker(t, "exec", "-w", "/nonexistent", name, "pwd"); r.code != 126 || !strings.Contains(r.stdout+r.stderr, "no such file or directory") {
		t.Errorf("exec -w /nonexistent: code %d out %q err %q", r.code, r.stdout, r.stderr)
	}
	// An environment too large for the guest channel is refused; the
	// container keeps running.
	big := strings.Repeat("x", 110<<10) // two of these exceed the channel's bound
	if r := docker(t, "exec", "-e", "BIG1="+big, "-e", "BIG2="+big, name, "true"); r.code == 0 || !strings.Contains(r.stderr, "argument list too long") {
		t.Errorf("exec with a 220 KiB env: code %d err %.200q", r.code, r.stderr)
	}
	if st := ok(t, "inspect", "--format", "{{.State.Status}}", name); st != "running\n" {
		t.Fatalf("container %q after an oversized exec", st)
	}
	ok(t, "exec", "-d", name, "sh", "-c", "echo detached > /tmp/d")
	deadline := time.Now().Add(30 * time.Second)
	for ok(t, "exec", name, "cat", "/tmp/d") != "detached\n" {
		if time.Now().After(deadline) {
			t.Fatal("detached exec did not run")
		}
		time.Sleep(200 * time.Millisecond)
	}
	ok(t, "kill", name)
	ok(t, "wait", name)
	if r := docker(t, "exec", name, "true"); r.code == 0 || !strings.Contains(r.stderr, "is not running") {
		t.Errorf("exec into a stopped container: code %d stderr %q", r.code, r.stderr)
	}
}

// TestRunInteractiveTTY: `docker run -it` in a real terminal (tmux): the
// guest TTY has the terminal's size and follows a resize, Ctrl-C reaches
// the foreground process, and `exit 5` ends the run with code 5.
func TestRunInteractiveTTY(t *testing.T) {
	t.Parallel()
	need(t)
	name := uniqueName(t)
	prefix := "DOCKER_CONFIG=" + t.TempDir() + " DOCKER_HOST=" + env.host + " "
	cmd := prefix + "docker run -it --rm --name " + name + " busybox sh; echo exit=$?; " + prefix + "docker attach " + name + "; echo exit=$?; sleep 600"
	tmux, waitFor := ttySession(t, cmd)
	screen := func() string { return tmux("capture-pane", "-t", "t", "-p") }
	waitFor("/ #")
	tmux("send-keys", "-t", "t", "stty size", "Enter")
	waitFor("40 120")
	tmux("resize-window", "-t", "t", "-x", "100", "-y", "30")
	time.Sleep(500 * time.Millisecond)
	tmux("send-keys", "-t", "t", "clear; stty size", "Enter")
	waitFor("30 100")
	tmux("send-keys", "-t", "t", "sleep 300; echo slept$((1+1))", "Enter")
	time.Sleep(time.Second)
	tmux("send-keys", "-t", "t", "C-c")
	tmux("send-keys", "-t", "t", "echo intr$((2+2))", "Enter")
	waitFor("intr4")
	if strings.Contains(screen(), "slept2") {
		t.Error("Ctrl-C did not interrupt sleep")
	}
	// Ctrl-P Ctrl-Q detaches and leaves the container running; a second
	// attach reaches the same shell, and its exit code ends that attach.
	tmux("send-keys", "-t", "t", "C-p", "C-q")
	waitFor("exit=0")
	if st := ok(t, "inspect", "--format", "{{.State.Status}}", name); st != "running\n" {
		t.Errorf("after detach the container is %q", st)
	}
	time.Sleep(2 * time.Second) // let `docker attach` connect
	tmux("send-keys", "-t", "t", "echo back$((3+4))", "Enter")
	waitFor("back7")
	tmux("send-keys", "-t", "t", "exit 5", "Enter")
	waitFor("exit=5")
}

// TestEvents: the container's lifecycle appears in `docker events` in
// order, with Docker's attributes, and the filters select it.
func TestEvents(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	since := time.Now().Add(-time.Second).Unix()
	if r := docker(t, "run", "--name", name, "busybox", "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("run: code %d %s", r.code, r.stderr)
	}
	ok(t, "rm", name)
	out := ok(t, "events", "--since", strconv.FormatInt(since, 10), "--until", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10),
		"--filter", "container="+name, "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}")
	want := []string{"container create " + name, "container attach " + name, "container start " + name, "container die " + name + " 3", "container destroy " + name}
	got := strings.Split(strings.TrimSpace(out), "\n")
	for i := range got {
		got[i] = strings.TrimSpace(strings.ReplaceAll(got[i], "<no value>", ""))
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The deprecated fields dockerd still sends, which older clients read.
	legacy := ok(t, "events", "--since", strconv.FormatInt(since, 10), "--until", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10),
		"--filter", "container="+name, "--filter", "event=start", "--format", "{{.Status}} {{.From}} {{.ID}} {{.Actor.ID}}")
	if f := strings.Fields(legacy); len(f) != 4 || f[0] != "start" || f[1] != "busybox" || f[2] != f[3] {
		t.Errorf("legacy event fields: %q, want start, busybox and the container's ID twice", legacy)
	}
}

// TestPauseUnpause: pause freezes the whole VM (state Paused, exec refused
// with Docker's text, logs and inspect still answer); unpause resumes it
// with the guest clock back in step with the host's.
func TestPauseUnpause(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sh", "-c", "echo up; while true; do sleep 1; done")
	defer docker(t, "rm", "-f", name)
	waitLogs(t, name, "up\n")
	ok(t, "pause", name)
	if st := ok(t, "ps", "--filter", "name="+name, "--format", "{{.Status}}"); !strings.HasSuffix(strings.TrimSpace(st), "(Paused)") {
		t.Errorf("ps status of a paused container = %q", st)
	}
	if st := ok(t, "inspect", "--format", "{{.State.Status}} {{.State.Paused}} {{.State.Running}}", name); st != "paused true true\n" {
		t.Errorf("inspect = %q", st)
	}
	if r := docker(t, "exec", name, "true"); r.code == 0 || !strings.Contains(r.stderr, "is paused, unpause the container before exec") {
		t.Errorf("exec into paused: code %d stderr %q", r.code, r.stderr)
	}
	if r := docker(t, "pause", name); r.code == 0 || !strings.Contains(r.stderr, "is already paused") {
		t.Errorf("second pause: code %d stderr %q", r.code, r.stderr)
	}
	if logs := ok(t, "logs", name); logs != "up\n" {
		t.Errorf("logs while paused = %q", logs)
	}
	time.Sleep(3 * time.Second) // the frozen guest's clock falls behind
	ok(t, "unpause", name)
	guest, err := strconv.ParseInt(strings.TrimSpace(ok(t, "exec", name, "date", "+%s")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Now().Unix() - guest; d > 2 || d < -2 {
		t.Errorf("guest clock off by %d s after unpause", d)
	}
	if r := docker(t, "unpause", name); r.code == 0 || !strings.Contains(r.stderr, "is not paused") {
		t.Errorf("unpause of a running container: code %d stderr %q", r.code, r.stderr)
	}
}

// TestTopAndStats: docker top lists the guest's processes of the container
// (ps -ef columns, PID 1 first); docker stats --no-stream renders CPU,
// memory against the VM's RAM, block I/O and PIDs.
func TestTopAndStats(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 1000 & echo up; wait")
	defer docker(t, "rm", "-f", name)
	waitLogs(t, name, "up\n")
	out := ok(t, "top", name)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "UID") || !strings.Contains(lines[1], "sh -c sleep 1000") || !strings.Contains(lines[2], "sleep 1000") {
		t.Errorf("top:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) < 3 || f[1] != "1" || f[2] != "0" {
		t.Errorf("top: first process %q, want PID 1 PPID 0", lines[1])
	}
	if out := ok(t, "top", name, "-o", "pid,args"); !strings.HasPrefix(out, "PID") || !strings.Contains(out, "\n1 ") {
		t.Errorf("top -o pid,args:\n%s", out)
	}
	st := ok(t, "stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}", name)
	f := strings.Split(strings.TrimSpace(st), "|")
	if len(f) != 4 || f[0] != name || !strings.Contains(f[1], " / ") || !strings.HasSuffix(f[1], "MiB") || f[2] != "2" || !strings.HasSuffix(f[3], "%") {
		t.Errorf("stats = %q", st)
	}
	ok(t, "kill", name)
	ok(t, "wait", name)
	if r := docker(t, "top", name); r.code == 0 || !strings.Contains(r.stderr, "is not running") {
		t.Errorf("top of a stopped container: code %d stderr %q", r.code, r.stderr)
	}
}

// TestVMMDies: when a container's QEMU process is killed from outside, the
// container shows exited with a non-zero code and the event stream says die.
func TestVMMDies(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "600")
	defer docker(t, "rm", "-f", name)
	pid, err := strconv.Atoi(strings.TrimSpace(ok(t, "inspect", "--format", "{{.State.Pid}}", name)))
	if err != nil || pid <= 0 {
		t.Fatalf("VMM pid: %v", err)
	}
	since := time.Now().Add(-time.Second).Unix()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	code := strings.TrimSpace(ok(t, "wait", name))
	if code == "0" {
		t.Fatal("a VM that died reported exit code 0")
	}
	if st := ok(t, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name); st != "exited "+code+"\n" {
		t.Errorf("inspect = %q", st)
	}
	ev := ok(t, "events", "--since", strconv.FormatInt(since, 10), "--until", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10),
		"--filter", "container="+name, "--filter", "event=die", "--format", "{{.Actor.Attributes.exitCode}}")
	if strings.TrimSpace(ev) != code {
		t.Errorf("die event exitCode = %q, want %s", ev, code)
	}
}

// TestRunStdin: piped stdin reaches the process and its EOF closes the
// process's stdin (`echo hi | docker run -i busybox cat`); 100 MB of binary
// stdin arrives byte-exact.
func TestRunStdin(t *testing.T) {
	t.Parallel()
	if r := dockerIn(t, []byte("hi\n"), "run", "-i", "--rm", "busybox", "cat"); r.code != 0 || r.stdout != "hi\n" {
		t.Errorf("echo hi | docker run -i busybox cat: code %d out %q err %q", r.code, r.stdout, r.stderr)
	}
	data := make([]byte, 100_000_000)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	r := dockerIn(t, data, "run", "-i", "--rm", "busybox", "sha256sum")
	if want := hex.EncodeToString(sum[:]) + "  -\n"; r.code != 0 || r.stdout != want {
		t.Errorf("100 MB stdin: code %d sum %q, want %q (stderr %q)", r.code, r.stdout, want, r.stderr)
	}
}

// TestLogs: --tail, --timestamps, --since/--until, --follow until the
// container stops, and --log-opt max-size bounding the log files.
func TestLogs(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "-i", "--name", name, "--log-opt", "max-size=64k", "--log-opt", "max-file=2", "busybox", "sh", "-c",
		"seq 1 20000; echo marker; read x; echo after-input; sleep 2; echo last")
	defer docker(t, "rm", "-f", name)
	waitLogs(t, name, "marker\n")
	if out := ok(t, "logs", "--tail", "2", name); out != "20000\nmarker\n" {
		t.Errorf("--tail 2 = %q", out)
	}
	out := ok(t, "logs", "--tail", "1", "--timestamps", name)
	if ts, rest, _ := strings.Cut(out, " "); rest != "marker\n" || !strings.HasSuffix(ts, "Z") || len(ts) != len("2006-01-02T15:04:05.000000000Z") {
		t.Errorf("--timestamps = %q", out)
	}
	if out := ok(t, "logs", "--until", "1970-01-02T00:00:00Z", name); out != "" {
		t.Errorf("--until in the past = %q", out)
	}
	if out := ok(t, "logs", "--since", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10), name); out != "" {
		t.Errorf("--since in the future = %q", out)
	}
	// Rotation: 20,000 lines do not fit in 2 × 64 KiB, so the oldest are gone.
	all := strings.Split(strings.TrimSuffix(ok(t, "logs", name), "\n"), "\n")
	if len(all) >= 20001 || all[len(all)-1] != "marker" {
		t.Errorf("logs after rotation: %d lines, last %q", len(all), all[len(all)-1])
	}
	// --follow streams new output and ends when the container stops.
	cmd := exec.Command("docker", "logs", "--follow", "--tail", "0", name)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+env.host, "DOCKER_CONFIG="+t.TempDir())
	var buf strings.Builder
	cmd.Stdout = &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	// Feed the container's `read` through an attach with stdin.
	if r := dockerIn(t, []byte("go\n"), "attach", name); r.code != 0 || r.stdout != "after-input\nlast\n" {
		t.Errorf("attach with stdin: code %d out %q err %q", r.code, r.stdout, r.stderr)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || buf.String() != "after-input\nlast\n" {
			t.Errorf("logs --follow: %q, %v", buf.String(), err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Errorf("logs --follow did not end when the container stopped; got %q", buf.String())
	}
}

// TestLogDriverNone: --log-driver none (Docker's "none" logging driver)
// still streams an attached run's output, keeps no log file (LogPath "";
// as dockerd, a json-file log's path shows from the first start on and a
// local driver's never),
// refuses `docker logs` with dockerd's 501 text, lets a detached container
// that writes far more than the guest's spool run to its exit, and answers
// an attach that asks for the log with dockerd's in-stream error.
func TestLogDriverNone(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	r := docker(t, "run", "--name", name, "--log-driver", "none", "busybox", "sh", "-c", "echo to-out; echo to-err >&2")
	defer docker(t, "rm", "-f", name)
	if r.code != 0 || r.stdout != "to-out\n" || r.stderr != "to-err\n" {
		t.Errorf("attached run: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if out := ok(t, "inspect", "--format", "{{.HostConfig.LogConfig.Type}} [{{.LogPath}}]", name); out != "none []\n" {
		t.Errorf("inspect: %q, want driver none and no log path", out)
	}
	// dockerd shows a json-file log's path once the logger has started,
	// and never the local driver's.
	created := uniqueName(t) + "-c"
	ok(t, "create", "--name", created, "busybox", "true")
	defer docker(t, "rm", "-f", created)
	if out := ok(t, "inspect", "--format", "[{{.LogPath}}]", created); out != "[]\n" {
		t.Errorf("created json-file container: LogPath %q, want none before its first start", out)
	}
	ok(t, "start", "-a", created)
	if out := ok(t, "inspect", "--format", "{{.LogPath}}", created); !strings.HasSuffix(out, ".log\n") {
		t.Errorf("started json-file container: LogPath %q", out)
	}
	local := uniqueName(t) + "-l"
	ok(t, "run", "--name", local, "--log-driver", "local", "busybox", "echo", "kept")
	defer docker(t, "rm", "-f", local)
	if out := ok(t, "inspect", "--format", "[{{.LogPath}}]", local); out != "[]\n" {
		t.Errorf("local driver: LogPath %q, want none", out)
	}
	if out := ok(t, "logs", local); out != "kept\n" {
		t.Errorf("local driver: logs %q", out)
	}

	r = docker(t, "logs", name)
	if want := "Error response from daemon: configured logging driver does not support reading\n"; r.code != 1 || r.stderr != want || r.stdout != "" {
		t.Errorf("docker logs: code %d stdout %q stderr %q, want 1 and %q", r.code, r.stdout, r.stderr, want)
	}

	// 8 MiB with no one reading: the output is dropped, not held.
	chatty := uniqueName(t) + "-d"
	ok(t, "run", "-d", "--name", chatty, "--log-driver", "none", "busybox", "sh", "-c", "head -c 8388608 /dev/zero; exit 3")
	defer docker(t, "rm", "-f", chatty)
	if out := ok(t, "wait", chatty); out != "3\n" {
		t.Errorf("wait: %q, want 3", out)
	}

	c := apiClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	att, err := c.ContainerAttach(ctx, name, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true, Logs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	var out, errb bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errb, att.Reader); err != nil {
		t.Fatal(err)
	}
	if want := "Error attaching: failed to get logging factory: logger: no log driver named 'none' is registered\n"; out.String() != want || errb.Len() != 0 {
		t.Errorf("attach with logs: stdout %q stderr %q, want %q", out.String(), errb.String(), want)
	}
}

// TestConcurrentExecsAndRestart: several execs stream at once from one
// container VM without losing lines; exec -t gets a TTY; --shm-size sizes
// /dev/shm; docker restart boots the container again.
func TestConcurrentExecsAndRestart(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "--shm-size", "32m", "busybox", "sleep", "600")
	defer docker(t, "rm", "-f", name)
	errs := make(chan string, 4)
	for i := 0; i < 4; i++ {
		go func() {
			r := docker(t, "exec", name, "seq", "1", "5000")
			if n := strings.Count(r.stdout, "\n"); r.code != 0 || n != 5000 || !strings.HasSuffix(r.stdout, "\n5000\n") {
				errs <- fmt.Sprintf("exec %d: code %d, %d lines", i, r.code, n)
				return
			}
			errs <- ""
		}()
	}
	for i := 0; i < 4; i++ {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
	if out := ok(t, "exec", "-t", name, "tty"); !strings.HasPrefix(out, "/dev/pts/") {
		t.Errorf("exec -t tty = %q", out)
	}
	if out := ok(t, "exec", name, "sh", "-c", "df -k /dev/shm | tail -1"); !strings.Contains(out, " 32768 ") {
		t.Errorf("/dev/shm with --shm-size 32m: %q", out)
	}
	started := ok(t, "inspect", "--format", "{{.State.StartedAt}}", name)
	ok(t, "restart", "-t", "1", name)
	if st := ok(t, "inspect", "--format", "{{.State.Status}} {{.State.StartedAt}}", name); !strings.HasPrefix(st, "running ") || strings.Contains(st, strings.TrimSpace(started)) {
		t.Errorf("after restart: %q (started before %q)", st, started)
	}
}

// TestInit: with --init the container's PID 1 is a minimal init that
// forwards docker stop's SIGTERM to the program (which then dies at once
// with 143 instead of being killed after the timeout), reaps orphans and
// passes the program's exit code through.
func TestInit(t *testing.T) {
	t.Parallel()
	if r := docker(t, "run", "--rm", "--init", "busybox", "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("exit code through --init = %d, want 7", r.code)
	}
	name := uniqueName(t)
	ok(t, "run", "-d", "--init", "--name", name, "busybox", "sh", "-c", "sleep 300 & echo up; sleep 400")
	defer docker(t, "rm", "-f", name)
	waitLogs(t, name, "up\n")
	if pid1 := ok(t, "exec", name, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"); strings.Contains(pid1, "sleep") {
		t.Errorf("PID 1 with --init is the program itself: %q", pid1)
	}
	start := time.Now()
	ok(t, "stop", "-t", "30", name)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("stop took %s: SIGTERM was not forwarded", d)
	}
	if code := strings.TrimSpace(ok(t, "inspect", "--format", "{{.State.ExitCode}}", name)); code != "143" {
		t.Errorf("exit code after stop = %s, want 143", code)
	}
}
