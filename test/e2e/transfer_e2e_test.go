//go:build e2e

package e2e

import (
	"crypto/md5"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
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

// TestCopyTransferDisk: docker cp of large files into a running
// container (two at once) and into a stopped one arrives whole, and goes
// through the VM's transfer disk (the guest's reads of it grow by the
// archive's size), not the channel.
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
	if read := (transferSectorsRead(t, name, true) - before) * 512; read < 30<<20 {
		t.Errorf("the guest read %d bytes of its transfer disk for 30 MiB copied in; want at least that", read)
	}

	// A stopped container's maintenance VM has a transfer disk too.
	ok(t, "stop", "-t", "1", name)
	ok(t, "cp", filepath.Join(src, "big1"), name+":/stopped")
	ok(t, "start", name)
	if got := strings.Fields(ok(t, "exec", name, "md5sum", "/stopped")); len(got) == 0 || got[0] != sums["big1"] {
		t.Errorf("copied into the stopped container: md5 %v, want %s", got, sums["big1"])
	}
}
