//go:build e2e

// Package bench measures vch as users feel it: the wall time of `docker run
// --rm busybox true` through the real CLI and daemon, against a bare boot of
// the same kernel and initramfs to power-off in the same process, and the
// host memory of an idle container VM. Figures are printed and reported
// as benchmark metrics; nothing here asserts a time.
//
//	make bench
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/qemu"
	"github.com/vchproject/vch/internal/initramfs"
	"github.com/vchproject/vch/internal/testenv"
)

// runs is how many samples each figure takes (the issue asks for ≥ 10).
const runs = 10

// daemon starts a daemon for one benchmark (bind mounts allowed under
// its binds/ directory; extraArgs after) with busybox loaded.
func daemon(b *testing.B, extraArgs ...string) *testenv.Daemon {
	b.Helper()
	testenv.RequireVMs(b)
	testenv.RequireBinary(b, "docker")
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "binds"), 0o755); err != nil {
		b.Fatal(err)
	}
	d, err := testenv.StartDaemon(dir, append([]string{"--allow-bind-mounts", filepath.Join(dir, "binds")}, extraArgs...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Stop(60 * time.Second) })
	if err := d.LoadBusybox(dir); err != nil {
		b.Fatal(err)
	}
	return d
}

func docker(b *testing.B, host string, args ...string) string {
	b.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("docker %v: %s: %v", args, out, err)
	}
	return string(out)
}

// stats returns the median and the 95th percentile (nearest rank).
func stats(d []time.Duration) (median, p95 time.Duration) {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	median = s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	rank := (95*len(s) + 99) / 100
	return median, s[rank-1]
}

// bareBoot boots the daemon's kernel and initramfs with a small root disk,
// waits for tether to answer on the guest channel and powers the VM off:
// the floor under every `docker run`.
type bareBoot struct {
	driver *qemu.Driver
	spec   hypervisor.Spec
	disk   string
	dir    string
}

func newBareBoot(b *testing.B, d *testenv.Daemon) *bareBoot {
	b.Helper()
	dir := b.TempDir()
	kt := initramfs.KernelTree{Dir: testenv.KernelDir()}
	kernel, err := kt.Kernel()
	if err != nil {
		b.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.MkdirAll(empty, 0o755)
	disk := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", empty, disk, "64M").CombinedOutput(); err != nil {
		b.Fatalf("mkfs: %s", out)
	}
	drv, err := qemu.New(qemu.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	return &bareBoot{driver: drv, disk: disk, dir: dir, spec: hypervisor.Spec{
		Name: "bench", Kernel: kernel, Initrd: filepath.Join(d.Root, "guest", "initrd.img"),
		MemoryMiB: 256, CPUs: 1, ChannelName: wire.PortName,
	}}
}

func (bb *bareBoot) once(b *testing.B, i int) time.Duration {
	b.Helper()
	start := time.Now()
	run := filepath.Join(bb.dir, "run"+strconv.Itoa(i))
	os.MkdirAll(run, 0o700)
	overlay, err := bb.driver.CreateOverlay(context.Background(), hypervisor.Disk{Path: bb.disk, Format: "raw"}, filepath.Join(run, "rw.qcow2"), 0)
	if err != nil {
		b.Fatal(err)
	}
	spec := bb.spec
	spec.Disks, spec.RuntimeDir = []hypervisor.Disk{overlay}, run
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := bb.driver.Start(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	g, err := agent.Dial(ctx, vm.Channel())
	if err != nil {
		vm.Kill()
		b.Fatal(err)
	}
	if err := g.PowerOff(ctx); err != nil {
		b.Fatal(err)
	}
	<-vm.Done()
	return time.Since(start)
}

// BenchmarkRunVsBareBoot prints median and p95 of `docker run --rm busybox
// true` and of a bare boot-to-power-off, interleaved in one process, and
// their ratio.
func BenchmarkRunVsBareBoot(b *testing.B) {
	d := daemon(b)
	bare := newBareBoot(b, d)
	docker(b, d.Host, "run", "--rm", "busybox", "true") // build the rootfs disk once
	for b.Loop() {
		var runT, bareT []time.Duration
		for i := 0; i < runs; i++ {
			start := time.Now()
			docker(b, d.Host, "run", "--rm", "busybox", "true")
			runT = append(runT, time.Since(start))
			bareT = append(bareT, bare.once(b, i))
		}
		reportVersus(b, sample{"run", "docker run --rm busybox true", runT}, sample{"bare", "bare boot to power-off", bareT})
	}
}

// sample is one series of timings of a benchmark: its metric prefix,
// what it measured, and the timings.
type sample struct {
	metric, what string
	times        []time.Duration
}

// reportVersus reports and prints the median and p95 of a and of its
// baseline base (taken in the same run), and the ratio of the medians.
func reportVersus(b *testing.B, a, base sample) {
	am, ap := stats(a.times)
	bm, bp := stats(base.times)
	b.ReportMetric(am.Seconds(), a.metric+"-median-s")
	b.ReportMetric(ap.Seconds(), a.metric+"-p95-s")
	b.ReportMetric(bm.Seconds(), base.metric+"-median-s")
	b.ReportMetric(bp.Seconds(), base.metric+"-p95-s")
	b.ReportMetric(float64(am)/float64(bm), a.metric+"/"+base.metric)
	for _, s := range []struct {
		what     string
		med, p95 time.Duration
	}{{a.what, am, ap}, {base.what, bm, bp}} {
		fmt.Printf("%-46s median %.2fs p95 %.2fs (%d runs)\n", s.what+":", s.med.Seconds(), s.p95.Seconds(), len(a.times))
	}
	fmt.Printf("%-46s %.2f\n", "ratio "+a.metric+"/"+base.metric+" (median):", float64(am)/float64(bm))
}

// BenchmarkIdleRSS prints the host RSS of the QEMU process of an idle
// container VM (default 256 MiB guest), 3 s after its start.
func BenchmarkIdleRSS(b *testing.B) {
	d := daemon(b)
	for b.Loop() {
		id := strings.TrimSpace(docker(b, d.Host, "run", "-d", "busybox", "sleep", "600"))
		time.Sleep(3 * time.Second)
		pid := strings.TrimSpace(docker(b, d.Host, "inspect", "--format", "{{.State.Pid}}", id))
		status, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			b.Fatal(err)
		}
		var kib int
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kib, _ = strconv.Atoi(f[1])
			}
		}
		docker(b, d.Host, "rm", "-f", id)
		b.ReportMetric(float64(kib)/1024, "rss-MiB")
		fmt.Printf("idle container VM host RSS: %.0f MiB\n", float64(kib)/1024)
	}
}

