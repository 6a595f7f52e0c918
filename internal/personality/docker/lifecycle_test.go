package docker_test

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

func TestStopRestartRename(t *testing.T) {
	f, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: "svc", Config: &container.Config{Image: "busybox", Cmd: []string{"sleep"}, StopSignal: "SIGQUIT"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ContainerStart(ctx, "svc", client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ContainerRestart(ctx, "svc", client.ContainerRestartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ContainerStop(ctx, "svc", client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	ins, err := cli.ContainerInspect(ctx, "svc", client.ContainerInspectOptions{})
	if err != nil || ins.Container.State.ExitCode != 128+3 || ins.Container.State.Running {
		t.Fatalf("after stop: %+v, %v", ins.Container.State, err)
	}
	if _, err := cli.ContainerStop(ctx, "svc", client.ContainerStopOptions{}); err != nil {
		t.Errorf("stop stopped (304 is success): %v", err)
	}
	starts := 0
	for _, call := range f.Calls() {
		if strings.HasPrefix(call, "Start ") {
			starts++
		}
	}
	if starts != 2 {
		t.Errorf("port-layer starts = %d, calls %v", starts, f.Calls())
	}
	if _, err := cli.ContainerRename(ctx, "svc", client.ContainerRenameOptions{NewName: "svc2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ContainerRename(ctx, c.ID, client.ContainerRenameOptions{NewName: "svc2"}); !errdefs.IsInvalidArgument(err) ||
		!strings.Contains(err.Error(), "Renaming a container with the same name as its current name") {
		t.Errorf("rename same: %v", err)
	}
	if _, err := cli.ContainerInspect(ctx, "svc2", client.ContainerInspectOptions{}); err != nil {
		t.Errorf("inspect renamed: %v", err)
	}
}
