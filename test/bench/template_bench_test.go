//go:build e2e

package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"
)

// coldDaemon is a daemon that boots every VM (--vm-templates=false): the
// baseline of the template figures, run in the same process.
func coldDaemon(b *testing.B) *testenv.Daemon { return daemon(b, "--vm-templates=false") }

// BenchmarkRunTemplateVsCold prints median and p95 of `docker run --rm
// busybox true` on three VCHs in one process: the default (a warm VM
// taken from the pool, --warm-vms 1), templates alone (each VM restored
// at its start, --warm-vms 0) and cold boots (--vm-templates=false),
// interleaved, with the ratios of the first to the other two; then the
// default's figure for runs back to back (the pool's one VM is refilled
// only while each runs, so most of these wait for it or restore).
func BenchmarkRunTemplateVsCold(b *testing.B) {
	const refillPause = 4 * time.Second
	warm, tmpl, cold := daemon(b), daemon(b, "--warm-vms", "0"), coldDaemon(b)
	// The first run on each builds the rootfs disk (and the template).
	for _, d := range []*testenv.Daemon{warm, tmpl, cold} {
		docker(b, d.Host, "run", "--rm", "busybox", "true")
	}
	timed := func(d *testenv.Daemon) time.Duration {
		start := time.Now()
		docker(b, d.Host, "run", "--rm", "busybox", "true")
		return time.Since(start)
	}
	for b.Loop() {
		var warmT, tmplT, coldT, b2bT []time.Duration
		for i := 0; i < runs; i++ {
			warmT = append(warmT, timed(warm))
			// The warm VCH restores the VM that replaces the one taken
			// once its container has started: let that end before the
			// next daemon's run, on a 2-core host it would slow it.
			time.Sleep(refillPause)
			tmplT = append(tmplT, timed(tmpl))
			coldT = append(coldT, timed(cold))
		}
		for i := 0; i < runs; i++ {
			b2bT = append(b2bT, timed(warm))
		}
		w := sample{"warm", "docker run --rm busybox true, warm VM", warmT}
		reportVersus(b, w, sample{"template", "docker run --rm busybox true, from a template", tmplT})
		reportVersus(b, w, sample{"cold", "docker run --rm busybox true, cold boot", coldT})
		reportVersus(b, sample{"back-to-back", "the same, warm pool, back to back", b2bT}, w)
	}
}

// idlePSS starts n idle busybox containers on d, waits settle, and
// returns the mean PSS and anonymous memory of their VMMs in MiB.
func idlePSS(b *testing.B, d *testenv.Daemon, n int, settle time.Duration) (pss, anon float64) {
	b.Helper()
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, strings.TrimSpace(docker(b, d.Host, "run", "-d", "busybox", "sleep", "3600")))
	}
	defer docker(b, d.Host, append([]string{"rm", "-f"}, ids...)...)
	time.Sleep(settle)
	for _, id := range ids {
		pid := strings.TrimSpace(docker(b, d.Host, "inspect", "--format", "{{.State.Pid}}", id))
		m := testenv.SmapsRollup(b, pid)
		pss += float64(m.Pss) / 1024
		anon += float64(m.Anonymous) / 1024
	}
	return pss / float64(n), anon / float64(n)
}

// BenchmarkIdlePSS prints the mean host PSS (and anonymous memory) of the
// VMMs of 10 idle busybox containers (256 MiB guests) restored from a
// template, and of 3 booted cold, in the same run.
func BenchmarkIdlePSS(b *testing.B) {
	warm, cold := daemon(b), coldDaemon(b)
	docker(b, warm.Host, "run", "--rm", "busybox", "true")
	docker(b, cold.Host, "run", "--rm", "busybox", "true")
	for b.Loop() {
		wp, wa := idlePSS(b, warm, runs, 3*time.Second)
		cp, ca := idlePSS(b, cold, 3, 3*time.Second)
		b.ReportMetric(wp, "template-pss-MiB")
		b.ReportMetric(cp, "cold-pss-MiB")
		b.ReportMetric(wp/cp, "template/cold")
		fmt.Printf("idle container VMM PSS, from a template: %.1f MiB (%.1f MiB anonymous; mean of %d)\n", wp, wa, runs)
		fmt.Printf("idle container VMM PSS, cold boot:       %.1f MiB (%.1f MiB anonymous; mean of 3)\n", cp, ca)
		fmt.Printf("ratio template/cold:                     %.2f\n", wp/cp)
	}
}

