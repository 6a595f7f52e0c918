//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	cmd := exec.Command(filepath.Join(testenv.BinDir(), "vch"), append([]string{"ctl", "--portlayer", "unix://" + env.plSock}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
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

	tmuxBin, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux not installed")
	}
	sock := t.TempDir() + "/tmux.sock"
	tmux := func(args ...string) string {
		out, err := exec.Command(tmuxBin, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %s: %v", args, out, err)
		}
		return string(out)
	}
	cmd := filepath.Join(testenv.BinDir(), "vch") + " ctl --portlayer unix://" + env.plSock + " run -it --rm busybox sh; echo exit=$?; sleep 600"
	tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "40", cmd)
	defer exec.Command(tmuxBin, "-S", sock, "kill-server").Run()
	screen := func() string { return tmux("capture-pane", "-t", "t", "-p") }
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(screen(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("screen never showed %q:\n%s", want, screen())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
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
