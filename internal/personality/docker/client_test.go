package docker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/dockertest"
	"github.com/vchproject/vch/internal/portlayer"
)

func newClient(t *testing.T, sock string) *client.Client {
	t.Helper()
	c, err := client.New(client.WithHost("unix://" + sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientRoundTrip drives the moby Go client through the docker run
// sequence: create, attach, wait, start, output, exit code, inspect, logs,
// list, remove.
func TestClientRoundTrip(t *testing.T) {
	f, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()

	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil || v.APIVersion != "1.50" || v.Version != "0.0.0-test" {
		t.Fatalf("version = %+v, %v", v, err)
	}

	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:   "rt",
		Config: &container.Config{Image: "busybox", Cmd: []string{"echo", "hello", "world"}, Env: []string{"FOO=bar"}, AttachStdout: true, AttachStderr: true, StopSignal: "SIGINT"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(created.ID) != 64 || created.Warnings == nil {
		t.Fatalf("create = %+v", created)
	}
	att, err := cli.ContainerAttach(ctx, created.ID, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	wait := cli.ContainerWait(ctx, created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "hello world\n" || stderr.Len() != 0 {
		t.Errorf("attach output = %q / %q", stdout.String(), stderr.String())
	}
	select {
	case res := <-wait.Result:
		if res.StatusCode != 0 {
			t.Errorf("exit = %d", res.StatusCode)
		}
	case err := <-wait.Error:
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		t.Fatal("wait timed out")
	}

	ins, err := cli.ContainerInspect(ctx, "rt", client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := ins.Container
	if c.Name != "/rt" || c.Path != "echo" || strings.Join(c.Args, ",") != "hello,world" || c.State.Status != "exited" ||
		c.Image != dockertest.BusyboxID || c.Config.Image != "busybox" || c.Config.StopSignal != "SIGINT" || c.Platform != "linux" {
		t.Errorf("inspect = %+v / %+v", c, c.State)
	}
	if c.Config.Env[0] != "FOO=bar" || c.Config.Hostname != c.ID[:12] || c.HostConfig == nil || c.NetworkSettings == nil {
		t.Errorf("inspect config = %+v", c.Config)
	}
	if _, err := time.Parse(time.RFC3339Nano, c.State.FinishedAt); err != nil {
		t.Errorf("FinishedAt %q: %v", c.State.FinishedAt, err)
	}

	logs, err := cli.ContainerLogs(ctx, "rt", client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if _, err := stdcopy.StdCopy(&stdout, &stderr, logs); err != nil {
		t.Fatal(err)
	}
	logs.Close()
	if stdout.String() != "hello world\n" {
		t.Errorf("logs = %q", stdout.String())
	}

	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if s := list.Items[0]; s.Names[0] != "/rt" || s.Command != "echo hello world" || s.Image != "busybox" || !strings.HasPrefix(s.Status, "Exited (0) ") {
		t.Errorf("summary = %+v", s)
	}
	if list, _ := cli.ContainerList(ctx, client.ContainerListOptions{}); len(list.Items) != 0 {
		t.Errorf("running list = %+v", list.Items)
	}

	// The spec the port layer received.
	pc, _ := f.Inspect(ctx, "rt")
	if pc.Spec.StopSignal != 2 || pc.Spec.Image != dockertest.BusyboxID || pc.Spec.ImageRef != "busybox" || pc.Spec.Env[len(pc.Spec.Env)-1] != "FOO=bar" {
		t.Errorf("spec = %+v", pc.Spec)
	}

	if _, err := cli.ContainerRemove(ctx, "rt", client.ContainerRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = cli.ContainerInspect(ctx, "rt", client.ContainerInspectOptions{})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "No such container: rt") {
		t.Errorf("inspect after rm: %v", err)
	}
}

func TestClientConflicts(t *testing.T) {
	_, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()
	c1, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: "dup", Config: &container.Config{Image: "busybox", Cmd: []string{"sleep"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: "dup", Config: &container.Config{Image: "busybox"}})
	want := fmt.Sprintf(`Conflict. The container name "/dup" is already in use by container %q. You have to remove (or rename) that container to be able to reuse that name.`, c1.ID)
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("dup create: %v", err)
	}
	if _, err := cli.ContainerKill(ctx, "dup", client.ContainerKillOptions{}); !errdefs.IsConflict(err) ||
		!strings.Contains(err.Error(), "cannot kill container: dup: container "+c1.ID+" is not running") {
		t.Errorf("kill created: %v", err)
	}
	if _, err := cli.ContainerStart(ctx, "dup", client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ContainerStart(ctx, "dup", client.ContainerStartOptions{}); err != nil {
		t.Errorf("start running (304 is success): %v", err)
	}
	_, err = cli.ContainerRemove(ctx, "dup", client.ContainerRemoveOptions{})
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), `cannot remove container "dup": container is running: stop the container before removing or force remove`) {
		t.Errorf("rm running: %v", err)
	}
	wait := cli.ContainerWait(ctx, "dup", client.ContainerWaitOptions{})
	if _, err := cli.ContainerKill(ctx, "dup", client.ContainerKillOptions{Signal: "SIGTERM"}); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-wait.Result:
		if res.StatusCode != 143 {
			t.Errorf("exit after SIGTERM = %d", res.StatusCode)
		}
	case err := <-wait.Error:
		t.Fatal(err)
	}
}

// attachOrder wraps the fake's Interaction and records whether Attach had
// returned, so the test can check it happened before the 101 response.
type attachOrder struct {
	portlayer.Interaction
	attached atomic.Bool
}

func (a *attachOrder) Attach(ctx context.Context, id string, opts portlayer.AttachOptions) (portlayer.Attachment, error) {
	time.Sleep(50 * time.Millisecond) // a slow registration must still precede the response
	att, err := a.Interaction.Attach(ctx, id, opts)
	a.attached.Store(err == nil)
	return att, err
}

// TestAttachHijack speaks raw HTTP: Upgrade request, 101 head with the
// multiplexed content type only after Attach returned, stdin piped to the
// container, stdcopy frames out, connection closed at exit.
func TestAttachHijack(t *testing.T) {
	f := dockertest.New()
	ao := &attachOrder{Interaction: f}
	srv := docker.New(docker.Config{}, docker.Backend{Compute: f, Interaction: ao, Images: f.Images(), System: f}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go srv.Serve(ctx, l)

	tests := []struct {
		name       string
		cmd        []string
		upgrade    bool
		version    string
		wantStatus string
		wantType   string
	}{
		{"upgrade multiplexed", []string{"cat"}, true, "/v1.50", "HTTP/1.1 101 UPGRADED", "application/vnd.docker.multiplexed-stream"},
		{"upgrade old API raw type", []string{"cat"}, true, "/v1.41", "HTTP/1.1 101 UPGRADED", "application/vnd.docker.raw-stream"},
		{"no upgrade", []string{"cat"}, false, "", "HTTP/1.1 200 OK", "application/vnd.docker.raw-stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ao.attached.Store(false)
			c, err := f.Create(t.Context(), portlayer.ContainerSpec{Image: dockertest.BusyboxID, Args: tt.cmd, OpenStdin: true, StdinOnce: true})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := fmt.Sprintf("POST %s/containers/%s/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n", tt.version, c.ID)
			if tt.upgrade {
				req += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
			}
			if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			status, _ := br.ReadString('\n')
			if !ao.attached.Load() {
				t.Fatal("response head arrived before Attach returned")
			}
			if strings.TrimSpace(status) != tt.wantStatus {
				t.Fatalf("status line %q", status)
			}
			hdr := map[string]string{}
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if line == "\r\n" {
					break
				}
				k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
				hdr[k] = v
			}
			if hdr["Content-Type"] != tt.wantType {
				t.Errorf("headers %v", hdr)
			}
			if tt.upgrade && (hdr["Connection"] != "Upgrade" || hdr["Upgrade"] != "tcp") {
				t.Errorf("headers %v", hdr)
			}
			if err := f.Start(t.Context(), c.ID); err != nil {
				t.Fatal(err)
			}
			io.WriteString(conn, "line one\nline two")
			conn.(*net.TCPConn).CloseWrite()
			var out, errb bytes.Buffer
			done := make(chan error, 1)
			go func() { _, err := stdcopy.StdCopy(&out, &errb, br); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("connection not closed at exit")
			}
			if out.String() != "line one\nline two" {
				t.Errorf("stdout = %q", out.String())
			}
		})
	}
}

// TestAttachTTYRaw checks a TTY container's attach is unframed.
func TestAttachTTYRaw(t *testing.T) {
	f, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()
	c, err := f.Create(ctx, portlayer.ContainerSpec{Image: dockertest.BusyboxID, Args: []string{"echo", "tty"}, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	att, err := cli.ContainerAttach(ctx, c.ID, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(att.Reader)
	if string(b) != "tty\n" {
		t.Errorf("raw output = %q", b)
	}
}

// TestWaitHeaderFirst checks POST /wait answers 200 before the container
// exits and the body when it does.
func TestWaitHeaderFirst(t *testing.T) {
	f, sock := startServer(t)
	ctx := t.Context()
	c, err := f.Create(ctx, portlayer.ContainerSpec{Image: dockertest.BusyboxID, Args: []string{"sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://d/v1.50/containers/"+c.ID+"/wait?condition=not-running", nil)
	resp, err := hc.Do(req) // returns once the head has arrived
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("head = %d %v", resp.StatusCode, resp.Header)
	}
	if err := f.Kill(ctx, c.ID, 9); err != nil {
		t.Fatal(err)
	}
	var wr container.WaitResponse
	if err := json.NewDecoder(resp.Body).Decode(&wr); err != nil {
		t.Fatal(err)
	}
	if wr.StatusCode != 137 || wr.Error != nil {
		t.Errorf("wait = %+v", wr)
	}
}

// TestLogs checks framing, tail, stream selection and timestamps.
func TestLogs(t *testing.T) {
	f, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()
	run := func(args ...string) string {
		c, err := f.Create(ctx, portlayer.ContainerSpec{Image: dockertest.BusyboxID, Args: args})
		if err != nil {
			t.Fatal(err)
		}
		ch, _ := f.Wait(ctx, c.ID, portlayer.WaitNextExit)
		if err := f.Start(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		<-ch
		return c.ID
	}
	out := run("echo", "to stdout")
	errID := run("printerr", "to stderr")
	tests := []struct {
		name             string
		id               string
		opts             client.ContainerLogsOptions
		wantOut, wantErr string
		stamped          bool
	}{
		{"stdout", out, client.ContainerLogsOptions{ShowStdout: true}, "to stdout\n", "", false},
		{"stderr framed as stderr", errID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true}, "", "to stderr\n", false},
		{"stderr not selected", errID, client.ContainerLogsOptions{ShowStdout: true}, "", "", false},
		{"tail 0", out, client.ContainerLogsOptions{ShowStdout: true, Tail: "0"}, "", "", false},
		{"tail all", out, client.ContainerLogsOptions{ShowStdout: true, Tail: "all"}, "to stdout\n", "", false},
		{"timestamps", out, client.ContainerLogsOptions{ShowStdout: true, Timestamps: true}, "to stdout\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := cli.ContainerLogs(ctx, tt.id, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			var o, e bytes.Buffer
			if _, err := stdcopy.StdCopy(&o, &e, rc); err != nil {
				t.Fatal(err)
			}
			got := o.String()
			if tt.stamped {
				ts, rest, _ := strings.Cut(got, " ")
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || len(ts) != len("2006-01-02T15:04:05.000000000Z") {
					t.Errorf("timestamp %q: %v", ts, err)
				}
				got = rest
			}
			if got != tt.wantOut || e.String() != tt.wantErr {
				t.Errorf("logs = %q / %q, want %q / %q", got, e.String(), tt.wantOut, tt.wantErr)
			}
		})
	}
}

// dockerConfig is an image config running args.
func dockerConfig(args []string) ocispec.Image {
	return ocispec.Image{Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"}, Config: ocispec.ImageConfig{Cmd: args}}
}
