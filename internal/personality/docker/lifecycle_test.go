package docker_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/dockertest"
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

// TestListBeforeSince checks `docker ps -a -f before=|since=`: by creation
// order, and 404 "No such container" for a container that does not exist.
func TestListBeforeSince(t *testing.T) {
	_, h := newHandler(t)
	for _, n := range []string{"first", "second", "third"} {
		if rec := do(t, h, "POST", "/v1.50/containers/create?name="+n, `{"Image":"busybox","Cmd":["true"]}`); rec.Code != 201 {
			t.Fatalf("create %s: %d %s", n, rec.Code, rec.Body)
		}
	}
	tests := []struct {
		name, filters string
		code          int
		want          string
	}{
		{name: "before", filters: `{"before":{"third":true}}`, code: 200, want: "/second,/first"},
		{name: "since", filters: `{"since":{"first":true}}`, code: 200, want: "/third,/second"},
		{name: "both", filters: `{"since":{"first":true},"before":{"third":true}}`, code: 200, want: "/second"},
		{name: "before missing", filters: `{"before":{"nosuch":true}}`, code: 404, want: "No such container: nosuch"},
		{name: "since missing", filters: `{"since":{"gone":true}}`, code: 404, want: "No such container: gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, h, "GET", "/v1.50/containers/json?all=1&filters="+url.QueryEscape(tt.filters), "")
			if rec.Code != tt.code {
				t.Fatalf("code %d, want %d: %s", rec.Code, tt.code, rec.Body)
			}
			if tt.code != 200 {
				if got := message(t, rec); got != tt.want {
					t.Fatalf("message %q, want %q", got, tt.want)
				}
				return
			}
			var list []struct{ Names []string }
			if err := json.NewDecoder(rec.Body).Decode(&list); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range list {
				names = append(names, c.Names...)
			}
			if got := strings.Join(names, ","); got != tt.want {
				t.Fatalf("containers %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRestartPaused checks that restart stops a paused container before
// starting it again, as dockerd does, instead of starting a paused VM
// (which the port layer refuses or blocks on).
func TestRestartPaused(t *testing.T) {
	tests := []struct {
		name   string
		pause  bool
		query  string
		code   int
		starts int
	}{
		{name: "running", code: 204, starts: 2},
		{name: "paused", pause: true, code: 204, starts: 2},
		{name: "paused custom signal", pause: true, query: "?signal=SIGUSR1&t=1", code: 204, starts: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := dockertest.New()
			h := docker.New(docker.Config{Version: "0.0.0-test"}, docker.Backend{
				Compute: f, Interaction: f, Images: f.Images(), System: f, Pauser: f,
			}, nil).Handler()
			if rec := do(t, h, "POST", "/v1.50/containers/create?name=pz", `{"Image":"busybox","Cmd":["sleep"]}`); rec.Code != 201 {
				t.Fatalf("create: %d %s", rec.Code, rec.Body)
			}
			if rec := do(t, h, "POST", "/v1.50/containers/pz/start", ""); rec.Code != 204 {
				t.Fatalf("start: %d %s", rec.Code, rec.Body)
			}
			if tt.pause {
				if rec := do(t, h, "POST", "/v1.50/containers/pz/pause", ""); rec.Code != 204 {
					t.Fatalf("pause: %d %s", rec.Code, rec.Body)
				}
			}
			rec := do(t, h, "POST", "/v1.50/containers/pz/restart"+tt.query, "")
			if rec.Code != tt.code {
				t.Fatalf("restart: %d %s, want %d (calls %v)", rec.Code, rec.Body, tt.code, f.Calls())
			}
			starts := 0
			for _, call := range f.Calls() {
				if strings.HasPrefix(call, "Start ") {
					starts++
				}
			}
			if starts != tt.starts {
				t.Errorf("port-layer starts = %d, want %d; calls %v", starts, tt.starts, f.Calls())
			}
			ins := do(t, h, "GET", "/v1.50/containers/pz/json", "")
			var st struct{ State struct{ Status string } }
			if err := json.Unmarshal(ins.Body.Bytes(), &st); err != nil || st.State.Status != "running" {
				t.Errorf("after restart: status %q (%v)", st.State.Status, err)
			}
		})
	}
}

// TestPIDModeContainer: `--pid container:X` names X by ID once created
// and, as dockerd, starts only while X runs (moby's TestPIDModeContainer).
func TestPIDModeContainer(t *testing.T) {
	_, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()
	if _, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: "busybox"},
		HostConfig: &container.HostConfig{PidMode: "container:nosuch"}}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "No such container: nosuch") {
		t.Errorf("create with a missing PID container: %v", err)
	}
	pidc, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: "pidc", Config: &container.Config{Image: "busybox", Cmd: []string{"sleep"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: "busybox", Cmd: []string{"sleep"}},
		HostConfig: &container.HostConfig{PidMode: "container:pidc"}})
	if err != nil {
		t.Fatal(err)
	}
	ins, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil || string(ins.Container.HostConfig.PidMode) != "container:"+pidc.ID {
		t.Errorf("PidMode = %q, %v; want container:%s", ins.Container.HostConfig.PidMode, err, pidc.ID)
	}
	_, err = cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{})
	if !errdefs.IsInternal(err) || !strings.Contains(err.Error(), "failed to join PID namespace: container "+pidc.ID+" is not running") {
		t.Errorf("start while the PID container is stopped: %v", err)
	}
	if _, err := cli.ContainerStart(ctx, "pidc", client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		t.Errorf("start while the PID container runs: %v", err)
	}
}

