//go:build e2e

package bench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bigBytes is the size of the file each throughput figure transfers.
const bigBytes = 32 << 20

// httpdScript makes /www/index.html (small) and /www/big (bigBytes) and
// serves them with busybox httpd on port 8080.
var httpdScript = fmt.Sprintf("mkdir -p /www && echo ok > /www/index.html && dd if=/dev/zero of=/www/big bs=1M count=%d 2>/dev/null && exec httpd -f -p 8080 -h /www", bigBytes>>20)

// hostServer serves the same two files from the host's loopback: the
// baseline every network figure is compared with.
func hostServer(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("ok\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, bigBytes), 0o644); err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// fetch GETs url on a new connection and returns the bytes read and the
// time taken (connect included).
func fetch(b *testing.B, url string) (int64, time.Duration) {
	b.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 60 * time.Second}
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return n, time.Since(start)
}

// waitHTTP polls url until it answers (the VM boots meanwhile).
func waitHTTP(b *testing.B, url string) {
	b.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s never answered: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

// BenchmarkNetwork measures, in one run: TCP throughput host→container
// through a published port and container→container on a user network,
// and HTTP connection setup latency (connect + small GET) through a
// published port, each against the same transfer over the host's loopback.
func BenchmarkNetwork(b *testing.B) {
	d := daemon(b)
	host := hostServer(b)
	net1 := "benchnet"
	docker(b, d.Host, "network", "create", net1)
	docker(b, d.Host, "run", "-d", "--name", "srv", "--network", net1, "-p", "127.0.0.1::8080", "busybox", "sh", "-c", httpdScript)
	docker(b, d.Host, "run", "-d", "--name", "cli", "--network", net1, "busybox", "sleep", "3600")
	published := strings.TrimSpace(docker(b, d.Host, "port", "srv", "8080"))
	waitHTTP(b, "http://"+published+"/index.html")

	// Host → container through the published port, vs host loopback.
	var viaPort, viaLoop []time.Duration
	for i := 0; i < 5; i++ {
		_, t1 := fetch(b, "http://"+published+"/big")
		_, t2 := fetch(b, "http://"+host+"/big")
		viaPort, viaLoop = append(viaPort, t1), append(viaLoop, t2)
	}
	pm, _ := stats(viaPort)
	lm, _ := stats(viaLoop)

	// Container → container (busybox wget in one VM from httpd in the
	// other), timed by docker exec's wall time less an empty exec's; the
	// baseline is the same busybox wget on the host from the host server.
	var c2c, empty, hostWget []time.Duration
	for i := 0; i < 5; i++ {
		s := time.Now()
		docker(b, d.Host, "exec", "cli", "true")
		empty = append(empty, time.Since(s))
		s = time.Now()
		docker(b, d.Host, "exec", "cli", "wget", "-qO", "/dev/null", "http://srv:8080/big")
		c2c = append(c2c, time.Since(s))
		s = time.Now()
		if out, err := exec.Command("busybox", "wget", "-qO", "/dev/null", "http://"+host+"/big").CombinedOutput(); err != nil {
			b.Fatalf("host wget: %s %v", out, err)
		}
		hostWget = append(hostWget, time.Since(s))
	}
	cm, _ := stats(c2c)
	em, _ := stats(empty)
	hm, _ := stats(hostWget)
	c2cNet := cm - em

	// Connection setup: new connection + small GET, 30 times each.
	var setupPort, setupLoop []time.Duration
	for i := 0; i < 30; i++ {
		_, t1 := fetch(b, "http://"+published+"/index.html")
		_, t2 := fetch(b, "http://"+host+"/index.html")
		setupPort, setupLoop = append(setupPort, t1), append(setupLoop, t2)
	}
	sp, sp95 := stats(setupPort)
	sl, sl95 := stats(setupLoop)

	b.ReportMetric(mibps(bigBytes, pm), "port-MiB/s")
	b.ReportMetric(mibps(bigBytes, lm), "loopback-MiB/s")
	b.ReportMetric(mibps(bigBytes, c2cNet), "c2c-MiB/s")
	b.ReportMetric(mibps(bigBytes, hm), "host-wget-MiB/s")
	b.ReportMetric(float64(sp.Microseconds())/1000, "setup-port-ms")
	b.ReportMetric(float64(sl.Microseconds())/1000, "setup-loopback-ms")
	fmt.Printf("host→container via published port: %.1f MiB/s vs host loopback %.1f MiB/s (ratio %.3f)\n",
		mibps(bigBytes, pm), mibps(bigBytes, lm), lm.Seconds()/pm.Seconds())
	fmt.Printf("container→container (busybox wget): %.1f MiB/s vs the same wget on host loopback %.1f MiB/s (ratio %.3f)\n",
		mibps(bigBytes, c2cNet), mibps(bigBytes, hm), hm.Seconds()/c2cNet.Seconds())
	fmt.Printf("connection setup + small GET: published port median %v p95 %v; host loopback median %v p95 %v (ratio %.1f)\n",
		sp, sp95, sl, sl95, sp.Seconds()/sl.Seconds())
}
