//go:build e2e

package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// transferSectorsRead is how many 512-byte sectors the guest has read
// from its transfer disk (the disk whose serial is vch-transfer;
// /sys/block/X/stat's third field); 0 while the guest has not bound it
// (a restored VM binds it on first use), unless bound is true.
func transferSectorsRead(t *testing.T, name string, bound bool) int64 {
	t.Helper()
	out := ok(t, "exec", name, "sh", "-c", `for d in /sys/block/*; do if [ "$(cat $d/serial 2>/dev/null)" = vch-transfer ]; then cat $d/stat; fi; done`)
	f := strings.Fields(out)
	if len(f) < 3 && !bound {
		return 0
	}
	if len(f) < 3 {
		t.Fatalf("no transfer disk in the guest: %q", out)
	}
	n, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		t.Fatalf("transfer disk stat %q: %v", out, err)
	}
	return n
}

// TestCopyTransferDisk: docker cp of a large file into a running
// container goes through the VM's transfer disk (the guest's reads of it
// grow by the archive's size), not the channel; two at once (one of them
// on the channel, the disk being in use) and one into a stopped container
// arrive whole.
func TestCopyTransferDisk(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "100000")
	t.Cleanup(func() { docker(t, "rm", "-f", name) })

	src := t.TempDir()
	sums := map[string]string{}
	for i, size := range []int{24 << 20, 6<<20 + 123} {
		b := make([]byte, size)
		rand.Read(b)
		f := fmt.Sprintf("big%d", i)
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[f] = fmt.Sprintf("%x", md5.Sum(b))
	}
	before := transferSectorsRead(t, name, false)
	ok(t, "cp", filepath.Join(src, "big0"), name+":/big0")
	if read := (transferSectorsRead(t, name, true) - before) * 512; read < 24<<20 {
		t.Errorf("the guest read %d bytes of its transfer disk for 24 MiB copied in; want at least that", read)
	}
	// Two at once: one takes the disk, the other the channel.
	var wg sync.WaitGroup
	for f := range sums {
		wg.Go(func() {
			if r := docker(t, "cp", filepath.Join(src, f), name+":/"+f); r.code != 0 {
				t.Errorf("cp %s: exit %d: %s", f, r.code, r.stderr)
			}
		})
	}
	wg.Wait()
	for f, want := range sums {
		if got := strings.Fields(ok(t, "exec", name, "md5sum", "/"+f)); len(got) == 0 || got[0] != want {
			t.Errorf("%s in the container: md5 %v, want %s", f, got, want)
		}
	}

	// A stopped container's maintenance VM has a transfer disk too.
	ok(t, "stop", "-t", "1", name)
	ok(t, "cp", filepath.Join(src, "big1"), name+":/stopped")
	ok(t, "start", name)
	if got := strings.Fields(ok(t, "exec", name, "md5sum", "/stopped")); len(got) == 0 || got[0] != sums["big1"] {
		t.Errorf("copied into the stopped container: md5 %v, want %s", got, sums["big1"])
	}
}

// TestCopyTransferDiskCut: a client that sends 5 of a 7-file archive
// and stops gets Docker's error for a cut body (as on the channel), and
// nothing in the container was unpacked from anything but the archive's
// bytes: every file holds only the 'x' it was written with (before the
// host waited for the guest, a cut upload's guest read on after the disk
// got its empty image back and wrote zeros).
func TestCopyTransferDiskCut(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "100000")
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	ok(t, "exec", name, "mkdir", "/cut")

	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	content := bytes.Repeat([]byte("x"), 1<<20) // one header and 1 MiB of data an entry
	for i := range 7 {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write(content)
	}
	tw.Close()
	sent := 5 * (512 + 1<<20) // past transferMinBytes, cut between two entries

	sock := strings.TrimPrefix(env.host, "unix://")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /containers/%s/archive?path=/cut HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n", name, archive.Len())
	conn.Write(archive.Bytes()[:sent])
	conn.(*net.UnixConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a cut upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "unexpected EOF") {
		t.Errorf("cut upload: %d %s, want 500 and an unexpected EOF (as on the channel)", resp.StatusCode, body)
	}
	// Give a guest that read on time to do harm, then look.
	time.Sleep(3 * time.Second)
	if got := ok(t, "exec", name, "sh", "-c", "cat /cut/* | tr -d x | wc -c"); strings.TrimSpace(got) != "0" {
		t.Errorf("files under /cut hold %s bytes other than the archive's 'x'", strings.TrimSpace(got))
	}
	// The disk is free again: the next large copy goes through it.
	before := transferSectorsRead(t, name, false)
	src := filepath.Join(t.TempDir(), "after")
	os.WriteFile(src, bytes.Repeat([]byte("y"), 6<<20), 0o644)
	ok(t, "cp", src, name+":/after")
	if read := (transferSectorsRead(t, name, true) - before) * 512; read < 6<<20 {
		t.Errorf("after the cut upload the next copy read %d bytes of the transfer disk, want at least 6 MiB", read)
	}
}
