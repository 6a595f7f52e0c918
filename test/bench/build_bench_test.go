//go:build e2e

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// buildBenchDockerfile has five steps after FROM: two RUN, one COPY and
// two configuration steps.
const buildBenchDockerfile = `FROM busybox
ENV APP=/app
COPY data.txt /app/
RUN wc -c /app/data.txt > /app/size
RUN echo built > /app/stamp
CMD ["cat", "/app/size"]
`

// BenchmarkBuild prints, in one run, the wall time of docker build
// (classic builder) of a 5-step Dockerfile cold (--no-cache), fully
// cached, and with the copied file changed (so COPY and the two RUN steps
// after it run again), with the ratios of the latter two to the cold
// build; and the cost of one RUN step (a 1-RUN Dockerfile against its
// FROM-only baseline, both --no-cache).
func BenchmarkBuild(b *testing.B) {
	d := daemon(b)
	dir := b.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("Dockerfile", buildBenchDockerfile)
	write("data.txt", "0\n")
	build := func(args ...string) time.Duration {
		b.Helper()
		start := time.Now()
		cmd := exec.Command("docker", append(append([]string{"build", "-q"}, args...), dir)...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host, "DOCKER_BUILDKIT=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("docker build %v: %s: %v", args, out, err)
		}
		return time.Since(start)
	}
	build() // the rootfs disk of busybox and the template
	for b.Loop() {
		var cold, cached, changed []time.Duration
		const n = 5
		for i := 0; i < n; i++ {
			cold = append(cold, build("--no-cache"))
			cached = append(cached, build())
			write("data.txt", strconv.Itoa(i+1)+"\n")
			changed = append(changed, build())
		}
		reportVersus(b, sample{"cached", "5-step build, fully cached", cached}, sample{"cold", "5-step build, --no-cache", cold})
		reportVersus(b, sample{"changed", "5-step build, one copied file changed", changed}, sample{"cold", "5-step build, --no-cache", cold})

		write("Dockerfile", "FROM busybox\nRUN true\n")
		var one []time.Duration
		for i := 0; i < n; i++ {
			one = append(one, build("--no-cache"))
		}
		write("Dockerfile", "FROM busybox\nLABEL x=y\n")
		var none []time.Duration
		for i := 0; i < n; i++ {
			none = append(none, build("--no-cache"))
		}
		write("Dockerfile", buildBenchDockerfile)
		om, _ := stats(one)
		nm, _ := stats(none)
		b.ReportMetric((om - nm).Seconds(), "run-step-s")
		fmt.Printf("%-46s %.2fs (median of %d, against a LABEL-only build %.2fs)\n", "one RUN step:", (om - nm).Seconds(), n, nm.Seconds())
	}
}
