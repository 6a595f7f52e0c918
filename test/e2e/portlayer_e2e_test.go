//go:build e2e

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/client"
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