// TestRuntime: HostConfig.Runtime defaults to the VCH's one runtime (the
// name `docker info` gives), and another is refused as dockerd refuses a
// runtime it does not know.
func TestRuntime(t *testing.T) {
	_, sock := startServer(t)
	cli := newClient(t, sock)
	ctx := t.Context()
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: "busybox"}})
	if err != nil {
		t.Fatal(err)
	}
	ins, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil || ins.Container.HostConfig.Runtime != info.Info.DefaultRuntime || info.Info.DefaultRuntime == "" {
		t.Errorf("Runtime = %q, %v; want the default %q", ins.Container.HostConfig.Runtime, err, info.Info.DefaultRuntime)
	}
	if _, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: "busybox"},
		HostConfig: &container.HostConfig{Runtime: info.Info.DefaultRuntime}}); err != nil {
		t.Errorf("create naming the default runtime: %v", err)
	}
	if _, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: "busybox"},
		HostConfig: &container.HostConfig{Runtime: "runc"}}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "unknown or invalid runtime name: runc") {
		t.Errorf("create with runtime runc: %v", err)
	}
}

// TestPausedTexts: dockerd's texts for a paused container, written from
// the port layer's typed errors (kind, reason, operation).
func TestPausedTexts(t *testing.T) {
	f := dockertest.New()
	h := docker.New(docker.Config{Version: "0.0.0-test"}, docker.Backend{
		Compute: f, Interaction: f, Images: f.Images(), System: f, Pauser: f,
	}, nil).Handler()
	if rec := do(t, h, "POST", "/v1.50/containers/create?name=pt", `{"Image":"busybox","Cmd":["sleep"]}`); rec.Code != 201 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	pt, err := f.Inspect(t.Context(), "pt")
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		method, path string
		code         int
		text         string
	}{
		{"POST", "/v1.50/containers/pt/pause", 409, "is not running"},
		{"POST", "/v1.50/containers/pt/start", 204, ""},
		{"POST", "/v1.50/containers/pt/unpause", 409, "is not paused"},
		{"POST", "/v1.50/containers/pt/pause", 204, ""},
		{"POST", "/v1.50/containers/pt/pause", 409, "is already paused"},
		{"POST", "/v1.50/containers/pt/kill?signal=TERM", 409, "cannot kill container: pt: container " + pt.ID + " is paused. Unpause the container before stopping or killing"},
		{"POST", "/v1.50/containers/pt/start", 409, "cannot start a paused container, try unpause instead"},
		{"POST", "/v1.50/containers/nosuch/pause", 404, "No such container: nosuch"},
	} {
		rec := do(t, h, step.method, step.path, "")
		if rec.Code != step.code || !strings.Contains(rec.Body.String(), step.text) {
			t.Errorf("%s %s: %d %s; want %d with %q", step.method, step.path, rec.Code, rec.Body, step.code, step.text)
		}
	}
}

