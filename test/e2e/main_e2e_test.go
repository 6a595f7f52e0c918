//go:build e2e

// Package e2e drives a real vch daemon booting real container VMs with the
// unmodified docker CLI and the moby Go client. One daemon is shared by the
// whole package (started in TestMain); tests that can run side by side call
// t.Parallel.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"

	"github.com/vchproject/vch/internal/busyboximage"
	"github.com/vchproject/vch/internal/testenv"
)

// env is the shared daemon.
var env struct {
	skip     string // why the suite cannot run
	host     string // DOCKER_HOST
	registry string // host:port of the in-process registry holding busybox
	bindRoot string // host directory the daemon allows bind mounts under
	plSock   string // the daemon's Port Layer API socket
	host2    string // DOCKER_HOST of the Docker personality in its own process, on plSock
	daemon   *testenv.Daemon
	outside  *testenv.Outside // what containers' egress reaches
}

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "vch-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if why := prerequisites(); why != "" {
			env.skip = why
			return m.Run()
		}
		outside, err := testenv.NewOutside(fmt.Sprintf("vche2e-%d", os.Getpid()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: outside namespaces:", err)
			return 1
		}
		defer outside.Close()
		env.outside = outside
		// Host bind mounts are allowed under one directory of the run.
		env.bindRoot = filepath.Join(dir, "binds")
		if err := os.Mkdir(env.bindRoot, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		env.plSock = filepath.Join(dir, "portlayer.sock")
		d, err := testenv.StartDaemon(dir, "--egress-netns", outside.Egress, "--allow-bind-mounts", env.bindRoot, "--portlayer-listen", "unix://"+env.plSock, "--memory-merge")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: start daemon:", err)
			return 1
		}
		env.daemon, env.host = d, d.Host
		defer d.Stop(60 * time.Second)
		stopRegistry, err := startRegistry()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: registry:", err)
			return 1
		}
		defer stopRegistry()
		if err := d.LoadBusybox(dir); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: load busybox:", err)
			dumpLog()
			return 1
		}
		stopPersonality, err := startPersonality(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: docker personality on the port layer:", err)
			return 1
		}
		defer stopPersonality()
		code := m.Run()
		if code != 0 {
			dumpLog()
		}
		return code
	}()
	os.Exit(code)
}

func prerequisites() string {
	if os.Geteuid() != 0 {
		return "must run as root"
	}
	for _, b := range []string{"qemu-system-x86_64", "qemu-img", "mkfs.ext4", "docker"} {
		if _, err := exec.LookPath(b); err != nil {
			return b + " not installed (make deps)"
		}
	}
	for _, f := range []string{"vch", "tether"} {
		if _, err := os.Stat(filepath.Join(testenv.BinDir(), f)); err != nil {
			return "bin/" + f + " not built (make build)"
		}
	}
	if m, _ := filepath.Glob(filepath.Join(testenv.KernelDir(), "boot", "vmlinuz-*")); len(m) == 0 {
		return "guest kernel not unpacked (make guest)"
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return "busybox-static not installed (make deps)"
	}
	return ""
}

// needCLI skips a test of a CLI option that came with docker CLI
// version major (the 20.10 client the Makefile falls back to has none of
// Engine API 1.45's and later options); what the test covers in the
// daemon is also reached through the API by unit tests.
func needCLI(t *testing.T, major int, option string) {
	t.Helper()
	need(t)
	if v := cliMajor(); v < major {
		t.Skipf("the docker CLI on PATH (major version %d) has no %s (CLI %d or newer)", v, option, major)
	}
}

// need skips (or, under VCH_REQUIRE_E2E=1, fails) when the suite cannot run.
func need(t *testing.T) {
	t.Helper()
	if env.skip == "" {
		return
	}
	if os.Getenv("VCH_REQUIRE_E2E") == "1" {
		t.Fatalf("prerequisite missing (VCH_REQUIRE_E2E=1): %s", env.skip)
	}
	t.Skip("prerequisite missing: " + env.skip)
}

func dumpLog() {
	if env.daemon != nil {
		fmt.Fprintf(os.Stderr, "--- daemon log (tail) ---\n%s\n", env.daemon.Log(20000))
	}
}

// startRegistry serves an in-process registry on 127.0.0.1 holding
// busybox:latest and busybox:1.
func startRegistry() (func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	env.registry = l.Addr().String()
	img, err := busyboximage.Build("/bin/busybox")
	if err != nil {
		return nil, err
	}
	for _, tag := range []string{"latest", "1"} {
		ref, err := name.ParseReference(env.registry + "/library/busybox:" + tag)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(ref, img); err != nil {
			return nil, err
		}
	}
	return func() { srv.Close() }, nil
}

// result is a finished docker CLI command.
type result struct {
	stdout, stderr string
	code           int
}

// docker runs the docker CLI against the shared daemon.
func docker(t *testing.T, args ...string) result {
	t.Helper()
	return dockerIn(t, nil, args...)
}

func dockerIn(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	return dockerWith(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, stdin, args...)
}

// dockerWith runs the docker CLI against the shared daemon with extra
// environment entries (a DOCKER_CONFIG of the caller's, DOCKER_BUILDKIT).
func dockerWith(t *testing.T, extraEnv []string, stdin []byte, args ...string) result {
	t.Helper()
	need(t)
	// Not t.Context(): cleanups run after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(append(os.Environ(), "DOCKER_HOST="+env.host), extraEnv...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("docker %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

// ok runs docker and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := docker(t, args...)
	if r.code != 0 {
		t.Fatalf("docker %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// apiClient returns a moby Go client for the shared daemon.
func apiClient(t *testing.T) *client.Client {
	t.Helper()
	need(t)
	c, err := client.New(client.WithHost(env.host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cliMajor is the major version of the docker CLI the tests run (the
// first "docker" on PATH): 20 for Debian's 20.10 client, which the
// Makefile puts last on PATH, so it serves where no other is installed.
// Some messages and flags are the CLI's own, not the daemon's.
var cliMajor = sync.OnceValue(func() int {
	out, err := exec.Command("docker", "--version").Output()
	if err != nil {
		return 0
	}
	// "Docker version 28.2.2, build e6534b4"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return 0
	}
	n, _ := strconv.Atoi(strings.SplitN(f[2], ".", 2)[0])
	return n
})

// uniqueName returns a container name unique to this test.
func uniqueName(t *testing.T) string {
	return strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
}

func readFileErr(path string) ([]byte, error) { return os.ReadFile(path) }

type execCmd = exec.Cmd

var newExec = exec.CommandContext
