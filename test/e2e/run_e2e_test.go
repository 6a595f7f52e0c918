//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/testenv"
)

// TestRunGuestKernel: the container runs on the guest kernel, not the host's.
func TestRunGuestKernel(t *testing.T) {
	t.Parallel()
	out := ok(t, "run", "--rm", "busybox", "uname", "-r")
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	host := unix.ByteSliceToString(uts.Release[:])
	guest := strings.TrimSpace(out)
	if guest == "" || guest == host {
		t.Fatalf("uname -r in the container = %q, host = %q: want the guest kernel", guest, host)
	}
	info := ok(t, "info", "--format", "{{.KernelVersion}}")
	if strings.TrimSpace(info) != guest {
		t.Errorf("docker info KernelVersion = %q, container's uname -r = %q", info, guest)
	}
}

// TestRunEchoRemoves: `run --rm` prints, exits 0 and leaves no container.
func TestRunEchoRemoves(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	out := ok(t, "run", "--rm", "--name", name, "busybox", "echo", "hello")
	if out != "hello\n" {
		t.Errorf("stdout = %q, want %q", out, "hello\n")
	}
	if ps := ok(t, "ps", "-a", "-q", "--filter", "name="+name); strings.TrimSpace(ps) != "" {
		t.Errorf("container still listed after --rm: %q", ps)
	}
}

// TestRunExitCodes: exit status, command not found (127, Docker's text) and
// missing image (125, "Unable to find image").
func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		args       []string
		code       int
		stderrPart string
	}{
		{"exit 3", []string{"run", "--rm", "busybox", "sh", "-c", "exit 3"}, 3, ""},
		{"not found", []string{"run", "--rm", "busybox", "nosuchcmd"}, 127, `exec: "nosuchcmd": executable file not found in $PATH`},
		{"no such image", []string{"run", "--rm", "nosuchimage-vch-e2e"}, 125, "Unable to find image 'nosuchimage-vch-e2e:latest' locally"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := docker(t, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.stderrPart) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tc.stderrPart)
			}
		})
	}
}

