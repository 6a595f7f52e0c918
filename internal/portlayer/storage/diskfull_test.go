package storage

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/vchproject/vch/internal/portlayer"
)

// tinyRoot mounts a tmpfs of size (mount(8) syntax, "8m") on a new
// directory and returns it; it skips without root.
func tinyRoot(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// storeFiles lists the files under the store's blob, tmp and rootfs
// directories: what a failed operation must not leave behind.
func storeFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	for _, d := range []string{filepath.Join(root, "oci", "blobs"), filepath.Join(root, "tmp"), filepath.Join(root, "rootfs")} {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				files = append(files, p)
			}
			return nil
		})
	}
	return files
}

// TestPullDiskFull pulls a 12 MiB image (three 4 MiB layers of random
// bytes) into a store on an 8 MiB tmpfs: the pull fails with
// ResourceExhausted and a text that says so, leaves no image, blob or work
// file, and the store then pulls an image that fits.
func TestPullDiskFull(t *testing.T) {
	host := testRegistry(t)
	big, err := random.Image(4<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	push(t, host+"/big:1", big)
	push(t, host+"/busybox:1", busybox(t))

	root := tinyRoot(t, "8m")
	s := newStore(t, root)
	_, err = s.Pull(t.Context(), host+"/big:1", portlayer.RegistryAuth{}, nil)
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("err = %v (%T), want ResourceExhausted", err, err)
	}
	t.Logf("error: %v", err)
	if imgs, _ := s.List(t.Context()); len(imgs) != 0 {
		t.Errorf("images after a failed pull: %v", imgs)
	}
	if left := storeFiles(t, root); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	img, err := s.Pull(t.Context(), host+"/busybox:1", portlayer.RegistryAuth{}, nil)
	if err != nil {
		t.Fatalf("pull after a full disk: %v", err)
	}
	if _, err := s.Rootfs(t.Context(), img.ID); err != nil {
		t.Fatalf("rootfs after a full disk: %v", err)
	}
}

// TestRootfsDiskFull: an image whose blobs fit but whose rootfs disk does
// not (the flattened tree and the ext4 file need about twice the content
// again): Rootfs fails with ResourceExhausted and leaves no work files or
// partial disk; the image stays usable once space is freed.
func TestRootfsDiskFull(t *testing.T) {
	host := testRegistry(t)
	img, err := random.Image(3<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	push(t, host+"/mid:1", img)

	root := tinyRoot(t, "10m")
	s := newStore(t, root)
	got, err := s.Pull(t.Context(), host+"/mid:1", portlayer.RegistryAuth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	blobs := storeFiles(t, root)
	_, err = s.Rootfs(t.Context(), got.ID)
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("err = %v (%T), want ResourceExhausted", err, err)
	}
	t.Logf("error: %v", err)
	if left := storeFiles(t, root); len(left) != len(blobs) {
		t.Errorf("left behind: %v (blobs %v)", left, blobs)
	}
	if _, err := s.Get(t.Context(), got.ID); err != nil {
		t.Errorf("image after a failed rootfs build: %v", err)
	}
}
