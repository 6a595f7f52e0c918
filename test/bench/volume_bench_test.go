//go:build e2e

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// volumeBenchMiB is how much each dd writes and reads back.
const volumeBenchMiB = 256

// BenchmarkVolumeThroughput: sequential write (dd bs=1M, conv=fsync) and
// read (after dropping the guest's page cache) of 256 MiB inside one
// container VM, on a volume and on the container's root disk, and in a
// second VM on a host bind mount (virtio-9p), against the same dd on the
// host (a file in the VCH's root: write with fsync, read with O_DIRECT, so
// neither side reads from its own page cache; the guest's reads may still
// hit the host's). Guest times come from the guest's /proc/uptime (10 ms
// ticks).
func BenchmarkVolumeThroughput(b *testing.B) {
	d := daemon(b)
	bindDir := filepath.Join(filepath.Dir(d.Root), "binds", "bench")
	for i := 0; i < b.N; i++ {
		script := fmt.Sprintf(`u() { cut -d" " -f1 /proc/uptime; }
a=$(u); dd if=/dev/zero of=/v/f bs=1M count=%[1]d conv=fsync 2>/dev/null; b=$(u)
echo 3 > /proc/sys/vm/drop_caches; c=$(u); dd if=/v/f of=/dev/null bs=1M 2>/dev/null; d=$(u)
dd if=/dev/zero of=/f bs=1M count=%[1]d conv=fsync 2>/dev/null; e=$(u)
echo 3 > /proc/sys/vm/drop_caches; f=$(u); dd if=/f of=/dev/null bs=1M 2>/dev/null; g=$(u)
echo $a $b $c $d $e $f $g`, volumeBenchMiB)
		out := docker(b, d.Host, "run", "--rm", "-v", "bench:/v", "busybox", "sh", "-c", script)
		var t [7]float64
		fields := strings.Fields(out)
		if len(fields) != 7 {
			b.Fatalf("guest printed %q", out)
		}
		for i, f := range fields {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil {
				b.Fatalf("guest printed %q: %v", out, err)
			}
			t[i] = v
		}
		rate := func(secs float64) float64 { return volumeBenchMiB / secs }
		volW, volR := rate(t[1]-t[0]), rate(t[3]-t[2])
		rootW, rootR := rate(t[4]-t[3]), rate(t[6]-t[5])

		bind := strings.Fields(docker(b, d.Host, "run", "--rm", "-v", bindDir+":/v", "busybox", "sh", "-c", fmt.Sprintf(`u() { cut -d" " -f1 /proc/uptime; }
a=$(u); dd if=/dev/zero of=/v/f bs=1M count=%[1]d conv=fsync 2>/dev/null; b=$(u)
echo 3 > /proc/sys/vm/drop_caches; c=$(u); dd if=/v/f of=/dev/null bs=1M 2>/dev/null; d=$(u); rm /v/f
echo $a $b $c $d`, volumeBenchMiB)))
		if len(bind) != 4 {
			b.Fatalf("guest printed %q", bind)
		}
		var bt [4]float64
		for i, f := range bind {
			bt[i], _ = strconv.ParseFloat(f, 64)
		}
		bindW, bindR := rate(bt[1]-bt[0]), rate(bt[3]-bt[2])

		file := filepath.Join(d.Root, "bench-host-dd")
		hostW := hostDD(b, "if=/dev/zero", "of="+file, "bs=1M", fmt.Sprintf("count=%d", volumeBenchMiB), "conv=fsync")
		hostR := hostDD(b, "if="+file, "of=/dev/null", "bs=1M", "iflag=direct")
		_ = os.Remove(file)
		docker(b, d.Host, "volume", "rm", "bench")

		b.ReportMetric(volW, "volume-write-MiB/s")
		b.ReportMetric(volR, "volume-read-MiB/s")
		b.ReportMetric(rootW, "rootdisk-write-MiB/s")
		b.ReportMetric(rootR, "rootdisk-read-MiB/s")
		b.ReportMetric(bindW, "bind-write-MiB/s")
		b.ReportMetric(bindR, "bind-read-MiB/s")
		b.ReportMetric(hostW, "host-write-MiB/s")
		b.ReportMetric(hostR, "host-read-MiB/s")
		fmt.Printf("volume in the guest: write %.0f MiB/s, read %.0f MiB/s (root disk: write %.0f, read %.0f)\n", volW, volR, rootW, rootR)
		fmt.Printf("bind mount (9p):     write %.0f MiB/s, read %.0f MiB/s\n", bindW, bindR)
		fmt.Printf("host dd:             write %.0f MiB/s, read %.0f MiB/s (volume/host: write %.2f, read %.2f)\n", hostW, hostR, volW/hostW, volR/hostR)
	}
}

// BenchmarkBindMountRun: `docker run --rm busybox true` with and without
// a host bind mount. A bind mount boots Debian's generic kernel (it has
// virtio-9p; the cloud kernel does not), so this is the price of that
// kernel plus the 9p modules and mount.
func BenchmarkBindMountRun(b *testing.B) {
	d := daemon(b)
	bindDir := filepath.Join(filepath.Dir(d.Root), "binds", "run")
	for i := 0; i < b.N; i++ {
		var plain, bind []time.Duration
		for j := 0; j < runs; j++ {
			start := time.Now()
			docker(b, d.Host, "run", "--rm", "busybox", "true")
			plain = append(plain, time.Since(start))
			start = time.Now()
			docker(b, d.Host, "run", "--rm", "-v", bindDir+":/h", "busybox", "true")
			bind = append(bind, time.Since(start))
		}
		pm, pp := stats(plain)
		bm, bp := stats(bind)
		b.ReportMetric(pm.Seconds(), "plain-median-s")
		b.ReportMetric(bm.Seconds(), "bind-median-s")
		b.ReportMetric(bp.Seconds(), "bind-p95-s")
		fmt.Printf("docker run --rm busybox true: median %.2fs p95 %.2fs; with -v HOSTDIR:/h (generic kernel, 9p): median %.2fs p95 %.2fs (%d runs each)\n",
			pm.Seconds(), pp.Seconds(), bm.Seconds(), bp.Seconds(), runs)
	}
}

// hostDD runs dd on the host and returns its rate in MiB/s.
func hostDD(b *testing.B, args ...string) float64 {
	b.Helper()
	start := time.Now()
	if out, err := exec.Command("dd", args...).CombinedOutput(); err != nil {
		b.Fatalf("dd %v: %s: %v", args, out, err)
	}
	return volumeBenchMiB / time.Since(start).Seconds()
}
