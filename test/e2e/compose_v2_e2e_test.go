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

// composeV2Project has three services on a user network: web, built from
// a Dockerfile with a healthcheck and published on loopback; cache, with
// a named volume and a healthcheck; worker, which reads the cache by
// service name. web and worker wait for cache to be healthy, worker for
// web too.
const composeV2Project = `services:
  web:
    build: ./web
    init: true
    ports: ["127.0.0.1::8080"]
    environment:
      GREETING: hello-from-env
    depends_on:
      cache:
        condition: service_healthy
    networks: [app]
  cache:
    image: busybox
    init: true
    command: sh -c 'echo cached-value > /data/v && exec httpd -f -p 6379 -h /data'
    volumes: [cachedata:/data]
    healthcheck:
      test: ["CMD", "test", "-e", "/data/v"]
      interval: 1s
      retries: 60
    networks: [app]
  worker:
    image: busybox
    init: true
    command: sh -c 'while true; do wget -qO- http://cache:6379/v; sleep 1; done'
    depends_on:
      cache:
        condition: service_healthy
      web:
        condition: service_healthy
    networks: [app]
networks:
  app: {}
volumes:
  cachedata: {}
`

const composeV2WebDockerfile = `FROM busybox
COPY index.html /www/index.html
HEALTHCHECK --interval=1s --retries=60 CMD wget -qO- http://127.0.0.1:8080/ || exit 1
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
`

// TestComposeV2: the Compose v2 CLI plugin that make builds
// (bin/cli-plugins/docker-compose, found through DOCKER_CONFIG) runs a
// project through up -d --build, ps, logs, exec, port, restart and down -v,
// with depends_on conditions on healthchecks.
func TestComposeV2(t *testing.T) {
	t.Parallel()
	need(t)
	plugin := filepath.Join(testenv.BinDir(), "cli-plugins", "docker-compose")
	if _, err := os.Stat(plugin); err != nil {
		t.Fatalf("Compose v2 plugin missing (make build makes it): %v", err)
	}
	cfg := t.TempDir()
	os.MkdirAll(filepath.Join(cfg, "cli-plugins"), 0o755)
	if err := os.Symlink(plugin, filepath.Join(cfg, "cli-plugins", "docker-compose")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "web"), 0o755)
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(composeV2Project), 0o644)
	os.WriteFile(filepath.Join(dir, "web", "Dockerfile"), []byte(composeV2WebDockerfile), 0o644)
	os.WriteFile(filepath.Join(dir, "web", "index.html"), []byte("hello-compose-v2\n"), 0o644)
	project := strings.ReplaceAll(uniqueName(t), "-", "")
	run := func(args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker", append([]string{"compose", "-p", project}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+env.host, "DOCKER_CONFIG="+cfg)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	t.Cleanup(func() { run("down", "-v", "-t", "1") })
	if v := must("version"); !strings.Contains(v, "v5.6.0") {
		t.Errorf("docker compose version: %q", v)
	}
	must("up", "-d", "--build")
	ps := must("ps")
	for _, want := range []string{project + "-web-1", project + "-cache-1", project + "-worker-1", "(healthy)"} {
		if !strings.Contains(ps, want) {
			t.Errorf("compose ps lacks %q:\n%s", want, ps)
		}
	}
	port := strings.TrimSpace(must("port", "web", "8080"))
	if body := getURL(t, "http://"+port+"/"); body != "hello-compose-v2\n" {
		t.Errorf("web through %s = %q", port, body)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(must("logs", "worker"), "cached-value") {
		if time.Now().After(deadline) {
			t.Fatalf("worker never read the cache:\n%s", must("logs"))
		}
		time.Sleep(time.Second)
	}
	if out := must("exec", "-T", "web", "sh", "-c", "echo $GREETING"); out != "hello-from-env\n" {
		t.Errorf("compose exec: %q", out)
	}
	must("restart", "-t", "1", "worker")
	if ps := must("ps", "worker"); !strings.Contains(ps, "Up ") {
		t.Errorf("worker after restart:\n%s", ps)
	}
	must("down", "-v", "-t", "1")
	if left := ok(t, "ps", "-aq", "--filter", "label=com.docker.compose.project="+project); left != "" {
		t.Errorf("containers left after down: %q", left)
	}
	if r := docker(t, "volume", "inspect", project+"_cachedata"); r.code == 0 {
		t.Errorf("volume left after down -v")
	}
	if r := docker(t, "network", "inspect", project+"_app"); r.code == 0 {
		t.Errorf("network left after down")
	}
}
