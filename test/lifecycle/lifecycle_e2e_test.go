//go:build e2e

// Package lifecycle drives `vch create|ls|inspect|configure|start|stop|
// delete` the way an operator does, each test with its own state
// directory, and the docker CLI the way the team handed the VCH does: with
// the exact lines `vch create` printed. VCHs here run as supervised
// background processes (systemd is not PID 1 on these machines).
package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/busyboximage"
	"github.com/vchproject/vch/internal/testenv"
	"github.com/vchproject/vch/internal/vch"
	"github.com/vchproject/vch/internal/vch/certs"
	"github.com/vchproject/vch/internal/vch/deploy"
)

// operator runs bin/vch against one state directory.
type operator struct {
	t     *testing.T
	state string
	names []string // created, deleted at cleanup if still there
}

func newOperator(t *testing.T) *operator {
	t.Helper()
	testenv.RequireVMs(t)
	testenv.RequireBinary(t, "docker")
	if _, err := os.Stat(filepath.Join(testenv.BinDir(), "vch")); err != nil {
		t.Fatalf("bin/vch not built (make build): %v", err)
	}
	o := &operator{t: t, state: t.TempDir()}
	t.Cleanup(func() {
		for _, n := range o.names {
			if _, err := os.Stat(filepath.Join(o.state, n, "config.json")); err == nil {
				if t.Failed() {
					o.dumpLogs(n)
				}
				o.vch("delete", "--force", n)
			}
		}
	})
	return o
}

type result struct {
	stdout, stderr string
	code           int
}

func (o *operator) vch(args ...string) result {
	o.t.Helper()
	return run(o.t, nil, filepath.Join(testenv.BinDir(), "vch"), append([]string{"--state-dir", o.state}, args...)...)
}

func (o *operator) mustVCH(args ...string) string {
	o.t.Helper()
	r := o.vch(args...)
	if r.code != 0 {
		o.t.Fatalf("vch %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (o *operator) dumpLogs(name string) {
	for _, f := range []string{"supervise.log", "daemon.log"} {
		b, _ := os.ReadFile(filepath.Join(o.state, name, "logs", f))
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		o.t.Logf("--- %s/%s (tail) ---\n%s", name, f, b)
	}
}

// create runs vch create and returns the environment its export line sets.
func (o *operator) create(name string, args ...string) map[string]string {
	o.t.Helper()
	env, _ := o.createLines(name, args...)
	return env
}

// createLines runs vch create and returns the environment its export line
// sets and its docker context line.
func (o *operator) createLines(name string, args ...string) (map[string]string, string) {
	o.t.Helper()
	o.names = append(o.names, name)
	out := o.mustVCH(append([]string{"create", name}, args...)...)
	env := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "export "); ok {
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
		}
	}
	if env["DOCKER_HOST"] == "" {
		o.t.Fatalf("vch create printed no export line:\n%s", out)
	}
	ctxLine := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "docker context create "+name+" --docker ") {
			ctxLine = line
		}
	}
	if ctxLine == "" {
		o.t.Errorf("vch create printed no docker context line:\n%s", out)
	}
	return env, ctxLine
}

func (o *operator) inspect(name string) deploy.Status {
	o.t.Helper()
	var st []deploy.Status
	out := o.mustVCH("inspect", name)
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
		o.t.Fatalf("vch inspect %s: %v\n%s", name, err, out)
	}
	return st[0]
}

// docker runs the docker CLI with exactly env (plus PATH and a private
// DOCKER_CONFIG), as a user who pasted the export line.
func docker(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	e := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir()}
	for k, v := range env {
		e = append(e, k+"="+v)
	}
	return run(t, e, "docker", args...)
}

