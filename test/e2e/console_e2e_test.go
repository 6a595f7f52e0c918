//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// TestConsoleSize: the console size given at create (HostConfig
// ConsoleSize, [height, width]) and at exec create is the TTY's size from
// the first byte, and an exec created with a TTY but started without
// one is framed as stdcopy, since dockerd frames by the start request
// (moby's TestRunConsoleSize and TestExecConsoleSize do both).
func TestConsoleSize(t *testing.T) {
	t.Parallel()
	c := apiClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := runToExit(ctx, t, c, client.ContainerCreateOptions{
		Config:     &container.Config{Image: "busybox", Tty: true, Cmd: []string{"stty", "size"}},
		HostConfig: &container.HostConfig{ConsoleSize: [2]uint{123, 57}},
		Name:       uniqueName(t),
	})
	logs, err := c.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(logs)
	logs.Close()
	if got := strings.TrimSpace(string(b)); got != "123 57" {
		t.Errorf("stty size of a container created with console size [123, 57]: %q", got)
	}

	name := uniqueName(t) + "-exec"
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "300")
	defer docker(t, "rm", "-f", name)
	ex, err := c.ExecCreate(ctx, name, client.ExecCreateOptions{Cmd: []string{"stty", "size"}, TTY: true, AttachStdout: true, AttachStderr: true,
		ConsoleSize: client.ConsoleSize{Height: 57, Width: 123}})
	if err != nil {
		t.Fatal(err)
	}
	att, err := c.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	var out, errb bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errb, att.Reader); err != nil {
		t.Fatalf("a TTY exec started without Tty is not stdcopy-framed: %v (stdout so far %q)", err, out.String())
	}
	if got := strings.TrimSpace(out.String()); got != "57 123" {
		t.Errorf("stty size of an exec created with console size 57x123: %q (stderr %q)", got, errb.String())
	}
}

// TestEndpointMAC: a MAC address given in the endpoint settings is the
// container's interface's (API 1.44's per-network MacAddress), and inspect
// shows it.
func TestEndpointMAC(t *testing.T) {
	t.Parallel()
	c := apiClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mac, _ := net.ParseMAC("02:32:1c:23:00:04")
	id := runToExit(ctx, t, c, client.ContainerCreateOptions{
		Config:           &container.Config{Image: "busybox", Cmd: []string{"cat", "/sys/class/net/eth0/address"}},
		HostConfig:       &container.HostConfig{NetworkMode: "bridge"},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{"bridge": {MacAddress: network.HardwareAddr(mac)}}},
		Name:             uniqueName(t),
	})
	if out := ok(t, "logs", id); out != "02:32:1c:23:00:04\n" {
		t.Errorf("eth0's address: %q, want 02:32:1c:23:00:04", out)
	}
}

// runToExit creates a container with the Go client, starts it and waits
// for its exit; it is removed when the test ends. It returns its ID.
func runToExit(ctx context.Context, t *testing.T, c *client.Client, opts client.ContainerCreateOptions) string {
	t.Helper()
	created, err := c.ContainerCreate(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	})
	wait := c.ContainerWait(ctx, created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := c.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wait.Result:
	case err := <-wait.Error:
		t.Fatal(err)
	}
	return created.ID
}