// TestRunConfig: -e with image ENV, -w, -u, --hostname, and Docker's
// HOSTNAME/HOME variables, all in one VM.
func TestRunConfig(t *testing.T) {
	t.Parallel()
	out := ok(t, "run", "--rm", "-e", "FOO=bar", "-e", "PATH=/bin:/usr/bin", "-w", "/tmp/work", "-u", "nobody", "--hostname", "myhost",
		"busybox", "sh", "-c", `echo "$FOO|$PATH|$(pwd)|$(id -u)|$(hostname)|$HOSTNAME|$HOME"; cat /etc/hostname`)
	want := "bar|/bin:/usr/bin|/tmp/work|65534|myhost|myhost|/home\nmyhost\n" // nobody's HOME in the busybox image's /etc/passwd
	if out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

// TestGroupAdd: --group-add gives the main process and every exec the
// extra groups, by name (the container's /etc/group) or number, after the
// user's own; inspect shows them; a group the image does not know fails
// the start as Docker does (exit 126 from the CLI's run).
func TestGroupAdd(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "-u", "nobody", "--group-add", "4242", "--group-add", "daemon", "busybox", "sleep", "600")
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	for _, args := range [][]string{
		{"exec", name, "id", "-G"},
		{"exec", "-u", "root", name, "id", "-G"},
	} {
		ids := strings.Fields(ok(t, args...))
		if !slices.Contains(ids, "4242") || !slices.Contains(ids, "1") {
			t.Errorf("docker %v = %v; want groups 4242 and 1 (daemon) among them", args, ids)
		}
	}
	if got := strings.TrimSpace(ok(t, "inspect", "--format", "{{json .HostConfig.GroupAdd}}", name)); got != `["4242","daemon"]` {
		t.Errorf("HostConfig.GroupAdd = %s", got)
	}
	if out := ok(t, "run", "--rm", "--group-add", "4242", "busybox", "id", "-G"); !slices.Contains(strings.Fields(out), "4242") {
		t.Errorf("main process groups %q; want 4242 among them", out)
	}
	// The primary group leads the supplementary ones, as on dockerd
	// (busybox lists root in wheel).
	if out := ok(t, "run", "--rm", "--group-add", "staff", "busybox", "id"); out != "uid=0(root) gid=0(root) groups=0(root),10(wheel),50(staff)\n" {
		t.Errorf("id as root with --group-add staff: %q", out)
	}
	r := docker(t, "run", "--rm", "--group-add", "nosuchgroup", "busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "nosuchgroup") {
		t.Errorf("run with an unknown group: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestOutputComplete: 10,000 lines on stdout and 10,000 on stderr all arrive,
// in order, each on its own stream; a last line without newline is kept.
func TestOutputComplete(t *testing.T) {
	t.Parallel()
	r := docker(t, "run", "--rm", "busybox", "sh", "-c", "seq 1 10000; seq 20001 30000 >&2; printf tail")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var want strings.Builder
	for i := 1; i <= 10000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	if r.stdout != want.String()+"tail" {
		t.Errorf("stdout: %d bytes, want %d; ends %q", len(r.stdout), want.Len()+4, r.stdout[max(0, len(r.stdout)-20):])
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 10000 || lines[0] != "20001" || lines[9999] != "30000" {
		t.Errorf("stderr: %d lines, first %q", len(lines), lines[0])
	}
}

// TestOutputAcrossPauses: a process that writes a line, then pauses
// long enough for the daemon to acknowledge what it logged (the guest's
// spool is then empty while tether waits on the process's next write),
// gets each line out once and in order, attached and in the log.
func TestOutputAcrossPauses(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	r := docker(t, "run", "--name", name, "busybox", "sh", "-c", "for i in 1 2 3 4; do echo out$i; echo err$i >&2; sleep 0.2; done")
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	want := func(s string) string { return s + "1\n" + s + "2\n" + s + "3\n" + s + "4\n" }
	if r.code != 0 || r.stdout != want("out") || r.stderr != want("err") {
		t.Errorf("run: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if l := docker(t, "logs", name); l.stdout != want("out") || l.stderr != want("err") {
		t.Errorf("logs: stdout %q stderr %q", l.stdout, l.stderr)
	}
}

// TestBinaryOutputIntact: 24 MiB of random bytes (every byte value;
// the guest's 1 MiB output spool wraps two dozen times) come out of
// `docker run` and `docker exec` exactly as the container's own
// sha256sum saw them.
func TestBinaryOutputIntact(t *testing.T) {
	t.Parallel()
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	r := docker(t, "run", "--rm", "busybox", "sh", "-c", "dd if=/dev/urandom of=/r bs=1M count=24 2>/dev/null && sha256sum /r >&2 && cat /r")
	if f := strings.Fields(r.stderr); r.code != 0 || len(r.stdout) != 24<<20 || len(f) == 0 || f[0] != sum(r.stdout) {
		t.Errorf("run: code %d, %d bytes of stdout (sha256 %s), the container's sha256sum %q", r.code, len(r.stdout), sum(r.stdout), r.stderr)
	}
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sh", "-c", "dd if=/dev/urandom of=/r bs=1M count=24 2>/dev/null && touch /ready && sleep 3600")
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	deadline := time.Now().Add(30 * time.Second)
	for docker(t, "exec", name, "test", "-e", "/ready").code != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the container did not write its file")
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := strings.Fields(ok(t, "exec", name, "sha256sum", "/r"))[0]
	if e := docker(t, "exec", name, "cat", "/r"); e.code != 0 || len(e.stdout) != 24<<20 || sum(e.stdout) != want {
		t.Errorf("exec: code %d, %d bytes of stdout (sha256 %s), the container's sha256sum %s", e.code, len(e.stdout), sum(e.stdout), want)
	}
}

// TestLifecycle: create, start -a, ps, inspect, logs, run -d, stop, wait,
// kill, rm, and the 404/409 texts — one container at a time, like a user.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	id := strings.TrimSpace(ok(t, "create", "--name", name, "busybox", "sh", "-c", "echo created-out; echo created-err >&2; exit 4"))
	if len(id) != 64 {
		t.Fatalf("create printed %q, want a 64-hex ID", id)
	}
	if st := ok(t, "inspect", "--format", "{{.State.Status}} {{.Name}} {{.Config.Image}} {{.Path}}", name); st != "created /"+name+" busybox sh\n" {
		t.Errorf("inspect after create = %q", st)
	}
	r := docker(t, "start", "-a", name)
	if r.code != 4 || r.stdout != "created-out\n" || r.stderr != "created-err\n" {
		t.Errorf("start -a: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if ps := ok(t, "ps", "-a", "--filter", "name="+name, "--format", "{{.Status}}"); !strings.HasPrefix(ps, "Exited (4)") {
		t.Errorf("ps status = %q", ps)
	}
	r = docker(t, "logs", name)
	if r.stdout != "created-out\n" || r.stderr != "created-err\n" {
		t.Errorf("logs: stdout %q stderr %q", r.stdout, r.stderr)
	}
	var insp []struct {
		ID    string `json:"Id"`
		State struct {
			Status   string
			Running  bool
			ExitCode int
		}
		HostConfig struct{ AutoRemove bool }
		Image      string
	}
	if err := json.Unmarshal([]byte(ok(t, "inspect", name)), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("inspect JSON: %v", err)
	}
	if insp[0].ID != id || insp[0].State.ExitCode != 4 || insp[0].State.Running || !strings.HasPrefix(insp[0].Image, "sha256:") {
		t.Errorf("inspect = %+v", insp[0])
	}
	ok(t, "rm", name)
	r = docker(t, "rm", name)
	if r.code == 0 || !strings.Contains(r.stderr, "No such container: "+name) {
		t.Errorf("second rm: code %d stderr %q", r.code, r.stderr)
	}

	// A detached container: ps shows it Up; rm refuses (409); stop; wait.
	bg := name + "-bg"
	ok(t, "run", "-d", "--name", bg, "busybox", "sh", "-c", "echo started; sleep 600")
	if ps := ok(t, "ps", "--filter", "name="+bg, "--format", "{{.Status}}"); !strings.HasPrefix(ps, "Up ") {
		t.Errorf("ps for running container = %q", ps)
	}
	r = docker(t, "rm", bg)
	if r.code == 0 || !strings.Contains(r.stderr, "container is running") {
		t.Errorf("rm of running container: code %d stderr %q", r.code, r.stderr)
	}
	waitLogs(t, bg, "started\n")
	ok(t, "stop", "-t", "2", bg)
	if code := strings.TrimSpace(ok(t, "wait", bg)); code != "137" {
		t.Errorf("wait after stop = %q, want 137: sh is PID 1 and ignores SIGTERM, so stop kills it after -t", code)
	}
	if logs := ok(t, "logs", bg); logs != "started\n" {
		t.Errorf("logs of stopped container = %q", logs)
	}
	r = docker(t, "kill", bg)
	if r.code == 0 || !strings.Contains(r.stderr, "is not running") {
		t.Errorf("kill of stopped container: code %d stderr %q", r.code, r.stderr)
	}
	ok(t, "start", bg)
	ok(t, "kill", bg)
	if code := strings.TrimSpace(ok(t, "wait", bg)); code != "137" {
		t.Errorf("wait after kill = %q, want 137", code)
	}
	ok(t, "rm", "-f", bg)
}

// TestRemoveForce: rm -f kills a running container VM and removes it.
func TestRemoveForce(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "600")
	ok(t, "rm", "-f", name)
	if ps := ok(t, "ps", "-a", "-q", "--filter", "name="+name); strings.TrimSpace(ps) != "" {
		t.Errorf("still listed: %q", ps)
	}
}

// waitLogs polls docker logs until it shows want (the process has run that
// far), failing after 60 s.
func waitLogs(t *testing.T, name, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := ok(t, "logs", name)
		if strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs of %s = %q, never showed %q", name, out, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDebianClient: Debian's docker 20.10 client (API 1.41), unpacked by
// scripts/deps.sh, negotiates and runs a container VM too.
func TestDebianClient(t *testing.T) {
	t.Parallel()
	need(t)
	bin := filepath.Join(testenv.BinDir(), "docker-20.10", "docker")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("VCH_REQUIRE_E2E") == "1" {
			t.Fatalf("%s missing (make deps)", bin)
		}
		t.Skipf("%s missing (make deps)", bin)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+env.host, "DOCKER_CONFIG="+t.TempDir())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}"); err != nil || !strings.HasPrefix(out, "1.41 ") {
		t.Errorf("version: %q %v", out, err)
	}
	if out, err := run("run", "--rm", "busybox", "echo", "from-20.10"); err != nil || out != "from-20.10\n" {
		t.Errorf("run: %q %v", out, err)
	}
}

// TestStopSignalHandler: docker stop sends the container's stop signal and
// keeps the exit code the process's handler chose.
func TestStopSignalHandler(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "--stop-signal", "SIGHUP", "busybox", "sh", "-c",
		"trap 'echo got-hup; exit 9' HUP; echo ready; while true; do sleep 1; done")
	defer docker(t, "rm", "-f", name)
	waitLogs(t, name, "ready\n")
	ok(t, "stop", name)
	if code := strings.TrimSpace(ok(t, "wait", name)); code != "9" {
		t.Errorf("exit code after stop = %q, want 9 (the HUP handler's)", code)
	}
	if logs := ok(t, "logs", name); logs != "ready\ngot-hup\n" {
		t.Errorf("logs = %q", logs)
	}
}

// TestKillKeepsData: what a process wrote survives docker kill and a
// restart of the container (SIGKILL is delivered in the guest, which then
// syncs and unmounts its disk), as it does with Docker.
func TestKillKeepsData(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sh", "-c", "test -f /data && cat /data; echo kept-by-vch > /data; echo written; sleep 600")
	defer docker(t, "rm", "-f", name)
	waitLogs(t, name, "written\n")
	ok(t, "kill", name)
	if code := strings.TrimSpace(ok(t, "wait", name)); code != "137" {
		t.Errorf("exit after kill = %s, want 137", code)
	}
	ok(t, "start", name)
	waitLogs(t, name, "written\nkept-by-vch\nwritten\n")
}

// TestGuestClock: the guest's clock starts at the host's time and keeps
// pace with it (a guest TSC rate that differs from the host's made it run
// 15 % fast), and the timezone defaults to UTC.
func TestGuestClock(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "600")
	defer docker(t, "rm", "-f", name)
	offset := func() int64 {
		g, err := strconv.ParseInt(strings.TrimSpace(ok(t, "exec", name, "date", "+%s")), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return g - time.Now().Unix()
	}
	first := offset()
	time.Sleep(20 * time.Second)
	second := offset()
	if first < -1 || first > 1 || second < -1 || second > 1 {
		t.Errorf("guest clock offset %d s at start, %d s after 20 s: want within 1 s", first, second)
	}
	if tz := ok(t, "exec", name, "date", "+%Z"); tz != "UTC\n" {
		t.Errorf("timezone = %q, want UTC", tz)
	}
}