// idleCount is how many idle containers BenchmarkManyIdle runs at once
// (the 100); VCH_BENCH_IDLE overrides it.
func idleCount() int {
	if n, err := strconv.Atoi(os.Getenv("VCH_BENCH_IDLE")); err == nil && n > 0 {
		return n
	}
	return 100
}

// memAvailableMiB is MemAvailable from /proc/meminfo.
func memAvailableMiB(b *testing.B) float64 {
	b.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kib, _ := strconv.Atoi(f[1])
			return float64(kib) / 1024
		}
	}
	b.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}

// BenchmarkManyIdle runs 100 idle busybox containers at once on one VCH
// (templates on) and prints: the time to start them all (one after
// another, as `docker run -d`), the host memory they take (the drop in
// MemAvailable, and the sum of their VMMs' PSS), `docker ps` latency
// with all of them running (median of 5), and one `docker exec` in each
// (how many answered, median and p95).
func BenchmarkManyIdle(b *testing.B) {
	d := daemon(b)
	docker(b, d.Host, "run", "--rm", "busybox", "true")
	n := idleCount()
	for b.Loop() {
		before := memAvailableMiB(b)
		var ids []string
		start := time.Now()
		for i := 0; i < n; i++ {
			ids = append(ids, strings.TrimSpace(docker(b, d.Host, "run", "-d", "busybox", "sleep", "3600")))
		}
		startAll := time.Since(start)
		time.Sleep(5 * time.Second)
		used := before - memAvailableMiB(b)
		var pss float64
		for _, id := range ids {
			pid := strings.TrimSpace(docker(b, d.Host, "inspect", "--format", "{{.State.Pid}}", id))
			pss += float64(testenv.SmapsRollup(b, pid).Pss) / 1024
		}
		var psT []time.Duration
		for i := 0; i < 5; i++ {
			t0 := time.Now()
			out := docker(b, d.Host, "ps", "-q")
			psT = append(psT, time.Since(t0))
			if got := len(strings.Fields(out)); got != n {
				b.Errorf("docker ps lists %d containers, want %d", got, n)
			}
		}
		var execT []time.Duration
		answered := 0
		for _, id := range ids {
			t0 := time.Now()
			if strings.TrimSpace(docker(b, d.Host, "exec", id, "echo", "ok")) == "ok" {
				answered++
			}
			execT = append(execT, time.Since(t0))
		}
		docker(b, d.Host, append([]string{"rm", "-f"}, ids...)...)
		psM, _ := stats(psT)
		exM, exP := stats(execT)
		b.ReportMetric(startAll.Seconds(), "start-all-s")
		b.ReportMetric(used, "host-MiB")
		b.ReportMetric(pss, "pss-sum-MiB")
		b.ReportMetric(psM.Seconds()*1000, "ps-median-ms")
		b.ReportMetric(float64(answered), "exec-answered")
		fmt.Printf("%d idle containers: started in %.0f s (%.2f s each), host memory %.0f MiB (MemAvailable drop; VMM PSS sum %.0f MiB, %.1f MiB each)\n",
			n, startAll.Seconds(), startAll.Seconds()/float64(n), used, pss, pss/float64(n))
		fmt.Printf("docker ps with %d running: median %.0f ms (5 runs)\n", n, psM.Seconds()*1000)
		fmt.Printf("docker exec in each: %d of %d answered, median %.0f ms p95 %.0f ms\n", answered, n, exM.Seconds()*1000, exP.Seconds()*1000)
	}
}

// freedMiB runs an idle container with a 200 MiB /dev/shm on d, fills
// 150 MiB of it, removes the file and returns its VMM's PSS in MiB idle,
// filled, and 15 s after the removal (free page reporting's delay is 2 s).
func freedMiB(b *testing.B, d *testenv.Daemon) (idle, filled, freed float64) {
	b.Helper()
	id := strings.TrimSpace(docker(b, d.Host, "run", "-d", "--shm-size", "200m", "busybox", "sleep", "3600"))
	defer docker(b, d.Host, "rm", "-f", id)
	pid := strings.TrimSpace(docker(b, d.Host, "inspect", "--format", "{{.State.Pid}}", id))
	pss := func() float64 { return float64(testenv.SmapsRollup(b, pid).Pss) / 1024 }
	docker(b, d.Host, "exec", id, "true")
	time.Sleep(3 * time.Second)
	idle = pss()
	docker(b, d.Host, "exec", id, "sh", "-c", "head -c 150m /dev/zero > /dev/shm/fill")
	filled = pss()
	docker(b, d.Host, "exec", id, "rm", "/dev/shm/fill")
	time.Sleep(15 * time.Second)
	return idle, filled, pss()
}

