//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vchproject/vch/internal/testenv"
)

// TestPullDiskFull: a daemon whose root is a 60 MiB tmpfs pulls an 80 MiB
// image (four 20 MiB layers of random bytes). The pull fails with a clear
// error, leaves no image, blob, work file or rootfs disk, and the daemon
// keeps serving: busybox still runs and a small image still pulls.
func TestPullDiskFull(t *testing.T) {
	t.Parallel()
	need(t)
	if os.Geteuid() != 0 {
		testenv.RequireVMs(t) // says why when root is missing
		t.Skip("mounting a tmpfs needs root")
	}
	big, err := random.Image(20<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(env.registry + "/bench/toobig:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, big); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=60m,mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	// No VM templates: a template's RAM file (~130 MiB) would not fit
	// on this disk, and what the test measures is the pull's.
	d, err := testenv.StartDaemon(dir, "--vm-templates=false")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(30 * time.Second)
	if err := d.LoadBusybox(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		out, err := dockerCmd(t, d.Host, args...).CombinedOutput()
		return string(out), err
	}
	var before syscall.Statfs_t
	syscall.Statfs(dir, &before)
	t.Logf("free before the pull: %d MiB", before.Bavail*uint64(before.Bsize)>>20)

	out, err := run("pull", ref.String())
	if err == nil || !strings.Contains(out, "no space left on device") {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	t.Logf("pull: %s", strings.TrimSpace(out))

	store := filepath.Join(d.Root, "images")
	for _, sub := range []string{"tmp", "rootfs"} {
		if e, _ := os.ReadDir(filepath.Join(store, sub)); len(e) != 0 {
			t.Errorf("%s left: %v", sub, e)
		}
	}
	if out, _ := run("images", "--format", "{{.Repository}}"); strings.TrimSpace(out) != "busybox" {
		t.Errorf("images after the failed pull: %q", out)
	}
	// Only busybox's blobs remain: its layer, config and manifest.
	if e, _ := os.ReadDir(filepath.Join(store, "oci", "blobs", "sha256")); len(e) != 3 {
		t.Errorf("blobs left: %d, want busybox's 3", len(e))
	}
	var after syscall.Statfs_t
	syscall.Statfs(dir, &after)
	if after.Bavail < before.Bavail {
		t.Errorf("free space %d MiB after the failed pull, %d before", after.Bavail*uint64(after.Bsize)>>20, before.Bavail*uint64(before.Bsize)>>20)
	}

	if out, err := run("run", "--rm", "busybox", "echo", "still serving"); err != nil || strings.TrimSpace(out) != "still serving" {
		t.Errorf("run after the failed pull: %v: %s\n%s", err, out, d.Log(3000))
	}
	if out, err := run("pull", env.registry+"/library/busybox:1"); err != nil {
		t.Errorf("small pull after the failed pull: %v: %s", err, out)
	}
}
