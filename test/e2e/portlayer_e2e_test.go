//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/testenv"
)

// TestPortLayerAPI: the daemon's --portlayer-listen socket serves the
// same port layer as its Docker endpoint. A container run with the
// docker CLI is seen and killed through the API; one created and run
// through the API is listed by `docker ps -a`; errors are typed.
func TestPortLayerAPI(t *testing.T) {
	need(t)
	st, err := os.Stat(env.plSock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("port layer socket %s: %v, mode %v; want 0600", env.plSock, err, st.Mode())
	}
	pl, err := client.New("unix://"+env.plSock, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "600")
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	c, err := pl.Inspect(ctx, name)
	if err != nil || c.State.Status != portlayer.StatusRunning || c.Spec.Args[0] != "sleep" {
		t.Fatalf("Inspect(%s) through the API: %+v, %v", name, c.State, err)
	}
	ch, err := pl.Wait(ctx, name, portlayer.WaitNotRunning)
	if err != nil {
		t.Fatal(err)
	}
	if err := pl.Kill(ctx, name, 9); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-ch:
		if res.ExitCode != 137 {
			t.Errorf("exit after SIGKILL through the API: %+v", res)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no exit after SIGKILL through the API")
	}
	if out := strings.TrimSpace(ok(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name)); out != "exited 137" {
		t.Errorf("docker inspect after the API's kill: %q", out)
	}
	if err := pl.Kill(ctx, name, 15); !errdefs.IsConflict(err) || portlayer.AsError(err).Reason != portlayer.ReasonNotRunning {
		t.Errorf("Kill of an exited container through the API: %v", err)
	}

	// A container made through the API alone.
	image := strings.TrimSpace(ok(t, "image", "inspect", "-f", "{{.Id}}", "busybox"))
	apiName := uniqueName(t) + "-api"
	made, err := pl.Create(ctx, portlayer.ContainerSpec{Name: apiName, Image: image, ImageRef: "busybox", Args: []string{"sh", "-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pl.Remove(ctx, made.ID, true) })
	ch, err = pl.Wait(ctx, made.ID, portlayer.WaitNextExit)
	if err != nil {
		t.Fatal(err)
	}
	if err := pl.Start(ctx, made.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-ch:
		if res.ExitCode != 3 {
			t.Errorf("exit of sh -c 'exit 3' through the API: %+v", res)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the API's container did not exit")
	}
	if out := ok(t, "ps", "-a", "--filter", "name="+apiName, "--format", "{{.Names}} {{.Status}}"); !strings.HasPrefix(out, apiName+" Exited (3)") {
		t.Errorf("docker ps -a for the API's container: %q", out)
	}
	if err := pl.Remove(ctx, made.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.Inspect(ctx, made.ID); !errdefs.IsNotFound(err) {
		t.Errorf("Inspect after Remove: %v", err)
	}
}

// vchCtl runs bin/vch ctl against the shared daemon's Port Layer API.
func vchCtl(t *testing.T, args ...string) result {
	t.Helper()
	return vchCtlIn(t, "", args...)
}

// TestCtl: the second front end, with no Docker code, against the same
// VCH: run prints the guest's kernel and exits with the container's
// status; ps, logs, stop, rm, volumes, networks and images work, and
// what it makes the docker CLI sees.
func TestCtl(t *testing.T) {
	need(t)
	kernel := strings.TrimSpace(ok(t, "run", "--rm", "busybox", "uname", "-r"))
	if r := vchCtl(t, "run", "--rm", "busybox", "uname", "-r"); r.code != 0 || strings.TrimSpace(r.stdout) != kernel {
		t.Errorf("ctl run --rm busybox uname -r: exit %d, %q (stderr %q); want the guest kernel %q", r.code, r.stdout, r.stderr, kernel)
	}
	if r := vchCtl(t, "run", "--rm", "-e", "GREETING=hello", "busybox", "sh", "-c", "echo $GREETING; echo oops >&2; exit 5"); r.code != 5 || r.stdout != "hello\n" || !strings.Contains(r.stderr, "oops") {
		t.Errorf("ctl run exiting 5: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	name := uniqueName(t)
	vol := strings.ReplaceAll(name, "-", "") + "vol"
	r := vchCtl(t, "run", "-d", "--name", name, "-v", vol+":/data", "busybox", "sh", "-c", "echo kept > /data/f; echo started; sleep 600")
	if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 64 {
		t.Fatalf("ctl run -d: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	t.Cleanup(func() { docker(t, "rm", "-f", name); docker(t, "volume", "rm", vol) })
	if out := vchCtl(t, "ps").stdout; !strings.Contains(out, name) || !strings.Contains(out, "running") {
		t.Errorf("ctl ps: %q", out)
	}
	if out := ok(t, "ps", "--filter", "name="+name, "--format", "{{.Names}}"); strings.TrimSpace(out) != name {
		t.Errorf("docker ps does not list ctl's container: %q", out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(vchCtl(t, "logs", name).stdout, "started") {
		if time.Now().After(deadline) {
			t.Fatal("ctl logs never showed the container's output")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := vchCtl(t, "volumes").stdout; !strings.Contains(out, vol) {
		t.Errorf("ctl volumes: %q", out)
	}
	if out := vchCtl(t, "networks").stdout; !strings.Contains(out, "bridge") {
		t.Errorf("ctl networks: %q", out)
	}
	if out := vchCtl(t, "images").stdout; !strings.Contains(out, "busybox:latest") {
		t.Errorf("ctl images: %q", out)
	}
	if r := vchCtl(t, "stop", "-t", "1", name); r.code != 0 {
		t.Errorf("ctl stop: %d %s", r.code, r.stderr)
	}
	if out := vchCtl(t, "ps", "-a").stdout; !strings.Contains(out, "exited") {
		t.Errorf("ctl ps -a after stop: %q", out)
	}
	if r := vchCtl(t, "rm", name); r.code != 0 {
		t.Errorf("ctl rm: %d %s", r.code, r.stderr)
	}
	// The volume kept what the container wrote.
	if out := ok(t, "run", "--rm", "-v", vol+":/data", "busybox", "cat", "/data/f"); out != "kept\n" {
		t.Errorf("the volume after ctl rm: %q", out)
	}
	if r := vchCtl(t, "rm", "nosuch-ctl"); r.code == 0 || !strings.Contains(r.stderr, "no such container: nosuch-ctl") {
		t.Errorf("ctl rm nosuch: exit %d, %q", r.code, r.stderr)
	}
}

// vchCtlIn is vchCtl with stdin.
func vchCtlIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(testenv.BinDir(), "vch"), append([]string{"ctl", "--portlayer", "unix://" + env.plSock}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// TestCtlInteractive: ctl exec (output, stdin, exit status), ctl run -i
// with piped stdin, and ctl run -it in a real terminal (tmux): the guest
// TTY has the terminal's size and follows a resize, and `exit 5` ends
// the run with 5.
func TestCtlInteractive(t *testing.T) {
	need(t)
	name := uniqueName(t)
	if r := vchCtl(t, "run", "-d", "--name", name, "busybox", "sleep", "600"); r.code != 0 {
		t.Fatalf("ctl run -d: %d %s", r.code, r.stderr)
	}
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	if r := vchCtl(t, "exec", name, "sh", "-c", "echo in $(hostname); exit 7"); r.code != 7 || !strings.HasPrefix(r.stdout, "in ") {
		t.Errorf("ctl exec exiting 7: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := vchCtlIn(t, "through stdin\n", "exec", "-i", name, "cat"); r.code != 0 || r.stdout != "through stdin\n" {
		t.Errorf("ctl exec -i cat: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := vchCtlIn(t, "a\nb\n", "run", "-i", "--rm", "busybox", "wc", "-l"); r.code != 0 || strings.TrimSpace(r.stdout) != "2" {
		t.Errorf("ctl run -i --rm busybox wc -l: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := vchCtl(t, "exec", "nosuch-ctl", "true"); r.code == 0 || !strings.Contains(r.stderr, "no such container") {
		t.Errorf("ctl exec nosuch: %d %q", r.code, r.stderr)
	}

	cmd := filepath.Join(testenv.BinDir(), "vch") + " ctl --portlayer unix://" + env.plSock + " run -it --rm busybox sh; echo exit=$?; sleep 600"
	tmux, waitFor := ttySession(t, cmd)
	waitFor("/ #")
	tmux("send-keys", "-t", "t", "stty size", "Enter")
	waitFor("40 120")
	tmux("resize-window", "-t", "t", "-x", "100", "-y", "30")
	time.Sleep(500 * time.Millisecond)
	tmux("send-keys", "-t", "t", "clear; stty size", "Enter")
	waitFor("30 100")
	tmux("send-keys", "-t", "t", "exit 5", "Enter")
	waitFor("exit=5")
}

// ttySession runs cmd in a 120×40 terminal (tmux) for the test's life;
// it returns tmux (run a tmux command on it) and waitFor (wait, up to
// 60 s, until the screen shows a text).
func ttySession(t *testing.T, cmd string) (tmux func(args ...string) string, waitFor func(want string)) {
	t.Helper()
	tmuxBin, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("VCH_REQUIRE_E2E") == "1" {
			t.Fatal("tmux not installed (make deps)")
		}
		t.Skip("tmux not installed")
	}
	sock := t.TempDir() + "/tmux.sock"
	tmux = func(args ...string) string {
		out, err := exec.Command(tmuxBin, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %s: %v", args, out, err)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "40", cmd)
	t.Cleanup(func() { _ = exec.Command(tmuxBin, "-S", sock, "kill-server").Run() })
	screen := func() string { return tmux("capture-pane", "-t", "t", "-p") }
	waitFor = func(want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(screen(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("screen never showed %q:\n%s", want, screen())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return tmux, waitFor
}

// startPersonality runs `vch personality docker` on the shared daemon's
// Port Layer API, serving env.host2, until the returned stop.
func startPersonality(dir string) (stop func(), err error) {
	sock := filepath.Join(dir, "docker2.sock")
	logf, err := os.Create(filepath.Join(dir, "personality.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(testenv.BinDir(), "vch"), "personality", "docker", "--portlayer", "unix://"+env.plSock, "-H", "unix://"+sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			b, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("no socket %s within 30 s: %s", sock, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	env.host2 = "unix://" + sock
	return stop, nil
}

// docker2 runs the docker CLI against the personality process.
func docker2(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	return dockerWith(t, []string{"DOCKER_HOST=" + env.host2}, stdin, args...)
}

// ok2 is docker2 failing the test unless it exits 0.
func ok2(t *testing.T, args ...string) string {
	t.Helper()
	r := docker2(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("docker %v on the personality process: exit %d: %s%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// TestPersonalityProcess is the part of the e2e suite that runs against
// the Docker personality in its own process (vch personality docker),
// every call crossing the Port Layer API: the unmodified docker CLI's
// run (attached, with stdin, with a TTY), exec, logs -f, cp both ways,
// pull, network and volume commands behave as on the daemon's own
// endpoint, and both endpoints see the same objects.
func TestPersonalityProcess(t *testing.T) {
	need(t)
	if out := ok2(t, "run", "--rm", "busybox", "echo", "hello"); out != "hello\n" {
		t.Errorf("run: %q", out)
	}
	if r := docker2(t, nil, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 4"); r.code != 4 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("run exiting 4: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := docker2(t, []byte("one\ntwo\n"), "run", "-i", "--rm", "busybox", "wc", "-l"); r.code != 0 || strings.TrimSpace(r.stdout) != "2" {
		t.Errorf("run -i: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := docker2(t, nil, "run", "--rm", "nosuch-image-p2"); r.code != 125 || !strings.Contains(r.stderr, "Unable to find image") && !strings.Contains(r.stderr, "No such image") {
		t.Errorf("run of a missing image: %d %q", r.code, r.stderr)
	}

	name := uniqueName(t)
	ok2(t, "run", "-d", "--name", name, "busybox", "sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done")
	t.Cleanup(func() { docker2(t, nil, "rm", "-f", name) })
	// The daemon's own endpoint sees the same container.
	if out := ok(t, "ps", "--filter", "name="+name, "--format", "{{.Names}} {{.State}}"); strings.TrimSpace(out) != name+" running" {
		t.Errorf("the daemon's endpoint lists %q", out)
	}
	if r := docker2(t, nil, "exec", name, "sh", "-c", "echo in-exec; exit 6"); r.code != 6 || r.stdout != "in-exec\n" {
		t.Errorf("exec exiting 6: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := docker2(t, []byte("via stdin"), "exec", "-i", name, "cat"); r.code != 0 || r.stdout != "via stdin" {
		t.Errorf("exec -i cat: %d %q %q", r.code, r.stdout, r.stderr)
	}
	// logs -f follows until the client goes: read a few ticks, then stop.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "logs", "-f", name)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+env.host2)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	seen := 0
	for sc.Scan() && seen < 8 {
		if strings.HasPrefix(sc.Text(), "tick") {
			seen++
		}
	}
	cancel()
	_ = cmd.Wait()
	if seen < 8 {
		t.Errorf("logs -f showed %d ticks", seen)
	}

	// cp both ways.
	src := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(src, bytes.Repeat([]byte("vch"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	ok2(t, "cp", src, name+":/tmp/payload")
	back := filepath.Join(t.TempDir(), "back")
	ok2(t, "cp", name+":/tmp/payload", back)
	if b, err := os.ReadFile(back); err != nil || len(b) != 300000 {
		t.Errorf("cp round trip: %d bytes, %v", len(b), err)
	}
	want := "Could not find the file /nope in container " + name
	if cliMajor() < 23 {
		want = "No such container:path: " + name + ":/nope"
	}
	if r := docker2(t, nil, "cp", name+":/nope", back); r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("cp of a missing path: %d %q", r.code, r.stderr)
	}

	// Networks and volumes.
	net := uniqueName(t) + "-net"
	ok2(t, "network", "create", net)
	ok2(t, "network", "connect", net, name)
	if out := ok2(t, "network", "inspect", "-f", "{{range .Containers}}{{.Name}}{{end}}", net); strings.TrimSpace(out) != name {
		t.Errorf("network inspect after connect: %q", out)
	}
	if out := ok(t, "network", "ls", "--format", "{{.Name}}"); !strings.Contains(out, net) {
		t.Errorf("the daemon's endpoint does not list the network: %q", out)
	}
	ok2(t, "network", "disconnect", net, name)
	ok2(t, "network", "rm", net)
	vol := strings.ReplaceAll(uniqueName(t), "-", "") + "v"
	ok2(t, "volume", "create", vol)
	if out := ok2(t, "run", "--rm", "-v", vol+":/v", "busybox", "sh", "-c", "echo kept > /v/f && cat /v/f"); out != "kept\n" {
		t.Errorf("run with the volume: %q", out)
	}
	if out := ok2(t, "volume", "ls", "-q"); !strings.Contains(out, vol) {
		t.Errorf("volume ls: %q", out)
	}
	ok2(t, "volume", "rm", vol)

	// Pull from the run's registry on 127.0.0.1.
	ref := env.registry + "/library/busybox:1"
	if r := docker2(t, nil, "pull", ref); r.code != 0 || !strings.Contains(r.stdout, "Downloaded newer image") && !strings.Contains(r.stdout, "Image is up to date") {
		t.Errorf("pull: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if out := ok(t, "images", "--format", "{{.Repository}}"); !strings.Contains(out, env.registry+"/library/busybox") {
		t.Errorf("the daemon's endpoint does not list the pulled image: %q", out)
	}
	ok2(t, "rmi", ref)
	if r := docker2(t, nil, "build", "-"); r.code == 0 {
		t.Error("docker build on the personality process succeeded; it is not served there")
	}

	// run -it in a real terminal: the TTY's size, then the exit status.
	tmux, waitFor := ttySession(t, "DOCKER_CONFIG="+t.TempDir()+" DOCKER_HOST="+env.host2+" docker run -it --rm busybox sh; echo exit=$?; sleep 600")
	waitFor("/ #")
	tmux("send-keys", "-t", "t", "stty size", "Enter")
	waitFor("40 120")
	tmux("send-keys", "-t", "t", "exit 5", "Enter")
	waitFor("exit=5")
}
