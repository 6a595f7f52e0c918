package docker_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vchproject/vch/internal/portlayer"
)

const dockerCLI = "/usr/local/bin/docker"

// runCLI runs the real docker CLI against sock and returns stdout, stderr
// and the exit code.
func runCLI(t *testing.T, sock string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), dockerCLI, append([]string{"-H", "unix://" + sock}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CLI_HINTS=false")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("docker %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// TestDockerCLI runs the real docker CLI 28.2 against the server and the
// fake port layer.
func TestDockerCLI(t *testing.T) {
	if _, err := os.Stat(dockerCLI); err != nil {
		t.Skipf("docker CLI not available at %s: %v", dockerCLI, err)
	}
	f, sock := startServer(t)
	f.Registry["127.0.0.1:5000/pulled:latest"] = portlayer.Image{ID: "sha256:" + strings.Repeat("9", 64), Layers: []string{"sha256:" + strings.Repeat("8", 64)},
		Config: dockerConfig([]string{"echo", "from", "pulled"})}

	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		wantOut  string // substring of stdout
		wantErr  string // substring of stderr
	}{
		{name: "version", args: []string{"version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"}, wantOut: "0.0.0-test 1.50"},
		{name: "info", args: []string{"info", "--format", "{{.OperatingSystem}}|{{.KernelVersion}}|{{.Driver}}|{{.DefaultRuntime}}"}, wantOut: "vch (container VMs)|6.1.0-test-cloud-amd64|vch-ext4|qemu-tcg"},
		{name: "run --rm echo", args: []string{"run", "--rm", "busybox", "echo", "hi"}, wantOut: "hi\n"},
		{name: "run exit code", args: []string{"run", "--name", "ex3", "busybox", "exit", "3"}, wantCode: 3},
		{name: "run stdin", args: []string{"run", "-i", "--rm", "busybox", "cat"}, stdin: "piped\n", wantOut: "piped\n"},
		{name: "run stderr", args: []string{"run", "--rm", "busybox", "printerr", "oops"}, wantErr: "oops\n"},
		{name: "run detached", args: []string{"run", "-d", "--name", "bg", "busybox", "sleep"}, wantOut: ""},
		{name: "run missing executable", args: []string{"run", "--rm", "busybox", "nosuchcmd"}, wantCode: 127, wantErr: `exec: "nosuchcmd": executable file not found in $PATH`},
		{name: "run pulls missing image", args: []string{"run", "--rm", "127.0.0.1:5000/pulled"}, wantOut: "from pulled\n", wantErr: "Unable to find image '127.0.0.1:5000/pulled:latest' locally"},
		{name: "run unknown image", args: []string{"run", "--rm", "127.0.0.1:5000/nosuch"}, wantCode: 125, wantErr: "manifest for 127.0.0.1:5000/nosuch:latest not found"},
		{name: "ps", args: []string{"ps"}, wantOut: "bg"},
		{name: "ps -a", args: []string{"ps", "-a", "--format", "{{.Names}} {{.Status}}"}, wantOut: "ex3 Exited (3) "},
		{name: "ps filter", args: []string{"ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}"}, wantOut: "ex3\n"},
		{name: "inspect", args: []string{"inspect", "--format", "{{.Name}} {{.State.ExitCode}} {{.Config.Image}} {{.Path}}", "ex3"}, wantOut: "/ex3 3 busybox exit"},
		{name: "logs", args: []string{"logs", "ex3"}},
		{name: "rm running", args: []string{"rm", "bg"}, wantCode: 1, wantErr: `cannot remove container "bg": container is running: stop the container before removing or force remove`},
		{name: "stop", args: []string{"stop", "bg"}, wantOut: "bg\n"},
		{name: "rm", args: []string{"rm", "bg", "ex3"}, wantOut: "bg\nex3\n"},
		{name: "rm missing", args: []string{"rm", "nosuch"}, wantCode: 1, wantErr: "Error response from daemon: No such container: nosuch"},
		{name: "inspect missing", args: []string{"inspect", "nosuch"}, wantCode: 1, wantErr: "No such object: nosuch"},
		{name: "images", args: []string{"images", "--format", "{{.Repository}}:{{.Tag}}"}, wantOut: "busybox:latest"},
		{name: "tag and rmi", args: []string{"tag", "busybox", "copy:v1"}},
		{name: "rmi", args: []string{"rmi", "copy:v1"}, wantOut: "Untagged: copy:v1"},
		{name: "load", args: []string{"load"}, stdin: "alpine:3.20\n", wantOut: "Loaded image: alpine:3.20"},
		{name: "import", args: []string{"import", "--change", `CMD ["sh"]`, "-", "imp:v1"}, stdin: "tar bytes", wantOut: "sha256:"},
		{name: "unimplemented", args: []string{"plugin", "ls"}, wantCode: 1, wantErr: "plugins is not implemented by vch yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, sock, tt.stdin, tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errs, tt.wantErr) {
				t.Errorf("docker %v: exit %d (want %d)\nstdout: %q (want %q)\nstderr: %q (want %q)", tt.args, code, tt.wantCode, out, tt.wantOut, errs, tt.wantErr)
			}
		})
	}
}
