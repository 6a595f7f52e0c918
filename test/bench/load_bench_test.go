//go:build e2e

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// loadRuns is how many `docker run`s BenchmarkConcurrentRuns starts at
// once: VCH_LOAD_RUNS, default 32.
func loadRuns() int {
	if n, err := strconv.Atoi(os.Getenv("VCH_LOAD_RUNS")); err == nil && n > 0 {
		return n
	}
	return 32
}

// BenchmarkConcurrentRuns starts N `docker run --rm busybox echo rI` at
// once (VCH_LOAD_RUNS, default 32) and reports how many succeeded with
// their own output, the wall time, and `docker ps` latency while they
// run; the baseline, in the same process, is the same runs one after
// another, so the ratio says how close the concurrent wall time comes to
// the host's serial capacity (≤ 1: no worse than running them in turn).
// Extra daemon flags from VCH_LOAD_DAEMON_ARGS (e.g.
// "--max-concurrent-boots 1024" to see the host without admission).
func BenchmarkConcurrentRuns(b *testing.B) {
	d := daemon(b, strings.Fields(os.Getenv("VCH_LOAD_DAEMON_ARGS"))...)
	n := loadRuns()
	run := func(i int) error {
		cmd := exec.Command("docker", "run", "--rm", "busybox", "echo", "r"+strconv.Itoa(i))
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "r"+strconv.Itoa(i)+"\n" {
			return fmt.Errorf("run %d: %v: %s", i, err, out)
		}
		return nil
	}
	if err := run(0); err != nil { // the root disk and templates, once
		b.Fatal(err)
	}
	for b.Loop() {
		serialStart := time.Now()
		for i := range n {
			if err := run(i); err != nil {
				b.Fatal(err)
			}
		}
		serial := time.Since(serialStart)

		var wg sync.WaitGroup
		errs := make(chan error, n)
		stop := make(chan struct{})
		var psWorst time.Duration
		var psCount, psFailed int
		psDone := make(chan struct{})
		go func() {
			defer close(psDone)
			for {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				t0 := time.Now()
				cmd := exec.Command("docker", "ps", "-q")
				cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
				if err := cmd.Run(); err != nil {
					psFailed++
				}
				psWorst, psCount = max(psWorst, time.Since(t0)), psCount+1
			}
		}()
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- run(i)
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		close(stop)
		<-psDone
		close(errs)
		if psFailed > 0 {
			b.Errorf("docker ps failed %d of %d times during the load", psFailed, psCount)
		}
		failed := 0
		for err := range errs {
			if err != nil {
				failed++
				if failed <= 3 {
					b.Log(err)
				}
			}
		}
		b.ReportMetric(float64(n-failed), "succeeded")
		b.ReportMetric(float64(failed), "failed")
		b.ReportMetric(wall.Seconds(), "concurrent-s")
		b.ReportMetric(serial.Seconds(), "serial-s")
		b.ReportMetric(wall.Seconds()/serial.Seconds(), "concurrent/serial")
		b.ReportMetric(psWorst.Seconds()*1000, "ps-worst-ms")
		fmt.Printf("%d concurrent docker run --rm: %d succeeded, %d failed, %.1fs wall; the same %d one after another: %.1fs (ratio %.2f); docker ps worst %.0f ms over %d calls\n",
			n, n-failed, failed, wall.Seconds(), n, serial.Seconds(), wall.Seconds()/serial.Seconds(), psWorst.Seconds()*1000, psCount)
	}
}
