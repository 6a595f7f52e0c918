// Package testenv finds what the VM-booting tests need — the built
// binaries, the unpacked guest kernel, QEMU, root — and skips a test that
// lacks one, saying why. With VCH_REQUIRE_E2E=1 (set by CI) a missing
// prerequisite fails the test instead, so a missing kernel can never turn
// the suite green.
package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// RepoRoot returns the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BinDir returns where `make build` puts binaries (VCH_BIN_DIR overrides).
func BinDir() string {
	if d := os.Getenv("VCH_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "bin")
}

// KernelDir returns the unpacked guest kernel tree (VCH_KERNEL_DIR overrides).
func KernelDir() string {
	if d := os.Getenv("VCH_KERNEL_DIR"); d != "" {
		return d
	}
	return filepath.Join(BinDir(), "guest", "kernel")
}

// missing skips or, under VCH_REQUIRE_E2E=1, fails.
func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("VCH_REQUIRE_E2E") == "1" {
		t.Fatalf("prerequisite missing (VCH_REQUIRE_E2E=1): %s", why)
	}
	t.Skipf("prerequisite missing: %s", why)
}

// RequireVMs checks root, QEMU, qemu-img, mkfs.ext4, the tether binary
// and the guest kernel.
func RequireVMs(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "must run as root")
	}
	for _, b := range []string{"qemu-system-x86_64", "qemu-img", "mkfs.ext4"} {
		if _, err := exec.LookPath(b); err != nil {
			missing(t, b+" not installed (run scripts/deps.sh)")
		}
	}
	if _, err := os.Stat(filepath.Join(BinDir(), "tether")); err != nil {
		missing(t, "bin/tether not built (run make build)")
	}
	matches, _ := filepath.Glob(filepath.Join(KernelDir(), "boot", "vmlinuz-*"))
	if len(matches) == 0 {
		missing(t, "guest kernel not unpacked in "+KernelDir()+" (run make guest)")
	}
}

// RequireBinary checks that a program is on PATH.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, name+" not installed")
	}
	return p
}

// ReadFile returns the file's contents, failing the test if it cannot
// be read.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Smaps is a process's memory as /proc/PID/smaps_rollup gives it, in KiB.
type Smaps struct {
	// Pss is the proportional set size: private pages in full, each
	// shared page divided by the number of processes mapping it.
	Pss int
	// Anonymous is the memory no file backs (copy-on-write copies of a
	// file mapping included).
	Anonymous int
}

// SmapsRollup reads /proc/PID/smaps_rollup, failing the test if it cannot
// be read or has no Pss line.
func SmapsRollup(t testing.TB, pid string) Smaps {
	t.Helper()
	var s Smaps
	found := false
	for _, line := range strings.Split(string(ReadFile(t, filepath.Join("/proc", pid, "smaps_rollup"))), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Pss:":
			s.Pss, found = atoiOrFail(t, line, f[1]), true
		case "Anonymous:":
			s.Anonymous = atoiOrFail(t, line, f[1])
		}
	}
	if !found {
		t.Fatalf("no Pss line in /proc/%s/smaps_rollup", pid)
	}
	return s
}

func atoiOrFail(t testing.TB, line, v string) int {
	t.Helper()
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("smaps_rollup line %q: %v", line, err)
	}
	return n
}

// BusyboxDisk writes dir/root.ext4, a raw ext4 disk of size (mkfs.ext4's
// form, "64M") holding Debian's static busybox as /bin/busybox with the
// common applets linked in /bin, /etc/passwd and /etc/group (root and
// nobody), and an empty /tmp: a root disk for guest tests. Skips the
// test without /bin/busybox; fails it if mkfs.ext4 does.
func BusyboxDisk(t testing.TB, dir, size string) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("busybox-static not installed")
	}
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"bin/busybox": string(bb),
		"etc/passwd":  "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":   "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"sh", "echo", "uname", "cat", "sleep", "head", "seq", "ps", "wc", "tr", "true", "sync"} {
		if err := os.Symlink("/bin/busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, disk, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %s: %v", out, err)
	}
	return disk
}

// FileSHA256 is the hex SHA-256 of the file at path's content; it fails
// t if the file cannot be read.
func FileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
