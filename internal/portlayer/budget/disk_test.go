package budget

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestDiskQuota: usage is allocated blocks (a sparse file's hole is
// free, a hard link counts once), and Reserve refuses what would pass
// the limit with ResourceExhausted and a clear text.
func TestDiskQuota(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "data"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d := &Disk{Limit: 3 << 20, Dirs: []string{dir, dir}}
	used, err := d.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if used < 1<<20 || used > 1<<20+64<<10 {
		t.Fatalf("usage %d, want about 1 MiB", used)
	}
	if err := d.Reserve("pull of x", 1<<20); err != nil {
		t.Fatalf("reserve within quota: %v", err)
	}
	err = d.Reserve("pull of x", 4<<20)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "storage quota of 3MiB exceeded") || !strings.Contains(err.Error(), "pull of x needs 4MiB more") {
		t.Fatalf("reserve over quota: %v", err)
	}
	if err := (&Disk{Dirs: []string{dir}}).Reserve("x", 1<<40); err != nil {
		t.Fatalf("no quota: %v", err)
	}
	full := &Disk{Limit: 1 << 20, Dirs: []string{dir}}
	if err := full.Reserve("commit", 0); !errdefs.IsResourceExhausted(err) {
		t.Fatalf("size-0 reserve when full: %v", err)
	}
}
