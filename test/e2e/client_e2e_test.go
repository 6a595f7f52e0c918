//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// TestGoClient drives one container through the moby Go client: create,
// attach (before start), wait(next-exit), start, output with stdcopy,
// inspect, logs, remove, and the NotFound class on a missing container.
func TestGoClient(t *testing.T) {
	t.Parallel()
	c := apiClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	created, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: "busybox", Cmd: []string{"sh", "-c", "echo to-out; echo to-err >&2; exit 7"}, Env: []string{"A=1"}},
		Name:   uniqueName(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	id := created.ID
	defer c.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
	att, err := c.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	wait := c.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := c.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errb, att.Reader); err != nil {
		t.Fatal(err)
	}
	if out.String() != "to-out\n" || errb.String() != "to-err\n" {
		t.Errorf("attach: stdout %q stderr %q", out.String(), errb.String())
	}
	select {
	case r := <-wait.Result:
		if r.StatusCode != 7 {
			t.Errorf("wait: status %d, want 7", r.StatusCode)
		}
	case err := <-wait.Error:
		t.Fatal(err)
	}
	insp, err := c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := insp.Container.State
	if st.Running || st.ExitCode != 7 || st.Status != "exited" || st.FinishedAt == "" {
		t.Errorf("inspect state %+v", st)
	}
	logs, err := c.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	stdcopy.StdCopy(&out, &errb, logs)
	logs.Close()
	if !strings.HasSuffix(out.String(), " to-out\n") || !strings.Contains(out.String(), "T") {
		t.Errorf("logs with timestamps: %q", out.String())
	}
	if _, err := c.ContainerRemove(ctx, id, client.ContainerRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("inspect after remove: %v, want NotFound", err)
	}
}

// TestBadRequests: malformed input gets Docker's status codes and the
// daemon keeps serving.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	need(t)
	sock := strings.TrimPrefix(env.host, "unix://")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	cases := []struct {
		name, method, path, body string
		code                     int
		msgPart                  string
	}{
		{"malformed JSON", "POST", "/v1.50/containers/create", `{"Image": "busybox", `, 400, "invalid JSON"},
		{"wrong field type", "POST", "/v1.50/containers/create", `{"Image": "busybox", "Cmd": 5}`, 400, ""},
		{"bad name", "POST", "/v1.50/containers/create?name=a/b", `{"Image": "busybox"}`, 400, "Invalid container name"},
		{"missing image", "POST", "/v1.50/containers/create", `{"Image": "nosuch-e2e"}`, 404, "No such image: nosuch-e2e:latest"},
		{"create for another platform", "POST", "/v1.50/containers/create?platform=linux/arm64", `{"Image": "busybox"}`, 404, "image with reference busybox was found but its platform (linux/amd64) does not match the specified platform (linux/arm64"},
		{"create for a platform that does not parse", "POST", "/v1.50/containers/create?platform=foobar", `{"Image": "busybox"}`, 400, "unknown operating system or architecture"},
		{"pull for a platform that does not parse", "POST", "/v1.50/images/create?fromImage=busybox&tag=latest&platform=foobar", "", 400, "unknown operating system or architecture"},
		{"invalid IPC mode", "POST", "/v1.50/containers/create", `{"Image": "busybox", "HostConfig": {"IpcMode": "invalid"}}`, 400, "invalid IPC mode: invalid"},
		{"PID mode of a missing container", "POST", "/v1.50/containers/create", `{"Image": "busybox", "HostConfig": {"PidMode": "container:nosuch-e2e"}}`, 400, "No such container: nosuch-e2e"},
		{"negative CPU shares", "POST", "/v1.50/containers/create", `{"Image": "busybox", "HostConfig": {"CpuShares": -1}}`, 400, "invalid CPU shares (-1): value must be a positive integer"},
		{"several endpoints before API 1.44", "POST", "/v1.43/containers/create", `{"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"a": {}, "b": {}}}}`, 400, "Container cannot be created with multiple network endpoints"},
		{"resize without a height", "POST", "/v1.50/containers/nosuch-e2e/resize?w=80", "", 400, `invalid resize height \"\": invalid syntax`},
		{"resize with a negative width", "POST", "/v1.50/containers/nosuch-e2e/resize?h=10&w=-1", "", 400, `invalid resize width \"-1\": value out of range`},
		{"save with two platforms", "GET", "/v1.50/images/get?names=busybox&platform=%7B%22os%22%3A%22linux%22%2C%22architecture%22%3A%22amd64%22%7D&platform=%7B%22os%22%3A%22linux%22%2C%22architecture%22%3A%22arm64%22%7D", "", 400, "multiple platform parameters not supported"},
		{"inspect for another platform", "GET", "/v1.50/images/busybox/json?platform=%7B%22os%22%3A%22windows%22%2C%22architecture%22%3A%22amd64%22%7D", "", 404, "image with reference busybox was found but its platform (linux/amd64) does not match the specified platform (windows/amd64)"},
		{"import for another OS", "POST", "/v1.50/images/create?fromSrc=-&platform=macos/arm64", "x", 400, "operating system is not supported"},
		{"import for a platform that does not parse", "POST", "/v1.50/images/create?fromSrc=-&platform=nintendo64", "x", 400, "unknown operating system or architecture"},
		{"image inspect before API 1.44 has VirtualSize", "GET", "/v1.41/images/busybox/json", "", 200, `"VirtualSize":`},
		{"image inspect has Parent", "GET", "/v1.50/images/busybox/json", "", 200, `"Parent":""`},
		{"image reference that does not parse", "POST", "/v1.50/containers/create", `{"Image": "busybox:sha256:0123"}`, 400, `{"message":"invalid reference format"}`},
		{"no such container", "GET", "/v1.50/containers/nosuch-e2e/json", "", 404, "No such container: nosuch-e2e"},
		{"api too new", "GET", "/v9.99/version", "", 400, "client version 9.99 is too new"},
		{"unknown route", "GET", "/v1.50/nosuch", "", 404, "page not found"},
		// The body is read before the container is looked up (moby's
		// TestContainerInvalidJSON).
		{"commit malformed JSON", "POST", "/v1.50/commit?container=nosuch-e2e", `{invalid json`, 400, "invalid JSON: invalid character 'i' looking for beginning of object key string"},
		{"commit trailing content", "POST", "/v1.50/commit?container=nosuch-e2e", `{} trailing`, 400, "unexpected content after JSON"},
		{"commit null body", "POST", "/v1.50/commit?container=nosuch-e2e", `null`, 404, "No such container: nosuch-e2e"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, "http://vch"+tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.msgPart) {
				t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.code, tc.msgPart)
			}
		})
	}
	ok(t, "version")
}

// dockerCmd is a docker CLI command against host.
func dockerCmd(t *testing.T, host string, args ...string) *execCmd {
	cmd := newExec(context.Background(), "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+host, "DOCKER_CONFIG="+t.TempDir())
	return cmd
}

var _ = errdefs.ErrNotFound
