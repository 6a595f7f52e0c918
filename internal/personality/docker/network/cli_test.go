package network_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const dockerCLI = "/usr/local/bin/docker"

// TestDockerCLI runs the real docker CLI 28.2 through the docker network
// commands against the routes and the fake, checking what a user sees.
func TestDockerCLI(t *testing.T) {
	if _, err := os.Stat(dockerCLI); err != nil {
		t.Skipf("docker CLI not available at %s: %v", dockerCLI, err)
	}
	h, f := newRouter(t)
	sock := listen(t, h)
	run := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), dockerCLI, append([]string{"-H", "unix://" + sock}, args...)...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CLI_HINTS=false")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("docker %v: %v", args, err)
		}
		return out.String(), errb.String(), code
	}

	tests := []struct {
		name     string
		args     []string
		setup    func()
		wantCode int
		wantOut  string // substring of stdout
		wantErr  string // substring of stderr
	}{
		{name: "create", args: []string{"network", "create", "--subnet", "10.1.0.0/16", "--gateway", "10.1.0.254", "--ip-range", "10.1.2.0/24", "--internal", "--label", "tier=web", "-o", "com.docker.network.driver.mtu=1400", "app"},
			wantOut: fakeID("app") + "\n"},
		{name: "create duplicate", args: []string{"network", "create", "app"}, wantCode: 1, wantErr: "Error response from daemon: network with name app already exists"},
		{name: "create bad subnet", args: []string{"network", "create", "--subnet", "10.1.2.0/16", "bad"}, wantCode: 1,
			wantErr: "Error response from daemon: invalid network config:\ninvalid subnet 10.1.2.0/16: it should be 10.1.0.0/16"},
		{name: "create ipv6", args: []string{"network", "create", "--ipv6", "six"}, wantCode: 1, wantErr: "IPv6 is not supported by vch yet"},
		{name: "create macvlan", args: []string{"network", "create", "-d", "macvlan", "mv"}, wantCode: 1, wantErr: `Error response from daemon: plugin "macvlan" not found`},
		{name: "create bridge", args: []string{"network", "create", "bridge"}, wantCode: 1, wantErr: "operation is not permitted on predefined bridge network"},
		{name: "ls", args: []string{"network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"}, wantOut: "app bridge local\nbridge bridge local\nnone null local\n"},
		{name: "ls filter", args: []string{"network", "ls", "-q", "--no-trunc", "--filter", "type=custom"}, wantOut: fakeID("app") + "\n"},
		{name: "inspect", args: []string{"network", "inspect", "--format", "{{.Name}} {{.Internal}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}} {{.IPRange}}{{end}} {{.Labels}} {{.Options}}", "app"},
			wantOut: "app true 10.1.0.0/16 10.1.0.254 10.1.2.0/24 map[tier:web] map[com.docker.network.driver.mtu:1400]\n"},
		{name: "inspect bridge", args: []string{"network", "inspect", "bridge"}, wantOut: `"com.docker.network.bridge.default_bridge": "true"`},
		{name: "inspect missing", args: []string{"network", "inspect", "nope"}, wantCode: 1, wantErr: "network nope not found"},
		{name: "connect", args: []string{"network", "connect", "--ip", "10.1.2.9", "--alias", "db", "app", "web"}},
		{name: "connect ip on bridge", args: []string{"network", "connect", "--ip", "172.17.0.9", "bridge", "web"}, wantCode: 1,
			wantErr: "Error response from daemon: invalid endpoint settings:\nuser specified IP address is supported on user defined networks only"},
		{name: "disconnect", args: []string{"network", "disconnect", "-f", "app", "web"}},
		{name: "rm in use", setup: func() { f.attach("app", "web", "10.1.2.1/16") }, args: []string{"network", "rm", "app"}, wantCode: 1,
			wantErr: `Error response from daemon: error while removing network: network app has active endpoints (name:"web" id:"` + fakeID("ep-web-app")[:12] + `")`},
		{name: "rm bridge", args: []string{"network", "rm", "bridge"}, wantCode: 1, wantErr: "Error response from daemon: bridge is a pre-defined network and cannot be removed"},
		{name: "rm missing", args: []string{"network", "rm", "nope"}, wantCode: 1, wantErr: "Error response from daemon: network nope not found"},
		{name: "create spare", args: []string{"network", "create", "spare"}, wantOut: fakeID("spare")},
		{name: "prune", args: []string{"network", "prune", "-f"}, wantOut: "Deleted Networks:\nspare\n"},
		{name: "prune nothing", args: []string{"network", "prune", "-f"}, wantOut: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			out, errOut, code := run(tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("docker %s: exit %d, stdout %q, stderr %q; want exit %d, stdout ~%q, stderr ~%q",
					strings.Join(tt.args, " "), code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
	calls := strings.Join(f.Calls(), "\n")
	for _, want := range []string{"Connect web " + fakeID("app") + " ip=10.1.2.9 aliases=[db] links=[]", "Disconnect web " + fakeID("app") + " force=true"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no %q in calls:\n%s", want, calls)
		}
	}
}
