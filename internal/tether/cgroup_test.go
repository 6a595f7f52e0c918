package tether

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vchproject/vch/internal/agent/wire"
)

func TestCgroupFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    wire.Resources
		want [][2]string
	}{
		{"none", wire.Resources{}, [][2]string{{"memory.max", "max"}, {"memory.swap.max", "max"}, {"cpu.max", "max 100000"}, {"pids.max", "max"}}},
		{"memory and swap", wire.Resources{MemoryMaxBytes: 32 << 20, SwapMaxBytes: 0}, [][2]string{{"memory.max", "33554432"}, {"memory.swap.max", "0"}, {"cpu.max", "max 100000"}, {"pids.max", "max"}}},
		{"unlimited swap", wire.Resources{MemoryMaxBytes: 32 << 20, SwapMaxBytes: -1}, [][2]string{{"memory.max", "33554432"}, {"memory.swap.max", "max"}, {"cpu.max", "max 100000"}, {"pids.max", "max"}}},
		{"cpu and pids", wire.Resources{CPUQuotaMicros: 50000, CPUPeriodMicros: 200000, PidsMax: 20}, [][2]string{{"memory.max", "max"}, {"memory.swap.max", "max"}, {"cpu.max", "50000 200000"}, {"pids.max", "20"}}},
	} {
		if got := cgroupFiles(tc.r); !slices.Equal(got, tc.want) {
			t.Errorf("%s: cgroupFiles = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestApplyResources writes into a directory standing in for a cgroup: a
// file the kernel lacks is skipped only when its value is the default.
func TestApplyResources(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"memory.max", "cpu.max", "pids.max"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// memory.swap.max is missing: without swap accounting "max" is fine.
	if err := applyResources(dir, wire.Resources{PidsMax: 7}); err != nil {
		t.Fatalf("applyResources without memory.swap.max: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pids.max")); string(b) != "7" {
		t.Errorf("pids.max = %q", b)
	}
	if err := applyResources(dir, wire.Resources{MemoryMaxBytes: 1 << 30, SwapMaxBytes: 1 << 20}); err == nil {
		t.Error("a swap limit on a kernel without memory.swap.max was accepted")
	}
}

func TestKeyedValue(t *testing.T) {
	events := "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"
	if n := keyedValue(events, "oom_kill"); n != 2 {
		t.Errorf("oom_kill = %d", n)
	}
	if n := keyedValue(events, "oom"); n != 3 {
		t.Errorf("oom = %d", n)
	}
	if n := keyedValue(events, "absent"); n != 0 {
		t.Errorf("absent = %d", n)
	}
}
