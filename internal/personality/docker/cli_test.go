package docker_test

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
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
	cmd.Stdin = bytes.NewBufferString(stdin)
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("docker %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func TestCLISmoke(t *testing.T) {
	if _, err := os.Stat(dockerCLI); err != nil {
		t.Skipf("docker CLI not available at %s: %v", dockerCLI, err)
	}
	_, sock := startServer(t)
	for _, args := range [][]string{
		{"version"},
		{"info"},
		{"run", "--rm", "busybox", "echo", "hi"},
		{"run", "--name", "ab", "busybox", "exit", "3"},
		{"ps", "-a"},
		{"inspect", "ab"}, {"inspect", "nosuch"},
		{"rm", "nosuch"},
		{"run", "busybox", "nosuchcmd"},
		{"images"},
		{"logs", "ab"}, {"rm", "ab"}, {"ps", "-a"},
	} {
		out, errs, code := runCLI(t, sock, "", args...)
		t.Logf("docker %v => %d\nstdout: %s\nstderr: %s", args, code, out, errs)
	}
}