// BenchmarkExecLatency prints median and p95 of `docker exec c true`
// against one running container VM.
func BenchmarkExecLatency(b *testing.B) {
	d := daemon(b)
	id := strings.TrimSpace(docker(b, d.Host, "run", "-d", "busybox", "sleep", "3600"))
	b.Cleanup(func() { docker(b, d.Host, "rm", "-f", id) })
	docker(b, d.Host, "exec", id, "true") // warm up
	for b.Loop() {
		var ts []time.Duration
		for i := 0; i < 2*runs; i++ {
			start := time.Now()
			docker(b, d.Host, "exec", id, "true")
			ts = append(ts, time.Since(start))
		}
		m, p := stats(ts)
		b.ReportMetric(m.Seconds()*1000, "exec-median-ms")
		b.ReportMetric(p.Seconds()*1000, "exec-p95-ms")
		fmt.Printf("docker exec c true: median %.0f ms p95 %.0f ms (%d runs)\n", m.Seconds()*1000, p.Seconds()*1000, len(ts))
	}
}

// BenchmarkStdoutThroughput prints the rate of 200 MiB written to stdout by
// `dd` in a container and read by the client through `docker run`, against
// `cat` of the same number of bytes on the host, in the same run. The
// container's boot is excluded: the clock starts at its first byte. It
// also prints the same `dd` through `docker run --log-driver none` (no
// log kept) and through `docker exec` into a running container: the same
// channel without the json-file log (which writes each zero byte as
// \u0000, six bytes).
func BenchmarkStdoutThroughput(b *testing.B) {
	d := daemon(b)
	const size = 200 << 20
	measure := func(name string, args ...string) float64 {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		var n int64
		var start time.Time
		for {
			k, err := out.Read(buf)
			if k > 0 && n == 0 {
				start = time.Now()
			}
			n += int64(k)
			if err != nil {
				break
			}
		}
		el := time.Since(start)
		if err := cmd.Wait(); err != nil || n != size {
			b.Fatalf("%s: %d bytes, %v", name, n, err)
		}
		return float64(n) / (1 << 20) / el.Seconds()
	}
	src := filepath.Join(b.TempDir(), "zero")
	if err := os.WriteFile(src, make([]byte, size), 0o644); err != nil {
		b.Fatal(err)
	}
	id := strings.TrimSpace(docker(b, d.Host, "run", "-d", "busybox", "sleep", "3600"))
	b.Cleanup(func() { docker(b, d.Host, "rm", "-f", id) })
	for b.Loop() {
		vm := measure("docker", "run", "--rm", "busybox", "dd", "if=/dev/zero", "bs=1M", "count=200")
		nolog := measure("docker", "run", "--rm", "--log-driver", "none", "busybox", "dd", "if=/dev/zero", "bs=1M", "count=200")
		ex := measure("docker", "exec", id, "dd", "if=/dev/zero", "bs=1M", "count=200")
		host := measure("cat", src)
		b.ReportMetric(vm, "container-MB/s")
		b.ReportMetric(nolog, "no-log-MB/s")
		b.ReportMetric(ex, "exec-MB/s")
		b.ReportMetric(host, "host-cat-MB/s")
		b.ReportMetric(vm/host, "ratio")
		fmt.Printf("stdout throughput: container %.1f MiB/s (--log-driver none %.1f, docker exec %.1f), host cat %.0f MiB/s, ratio %.4f\n", vm, nolog, ex, host, vm/host)
	}
}
