package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRAMShim builds ramshim/ramshim.c and runs util-linux fallocate
// under it: punching a hole in the file VCH_TEMPLATE_RAM names succeeds
// and leaves its blocks; a hole in any other file is punched.
func TestRAMShim(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	tool, err := exec.LookPath("fallocate")
	if err != nil {
		t.Skip("no fallocate(1)")
	}
	dir := t.TempDir()
	shim := filepath.Join(dir, "ramshim.so")
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", shim, "ramshim/ramshim.c").CombinedOutput(); err != nil {
		t.Fatalf("build shim: %v\n%s", err, out)
	}
	blocks := func(path string) int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks
	}
	ram, other := filepath.Join(dir, "memory"), filepath.Join(dir, "disk")
	for _, f := range []string{ram, other} {
		if err := os.WriteFile(f, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		// Written zeros are allocated blocks (no sparse detection).
		if out, err := exec.Command("sync", f).CombinedOutput(); err != nil {
			t.Fatalf("sync: %v: %s", err, out)
		}
	}
	full := blocks(ram)
	punch := func(path string) {
		cmd := exec.Command(tool, "--punch-hole", "--offset", "0", "--length", "1048576", path)
		cmd.Env = append(os.Environ(), "LD_PRELOAD="+shim, "VCH_TEMPLATE_RAM="+ram)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("punch %s under the shim: %v: %s", path, err, out)
		}
	}
	punch(ram)
	if got := blocks(ram); got != full {
		t.Errorf("template RAM file: %d blocks after a punch under the shim, want %d (untouched)", got, full)
	}
	punch(other)
	if got := blocks(other); got >= full {
		t.Errorf("other file: %d blocks after a punch under the shim, want fewer than %d", got, full)
	}

	// VCH_MEMORY_MERGE=1: the process's memory is mergeable (KSM's
	// ksm_merge_any), without it not; a kernel without /proc/PID/ksm_stat
	// (before 6.4) skips this part.
	mergeAny := func(env ...string) string {
		cmd := exec.Command("sh", "-c", "cat /proc/self/ksm_stat 2>/dev/null")
		cmd.Env = append(append(os.Environ(), "LD_PRELOAD="+shim), env...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ksm_stat under the shim: %v", err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "ksm_merge_any: "); ok {
				return v
			}
		}
		return ""
	}
	if got := mergeAny(); got == "" {
		t.Log("no ksm_merge_any in /proc/self/ksm_stat: the memory-merge part is skipped")
	} else {
		if got != "no" {
			t.Errorf("ksm_merge_any = %q without VCH_MEMORY_MERGE, want no", got)
		}
		if got := mergeAny("VCH_MEMORY_MERGE=1"); got != "yes" {
			t.Errorf("ksm_merge_any = %q with VCH_MEMORY_MERGE=1, want yes", got)
		}
	}

	// A template file that cannot be found: the process does not run.
	cmd := exec.Command(tool, "--punch-hole", "--offset", "0", "--length", "4096", other)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+shim, "VCH_TEMPLATE_RAM="+filepath.Join(dir, "missing"))
	if err := cmd.Run(); err == nil {
		t.Error("the shim let a process run with a VCH_TEMPLATE_RAM that does not exist")
	}
}
