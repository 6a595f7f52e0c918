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

// tenStepDockerfile has ten steps after FROM, five of them RUN.
const tenStepDockerfile = `FROM busybox
ENV N=0
RUN echo 1 > /one
WORKDIR /app
RUN echo 2 > two
COPY data.txt .
RUN cat data.txt > three
USER nobody
RUN id -u > /tmp/four
ENV DONE=1
RUN ls /app > /tmp/five
`

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
// build; the cost of one RUN step (a 1-RUN Dockerfile against its
// LABEL-only baseline, both --no-cache); and a 10-step build with five RUN
// steps against five times that cost (its RUN steps share one VM).
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
		write("Dockerfile", tenStepDockerfile)
		var ten []time.Duration
		for i := 0; i < n; i++ {
			ten = append(ten, build("--no-cache"))
		}
		write("Dockerfile", buildBenchDockerfile)
		om, _ := stats(one)
		nm, _ := stats(none)
		tm, tp := stats(ten)
		runStep := om - nm
		b.ReportMetric(runStep.Seconds(), "run-step-s")
		b.ReportMetric(tm.Seconds(), "ten-step-median-s")
		b.ReportMetric(float64(tm)/float64(5*runStep), "ten-step/5-runs")
		fmt.Printf("%-46s %.2fs (median of %d, against a LABEL-only build %.2fs)\n", "one RUN step:", runStep.Seconds(), n, nm.Seconds())
		fmt.Printf("%-46s median %.2fs p95 %.2fs (%d runs)\n", "10-step build (5 RUN) --no-cache:", tm.Seconds(), tp.Seconds(), n)
		fmt.Printf("%-46s %.2f\n", "ratio 10-step / (5 × one RUN step):", float64(tm)/float64(5*runStep))
	}
}
