//go:build e2e

package bench

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vchproject/vch/internal/busyboximage"
)

// Image shapes. Random bytes are incompressible, so the gzip'd layers the
// registry serves are as large as their content.
const (
	// pullLayers × pullFiles files of pullFileBytes: the multi-layer image
	// of BenchmarkPullUnpack, 100 MiB of content over the busybox layer.
	pullLayers    = 4
	pullFiles     = 25
	pullFileBytes = 1 << 20
	// largeFiles × largeFileBytes: the big layer of BenchmarkCreateTime's
	// large image (512 MiB over busybox).
	largeFiles     = 8
	largeFileBytes = 64 << 20
	// createRuns is how many creates each image gets (median reported).
	createRuns = 5
)

// startRegistry serves go-containerregistry's in-memory registry on
// 127.0.0.1 (plain HTTP, as the daemon allows for loopback) for the
// benchmark's life and returns its host:port.
func startRegistry(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// randomLayer writes a gzip'd layer tar of files random files of size
// bytes each, under dir/<prefix>/, to path, and returns it as a layer.
func randomLayer(b *testing.B, path, prefix string, files, size int, seed uint64) v1.Layer {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	gz, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	var s [32]byte
	s[0] = byte(seed)
	rnd := rand.NewChaCha8(s)
	mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := tw.WriteHeader(&tar.Header{Name: prefix + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mod}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < files; i++ {
		hdr := &tar.Header{Name: fmt.Sprintf("%s/f%03d", prefix, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), ModTime: mod}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(tw, rnd, int64(size)); err != nil {
			b.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	l, err := tarball.LayerFromFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// pushImage builds busybox plus the given layers, pushes it to
// registry/repo:latest and returns the reference and every layer's
// compressed tar written under dir (base first), for `tar -x`.
func pushImage(b *testing.B, reg, repo, dir string, extra ...v1.Layer) (string, []string) {
	b.Helper()
	img, err := busyboximage.Build(busyboximage.DefaultBusybox)
	if err != nil {
		b.Skipf("busybox image: %v", err)
	}
	if img, err = mutate.AppendLayers(img, extra...); err != nil {
		b.Fatal(err)
	}
	ref := reg + "/" + repo + ":latest"
	r, err := name.ParseReference(ref)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		b.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	var tars []string
	for i, l := range layers {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d.tar.gz", strings.ReplaceAll(repo, "/", "-"), i))
		if _, err := os.Stat(p); err != nil { // the busybox layer: write it out
			rc, err := l.Compressed()
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			_, err = io.Copy(f, rc)
			rc.Close()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		tars = append(tars, p)
	}
	return ref, tars
}

// timed runs docker with args and returns its wall time.
func timed(b *testing.B, host string, args ...string) (time.Duration, string) {
	b.Helper()
	start := time.Now()
	out := docker(b, host, args...)
	return time.Since(start), out
}

// dirBytes is the disk use of dir in bytes (du).
func dirBytes(b *testing.B, dir string) int64 {
	b.Helper()
	out, err := exec.Command("du", "-s", "-B1", dir).Output()
	if err != nil {
		b.Fatalf("du %s: %v", dir, err)
	}
	var n int64
	fmt.Sscan(string(out), &n)
	return n
}

// BenchmarkPullUnpack: `docker pull` of a five-layer image (busybox plus
// four layers of 25 random 1 MiB files, 100 MiB, gzip'd) from an
// in-process registry on 127.0.0.1, then the first `docker create`, which
// flattens the layers and builds the image's ext4 rootfs disk; against
// `tar -xzf` of the same five layer blobs into a directory on the host,
// in the same run. The pull itself only downloads and verifies (digest
// and diff ID); unpacking happens at the first create.
func BenchmarkPullUnpack(b *testing.B) {
	d := daemon(b)
	reg := startRegistry(b)
	dir := b.TempDir()
	var extra []v1.Layer
	for i := 0; i < pullLayers; i++ {
		extra = append(extra, randomLayer(b, filepath.Join(dir, fmt.Sprintf("bench-pull-%d.tar.gz", i+1)), fmt.Sprintf("data%d", i), pullFiles, pullFileBytes, uint64(i+1)))
	}
	ref, tars := pushImage(b, reg, "bench/pull", dir, extra...)
	for b.Loop() {
		pullT, _ := timed(b, d.Host, "pull", "-q", ref)
		createT, out := timed(b, d.Host, "create", ref)
		id := strings.TrimSpace(out)
		docker(b, d.Host, "rm", id)
		docker(b, d.Host, "rmi", ref)

		into := filepath.Join(dir, "untar")
		if err := os.MkdirAll(into, 0o755); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for _, t := range tars {
			if out, err := exec.Command("tar", "-xzf", t, "-C", into).CombinedOutput(); err != nil {
				b.Fatalf("tar -xzf %s: %s: %v", t, out, err)
			}
		}
		hostT := time.Since(start)
		content := dirBytes(b, into)
		os.RemoveAll(into)

		total := pullT + createT
		b.ReportMetric(pullT.Seconds(), "pull-s")
		b.ReportMetric(createT.Seconds(), "first-create-s")
		b.ReportMetric(total.Seconds(), "pull+create-s")
		b.ReportMetric(hostT.Seconds(), "host-tar-x-s")
		b.ReportMetric(total.Seconds()/hostT.Seconds(), "ratio")
		fmt.Printf("pull %d layers (%.0f MiB unpacked): docker pull %.2fs + first docker create (rootfs disk) %.2fs = %.2fs; host tar -xzf %.2fs; ratio %.1f\n",
			len(tars), float64(content)/(1<<20), pullT.Seconds(), createT.Seconds(), total.Seconds(), hostT.Seconds(), total.Seconds()/hostT.Seconds())
	}
}

// BenchmarkCreateTime: `docker create` of a small image (busybox, ~2 MB)
// and a large one (busybox plus a 512 MiB layer of random data), both
// pulled from an in-process registry. The first create of each builds the
// image's rootfs disk and is reported on its own; then createRuns creates
// of each, interleaved, once the disk exists (median). A container's disk
// is a qcow2 overlay over the image's shared disk, so the later creates
// should not depend on the image's size.
func BenchmarkCreateTime(b *testing.B) {
	d := daemon(b)
	reg := startRegistry(b)
	dir := b.TempDir()
	big := randomLayer(b, filepath.Join(dir, "bench-large-1.tar.gz"), "big", largeFiles, largeFileBytes, 42)
	small, _ := pushImage(b, reg, "bench/small", dir)
	large, _ := pushImage(b, reg, "bench/large", dir, big)
	docker(b, d.Host, "pull", "-q", small)
	docker(b, d.Host, "pull", "-q", large)
	// The first create of each builds the image's disk: once per image, so
	// outside the loop.
	var ids []string
	firstSmall, out := timed(b, d.Host, "create", small)
	ids = append(ids, strings.TrimSpace(out))
	firstLarge, out := timed(b, d.Host, "create", large)
	ids = append(ids, strings.TrimSpace(out))
	for b.Loop() {
		var smallT, largeT []time.Duration
		for i := 0; i < createRuns; i++ {
			t, out := timed(b, d.Host, "create", small)
			smallT = append(smallT, t)
			ids = append(ids, strings.TrimSpace(out))
			t, out = timed(b, d.Host, "create", large)
			largeT = append(largeT, t)
			ids = append(ids, strings.TrimSpace(out))
		}
		sm, _ := stats(smallT)
		lm, _ := stats(largeT)
		b.ReportMetric(firstSmall.Seconds()*1000, "small-first-ms")
		b.ReportMetric(firstLarge.Seconds()*1000, "large-first-ms")
		b.ReportMetric(sm.Seconds()*1000, "small-median-ms")
		b.ReportMetric(lm.Seconds()*1000, "large-median-ms")
		b.ReportMetric(float64(lm)/float64(sm), "large/small")
		fmt.Printf("docker create, first (builds the rootfs disk): busybox %.0f ms, busybox+512 MiB %.0f ms\n", firstSmall.Seconds()*1000, firstLarge.Seconds()*1000)
		fmt.Printf("docker create, disk built, median of %d: busybox %.0f ms, busybox+512 MiB %.0f ms, ratio %.2f\n", createRuns, sm.Seconds()*1000, lm.Seconds()*1000, float64(lm)/float64(sm))
	}
	docker(b, d.Host, append([]string{"rm"}, ids...)...)
}