// BenchmarkFreedMemory prints a container VMM's PSS idle, with 150 MiB
// of guest memory in use, and after the guest freed it, for a VM
// restored from a template and one booted cold, in the same run: what
// free page reporting gives back.
func BenchmarkFreedMemory(b *testing.B) {
	warm, cold := daemon(b), coldDaemon(b)
	docker(b, warm.Host, "run", "--rm", "busybox", "true")
	docker(b, cold.Host, "run", "--rm", "busybox", "true")
	for b.Loop() {
		wi, wf, wr := freedMiB(b, warm)
		ci, cf, cr := freedMiB(b, cold)
		b.ReportMetric((wf-wr)/(wf-wi), "template-returned-fraction")
		b.ReportMetric((cf-cr)/(cf-ci), "cold-returned-fraction")
		fmt.Printf("VMM PSS from a template: idle %.1f MiB, 150 MiB in use %.1f MiB, freed %.1f MiB (%.0f %% of the growth returned)\n", wi, wf, wr, 100*(wf-wr)/(wf-wi))
		fmt.Printf("VMM PSS cold boot:       idle %.1f MiB, 150 MiB in use %.1f MiB, freed %.1f MiB (%.0f %% of the growth returned)\n", ci, cf, cr, 100*(cf-cr)/(cf-ci))
	}
}

// ksmFile is one of the host's KSM controls (/sys/kernel/mm/ksm/NAME).
func ksmFile(name string) string { return filepath.Join("/sys/kernel/mm/ksm", name) }

// ksmFullScans is how many full scans KSM has made.
func ksmFullScans(b *testing.B) int {
	b.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(string(testenv.ReadFile(b, ksmFile("full_scans")))))
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkIdlePSSMerged prints the mean host PSS of the VMMs of 10 idle
// busybox containers restored from a template by a daemon with
// --memory-merge, before and after the host's KSM has merged them (two
// full scans), in the same run. KSM is host-wide: the benchmark turns
// it on for its run (pages_to_scan 2000, to finish in seconds) and puts
// both settings back after; without /sys/kernel/mm/ksm it is skipped.
func BenchmarkIdlePSSMerged(b *testing.B) {
	run, err := os.ReadFile(ksmFile("run"))
	if err != nil {
		b.Skipf("no KSM on this host: %v", err)
	}
	scan := testenv.ReadFile(b, ksmFile("pages_to_scan"))
	b.Cleanup(func() {
		_ = os.WriteFile(ksmFile("pages_to_scan"), scan, 0o644)
		_ = os.WriteFile(ksmFile("run"), run, 0o644)
	})
	d := daemon(b, "--memory-merge")
	docker(b, d.Host, "run", "--rm", "busybox", "true")
	for b.Loop() {
		var ids []string
		for i := 0; i < runs; i++ {
			ids = append(ids, strings.TrimSpace(docker(b, d.Host, "run", "-d", "busybox", "sleep", "3600")))
		}
		time.Sleep(3 * time.Second)
		mean := func() float64 {
			var pss float64
			for _, id := range ids {
				pid := strings.TrimSpace(docker(b, d.Host, "inspect", "--format", "{{.State.Pid}}", id))
				pss += float64(testenv.SmapsRollup(b, pid).Pss) / 1024
			}
			return pss / float64(len(ids))
		}
		before := mean()
		if err := os.WriteFile(ksmFile("pages_to_scan"), []byte("2000"), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(ksmFile("run"), []byte("1"), 0o644); err != nil {
			b.Fatal(err)
		}
		start, t0 := ksmFullScans(b), time.Now()
		for ksmFullScans(b) < start+2 && time.Since(t0) < 3*time.Minute {
			time.Sleep(time.Second)
		}
		merged := mean()
		docker(b, d.Host, append([]string{"rm", "-f"}, ids...)...)
		_ = os.WriteFile(ksmFile("run"), run, 0o644)
		b.ReportMetric(before, "unmerged-pss-MiB")
		b.ReportMetric(merged, "merged-pss-MiB")
		fmt.Printf("idle container VMM PSS with --memory-merge (mean of %d): %.1f MiB before KSM, %.1f MiB after two full scans (%.0f s), ratio %.2f\n",
			runs, before, merged, time.Since(t0).Seconds(), merged/before)
	}
}