func mustDocker(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	r := docker(t, env, args...)
	if r.code != 0 {
		t.Fatalf("docker %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func run(t *testing.T, env []string, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = env
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %v: %v", bin, args, err)
		}
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func loadBusybox(t *testing.T, env map[string]string) {
	t.Helper()
	if _, err := os.Stat(busyboximage.DefaultBusybox); err != nil {
		t.Fatalf("%s missing (apt-get install %s)", busyboximage.DefaultBusybox, busyboximage.DebianPackage)
	}
	img, err := busyboximage.Build(busyboximage.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(t.TempDir(), "busybox.tar")
	f, err := os.Create(tar)
	if err != nil {
		t.Fatal(err)
	}
	err = busyboximage.WriteArchive(f, img, "busybox:latest")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	mustDocker(t, env, "load", "-i", tar)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// running reports whether pid exists and has not exited (a zombie waiting
// for init to reap it has).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// waitFor polls cond every 200 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMutualTLSLifecycle is the operator's whole story: create a VCH with
// TLS, hand the printed lines to the docker CLI, see strangers refused,
// survive kill -9 of the daemon, refuse to delete while a container runs,
// then delete it and find nothing left.
func TestMutualTLSLifecycle(t *testing.T) {
	o := newOperator(t)
	port := freePort(t)
	env := o.create("e2e", "--host", "tcp://127.0.0.1:"+port, "--memory", "1g", "--cpu", "2", "--tls-cname", "vch.test")
	host := "tcp://127.0.0.1:" + port
	if env["DOCKER_HOST"] != host || env["DOCKER_TLS_VERIFY"] != "1" || env["DOCKER_CERT_PATH"] == "" {
		t.Fatalf("export line sets %v, want DOCKER_HOST=%s DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=…", env, host)
	}
	stateDir := filepath.Join(o.state, "e2e")

	t.Run("docker version", func(t *testing.T) {
		out := mustDocker(t, env, "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}")
		if got, want := strings.TrimSpace(out), vch.Version; !strings.HasPrefix(got, want) && !strings.Contains(got, "1.50") {
			t.Errorf("server version %q", got)
		}
	})
	t.Run("docker info shows the budget", func(t *testing.T) {
		out := mustDocker(t, env, "info", "--format", "{{.NCPU}} {{.MemTotal}}")
		if strings.TrimSpace(out) != "2 "+strconv.Itoa(1<<30) {
			t.Errorf("docker info NCPU MemTotal = %q, want the VCH's budget 2 and 1 GiB", out)
		}
	})

	loadBusybox(t, env)
	t.Run("docker run", func(t *testing.T) {
		if out := mustDocker(t, env, "run", "--rm", "busybox", "echo", "hi"); out != "hi\n" {
			t.Errorf("docker run output %q, want hi", out)
		}
	})
	t.Run("a VM over the memory budget is refused", func(t *testing.T) {
		r := docker(t, env, "create", "-m", "2g", "busybox", "true")
		if r.code == 0 || !strings.Contains(r.stderr, "exceeds this VCH's memory budget of 1024 MiB") {
			t.Errorf("docker create -m 2g: exit %d, %s", r.code, r.stderr)
		}
	})

	t.Run("clients without the VCH's certificate are refused", func(t *testing.T) {
		onlyCA := t.TempDir()
		ca, err := os.ReadFile(filepath.Join(env["DOCKER_CERT_PATH"], certs.CAFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(onlyCA, certs.CAFile), ca, 0o644); err != nil {
			t.Fatal(err)
		}
		foreign, err := certs.Generate(t.TempDir(), certs.Options{Name: "stranger"})
		if err != nil {
			t.Fatal(err)
		}
		// A stranger's client cert next to this VCH's CA: the server is
		// trusted, the client is not.
		mixed := t.TempDir()
		for _, f := range []string{certs.CertFile, certs.KeyFile} {
			b, _ := os.ReadFile(filepath.Join(foreign.ClientPath(), f))
			os.WriteFile(filepath.Join(mixed, f), b, 0o600)
		}
		os.WriteFile(filepath.Join(mixed, certs.CAFile), ca, 0o644)
		tests := []struct {
			name string
			env  map[string]string
			want string
		}{
			{name: "plain HTTP", env: map[string]string{"DOCKER_HOST": host}, want: "Client sent an HTTP request to an HTTPS server"},
			{name: "TLS without a client certificate", env: map[string]string{"DOCKER_HOST": host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": onlyCA}, want: "certificate required"},
			{name: "another CA's client certificate", env: map[string]string{"DOCKER_HOST": host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": mixed}, want: "tls: "},
			{name: "another VCH's bundle", env: map[string]string{"DOCKER_HOST": host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": foreign.ClientPath()}, want: "certificate signed by unknown authority"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r := docker(t, tc.env, "ps")
				if r.code == 0 || !strings.Contains(r.stdout+r.stderr, tc.want) {
					t.Errorf("docker ps: exit %d, want a refusal with %q\nstdout: %s\nstderr: %s", r.code, tc.want, r.stdout, r.stderr)
				}
			})
		}
	})

	t.Run("ls and inspect", func(t *testing.T) {
		out := o.mustVCH("ls")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME STATE DOCKER_HOST VERSION" {
			t.Fatalf("vch ls:\n%s", out)
		}
		if f := strings.Fields(lines[1]); len(f) != 4 || f[0] != "e2e" || f[1] != "running" || f[2] != host || f[3] == "" {
			t.Errorf("vch ls row %q, want e2e running %s VERSION", lines[1], host)
		}
		st := o.inspect("e2e")
		if st.State != deploy.StateRunning || st.Pid <= 0 || st.SupervisorPid <= 0 || st.Endpoint.DockerHost != host ||
			!st.Endpoint.TLSVerify || st.Endpoint.CertPath != env["DOCKER_CERT_PATH"] || st.Limits.MemoryMiB != 1024 ||
			st.Limits.CPUs != 2 || st.Versions.APIVersion != "1.50" || st.Paths.Root != filepath.Join(stateDir, "root") ||
			st.Usage == nil || st.Service.Kind != deploy.ServiceProcess {
			t.Errorf("vch inspect: %+v", st)
		}
		if out := o.mustVCH("inspect", "--format", "{{.State}} {{.Endpoint.DockerHost}}", "e2e"); out != "running "+host+"\n" {
			t.Errorf("vch inspect --format: %q", out)
		}
	})

	t.Run("the daemon comes back after kill -9", func(t *testing.T) {
		before := o.inspect("e2e").Pid
		if err := syscall.Kill(before, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 90*time.Second, "the supervisor restarts the daemon", func() bool {
			st := o.inspect("e2e")
			return st.State == deploy.StateRunning && st.Pid > 0 && st.Pid != before
		})
		mustDocker(t, env, "version")
		if out := mustDocker(t, env, "images", "--format", "{{.Repository}}"); !strings.Contains(out, "busybox") {
			t.Errorf("images after the restart: %q", out)
		}
	})

	t.Run("delete refuses while a container runs", func(t *testing.T) {
		mustDocker(t, env, "run", "-d", "--name", "sleeper", "busybox", "sleep", "600")
		r := o.vch("delete", "e2e")
		if r.code == 0 || !strings.Contains(r.stderr, "running container") || !strings.Contains(r.stderr, "sleeper") || !strings.Contains(r.stderr, "--force") {
			t.Fatalf("vch delete with a running container: exit %d\n%s", r.code, r.stderr)
		}
		if st := o.inspect("e2e"); st.State != deploy.StateRunning {
			t.Fatalf("a refused delete left the VCH %s", st.State)
		}
	})

	t.Run("delete --force leaves nothing behind", func(t *testing.T) {
		st := o.inspect("e2e")
		o.mustVCH("delete", "--force", "e2e")
		if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
			ents, _ := os.ReadDir(stateDir)
			t.Errorf("state directory left: %v %v", err, ents)
		}
		if ents, _ := os.ReadDir(o.state); len(ents) != 0 {
			t.Errorf("left in the base directory: %v", ents)
		}
		for _, pid := range []int{st.Pid, st.SupervisorPid} {
			if running(pid) {
				t.Errorf("process %d survived delete", pid)
			}
		}
		if out, _ := exec.Command("pgrep", "-f", stateDir).Output(); len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("processes still use %s: %s", stateDir, out)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", vch.NamespaceName(filepath.Join(stateDir, "root")))); !os.IsNotExist(err) {
			t.Errorf("network namespace left: %v", err)
		}
		if l, err := net.Listen("tcp", "127.0.0.1:"+port); err != nil {
			t.Errorf("port %s still taken: %v", port, err)
		} else {
			l.Close()
		}
		if out := o.mustVCH("ls", "-q"); out != "" {
			t.Errorf("vch ls after delete: %q", out)
		}
	})
}

// TestPlainSocketLifecycle covers the commands that boot no VM: a VCH
// without TLS on its unix socket, stop and start, configure with a limit
// the daemon then enforces, and two VCHs side by side.
func TestPlainSocketLifecycle(t *testing.T) {
	o := newOperator(t)
	env := o.create("plain", "--no-tls")
	sock := "unix://" + filepath.Join(o.state, "plain", "docker.sock")
	if env["DOCKER_HOST"] != sock || len(env) != 1 {
		t.Fatalf("export line sets %v, want only DOCKER_HOST=%s", env, sock)
	}
	fi, err := os.Stat(strings.TrimPrefix(sock, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o007 != 0 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("socket mode %v uid %d: want root-only", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	mustDocker(t, env, "version")

	// A second VCH next to it gets its own port, root and socket.
	env2, ctxLine := o.createLines("second")
	if env2["DOCKER_HOST"] == env["DOCKER_HOST"] || !strings.HasPrefix(env2["DOCKER_HOST"], "tcp://127.0.0.1:") {
		t.Errorf("second VCH endpoint %s", env2["DOCKER_HOST"])
	}
	mustDocker(t, env2, "version")
	// The printed context line, pasted into a shell, works as well.
	cfgDir := t.TempDir()
	shEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "DOCKER_CONFIG=" + cfgDir}
	if r := run(t, shEnv, "/bin/sh", "-c", ctxLine); r.code != 0 {
		t.Fatalf("%s: exit %d %s", ctxLine, r.code, r.stderr)
	}
	if r := run(t, shEnv, "docker", "--context", "second", "version", "--format", "{{.Server.APIVersion}}"); r.code != 0 || strings.TrimSpace(r.stdout) != "1.50" {
		t.Errorf("docker --context second version: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	// Debian's docker 20.10 client (unpacked by make) reads the same
	// ECDSA certificates.
	if old := filepath.Join(testenv.BinDir(), "docker-20.10", "docker"); fileExists(old) {
		e := []string{"HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir()}
		for k, v := range env2 {
			e = append(e, k+"="+v)
		}
		if r := run(t, e, old, "version", "--format", "{{.Server.APIVersion}}"); r.code != 0 || strings.TrimSpace(r.stdout) != "1.50" {
			t.Errorf("docker 20.10 version over TLS: exit %d %q %s", r.code, r.stdout, r.stderr)
		}
	}
	r := o.vch("create", "third", "--host", env2["DOCKER_HOST"])
	if r.code == 0 || !strings.Contains(r.stderr, "another VCH's endpoint") {
		t.Errorf("create on another VCH's endpoint: exit %d %s", r.code, r.stderr)
	}
	r = o.vch("create", "plain")
	if r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("create of an existing name: exit %d %s", r.code, r.stderr)
	}

	o.mustVCH("stop", "plain")
	if st := o.inspect("plain"); st.State != deploy.StateStopped || st.Pid != 0 || st.SupervisorPid != 0 {
		t.Errorf("after stop: %+v", st)
	}
	if r := docker(t, env, "version"); r.code == 0 {
		t.Error("docker version answered by a stopped VCH")
	}
	o.mustVCH("start", "plain")
	mustDocker(t, env, "version")

	o.mustVCH("configure", "plain", "--containers", "1", "--whitelist-registry", "registry.invalid")
	st := o.inspect("plain")
	if st.State != deploy.StateRunning || st.Limits.Containers != 1 || len(st.Registries.Whitelist) != 1 {
		t.Fatalf("after configure: %+v", st)
	}
	r = docker(t, env, "pull", "127.0.0.1:1/busybox")
	if r.code == 0 || !strings.Contains(r.stderr, "access denied to registry 127.0.0.1:1") {
		t.Errorf("pull outside the whitelist: exit %d %s", r.code, r.stderr)
	}
	loadBusybox(t, env)
	mustDocker(t, env, "create", "--name", "one", "busybox", "true")
	r = docker(t, env, "create", "--name", "two", "busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "limited to 1 containers") {
		t.Errorf("second container over --containers 1: exit %d %s", r.code, r.stderr)
	}
	// Only created containers: nothing runs, so delete needs no --force.
	o.mustVCH("delete", "plain")
	o.mustVCH("delete", "second")
	if ents, _ := os.ReadDir(o.state); len(ents) != 0 {
		t.Errorf("left in the base directory: %v", ents)
	}
}
