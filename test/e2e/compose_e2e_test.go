//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"
)

// composeFile is a two-service project: web serves a page, client fetches
// it by service name over the project's network and keeps running.
const composeFile = `version: "3.8"
services:
  web:
    image: busybox
    command: sh -c 'mkdir -p /www && echo hello-compose > /www/index.html && exec httpd -f -p 8080 -h /www'
    ports:
      - "127.0.0.1::8080"
    labels:
      tier: front
  client:
    image: busybox
    command: sh -c 'until wget -qO- http://web:8080/; do sleep 0.5; done; exec sleep 3600'
    depends_on: [web]
`

// compose runs docker-compose in dir against the shared daemon.
func compose(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-compose", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+env.host)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCompose: Docker Compose (v1, Debian's) brings a project up: its own
// network, service-name DNS, a published port reached from the host, ps
// and logs; down removes containers and the network.
func TestCompose(t *testing.T) {
	t.Parallel()
	need(t)
	testenv.RequireBinary(t, "docker-compose")
	dir := filepath.Join(t.TempDir(), strings.ReplaceAll(uniqueName(t), "-", ""))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(composeFile), 0o644); err != nil {
		t.Fatal(err)
	}
	project := filepath.Base(dir)
	t.Cleanup(func() {
		cmd := exec.Command("docker-compose", "down", "-t", "1")
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "DOCKER_HOST="+env.host)
		_ = cmd.Run()
	})
	compose(t, dir, "up", "-d")
	ps := compose(t, dir, "ps")
	if strings.Count(ps, project+"_web_1") != 1 || strings.Count(ps, project+"_client_1") != 1 {
		t.Errorf("docker-compose ps:\n%s", ps)
	}
	port := strings.TrimSpace(compose(t, dir, "port", "web", "8080"))
	if body := getURL(t, "http://"+port+"/"); strings.TrimSpace(body) != "hello-compose" {
		t.Errorf("web through %s = %q", port, body)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(compose(t, dir, "logs", "client"), "hello-compose") {
		if time.Now().After(deadline) {
			t.Fatalf("client never reached web by name:\n%s", compose(t, dir, "logs"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if out := ok(t, "ps", "--filter", "label=tier=front", "--filter", "label=com.docker.compose.project="+project, "--format", "{{.Names}}"); strings.TrimSpace(out) != project+"_web_1" {
		t.Errorf("ps by two labels = %q", out)
	}
	compose(t, dir, "down", "-t", "1")
	if out := ok(t, "ps", "-a", "--filter", "label=com.docker.compose.project="+project, "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("containers left after down: %q", out)
	}
	if r := docker(t, "network", "inspect", project+"_default"); r.code == 0 {
		t.Errorf("network %s_default left after down", project)
	}
}