// TestUnchangedFromPortLayer: a start of a running container and a stop
// of a stopped one answer 304 as dockerd does, told so by the port
// layer's NotModified from the start or stop itself (the port layer is
// asked each time), not by a state the handler looked at first. A
// restart of a stopped container just starts it.
func TestUnchangedFromPortLayer(t *testing.T) {
	f := dockertest.New()
	h := docker.New(docker.Config{Version: "0.0.0-test"}, docker.Backend{
		Compute: f, Interaction: f, Images: f.Images(), System: f, Pauser: f,
	}, nil).Handler()
	if rec := do(t, h, "POST", "/v1.50/containers/create?name=un", `{"Image":"busybox","Cmd":["sleep"]}`); rec.Code != 201 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	count := func(prefix string) int {
		n := 0
		for _, call := range f.Calls() {
			if strings.HasPrefix(call, prefix) {
				n++
			}
		}
		return n
	}
	for _, step := range []struct {
		path   string
		code   int
		called string // the port-layer call made, its count after the step
		calls  int
	}{
		{"/v1.50/containers/un/stop", 304, "Stop ", 1},
		{"/v1.50/containers/un/stop?signal=SIGUSR1&t=1", 304, "Kill ", 1},
		{"/v1.50/containers/un/start", 204, "Start ", 1},
		{"/v1.50/containers/un/start", 304, "Start ", 2},
		{"/v1.50/containers/un/stop", 204, "Stop ", 2},
		{"/v1.50/containers/un/stop", 304, "Stop ", 3},
		{"/v1.50/containers/un/restart", 204, "Start ", 3},
	} {
		rec := do(t, h, "POST", step.path, "")
		if rec.Code != step.code {
			t.Errorf("POST %s: %d %s, want %d", step.path, rec.Code, rec.Body, step.code)
		}
		if rec.Code == 304 && rec.Body.Len() != 0 {
			t.Errorf("POST %s: 304 with a body %q", step.path, rec.Body)
		}
		if n := count(step.called); n != step.calls {
			t.Errorf("POST %s: %d %q calls, want %d; calls %v", step.path, n, step.called, step.calls, f.Calls())
		}
	}
	ins := do(t, h, "GET", "/v1.50/containers/un/json", "")
	var st struct{ State struct{ Status string } }
	if err := json.Unmarshal(ins.Body.Bytes(), &st); err != nil || st.State.Status != "running" {
		t.Errorf("after restart: status %q (%v)", st.State.Status, err)
	}
}

// TestInspectNode: a container whose VM runs on one of several hosts
// shows it as Node.Name (the Swarm API's member); one on the VCH's own
// host has no Node at all, as dockerd's inspection has none.
func TestInspectNode(t *testing.T) {
	for _, host := range []string{"", "esx-07.example"} {
		f := dockertest.New()
		f.VMHost = host
		h := docker.New(docker.Config{Version: "0.0.0-test"}, docker.Backend{
			Compute: f, Interaction: f, Images: f.Images(), System: f,
		}, nil).Handler()
		if rec := do(t, h, "POST", "/v1.50/containers/create?name=n1", `{"Image":"busybox","Cmd":["sleep"]}`); rec.Code != 201 {
			t.Fatalf("create: %d %s", rec.Code, rec.Body)
		}
		if rec := do(t, h, "POST", "/v1.50/containers/n1/start", ""); rec.Code != 204 {
			t.Fatalf("start: %d %s", rec.Code, rec.Body)
		}
		ins := do(t, h, "GET", "/v1.50/containers/n1/json", "")
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(ins.Body.Bytes(), &doc); err != nil {
			t.Fatalf("inspect: %v\n%s", err, ins.Body)
		}
		node, ok := doc["Node"]
		switch {
		case host == "" && ok:
			t.Errorf("a VM on the VCH's own host: Node %s, want none", node)
		case host != "" && string(node) != `{"Name":"`+host+`"}`:
			t.Errorf("a VM on host %s: Node %s (present %v)", host, node, ok)
		}
	}
}
