package container

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/portlayer"
)

func TestResourceLimits(t *testing.T) {
	const mib = 1 << 20
	pids := func(n int64) *int64 { return &n }
	for _, tc := range []struct {
		name    string
		r       container.Resources
		update  bool
		want    portlayer.ResourceLimits
		wantErr string
	}{
		{name: "none"},
		{name: "memory", r: container.Resources{Memory: 32 * mib}, want: portlayer.ResourceLimits{MemoryBytes: 32 * mib}},
		{name: "Docker's floor", r: container.Resources{Memory: 6 * mib}, want: portlayer.ResourceLimits{MemoryBytes: 6 * mib}},
		{name: "below the floor", r: container.Resources{Memory: 5 * mib}, wantErr: "Minimum memory limit allowed is 6MB"},
		{name: "negative", r: container.Resources{Memory: -1}, wantErr: "Range of memory and CPUs must be positive"},
		{name: "swap", r: container.Resources{Memory: 32 * mib, MemorySwap: 64 * mib}, want: portlayer.ResourceLimits{MemoryBytes: 32 * mib, MemorySwapBytes: 64 * mib}},
		{name: "unlimited swap", r: container.Resources{Memory: 32 * mib, MemorySwap: -1}, want: portlayer.ResourceLimits{MemoryBytes: 32 * mib, MemorySwapBytes: -1}},
		{name: "swap below memory", r: container.Resources{Memory: 64 * mib, MemorySwap: 32 * mib}, wantErr: "Minimum memoryswap limit should be larger than memory limit, see usage"},
		{name: "swap alone", r: container.Resources{MemorySwap: 64 * mib}, wantErr: "You should always set the Memory limit when using Memoryswap limit, see usage"},
		{name: "swap alone on update", r: container.Resources{MemorySwap: 64 * mib}, update: true},
		{name: "cpus", r: container.Resources{NanoCPUs: 5e8}, want: portlayer.ResourceLimits{NanoCPUs: 5e8}},
		{name: "cpus and quota", r: container.Resources{NanoCPUs: 5e8, CPUQuota: 50000}, wantErr: "Conflicting options: Nano CPUs and CPU Quota cannot both be set"},
		{name: "cpus and period", r: container.Resources{NanoCPUs: 5e8, CPUPeriod: 50000}, wantErr: "Conflicting options: Nano CPUs and CPU Period cannot both be set"},
		{name: "period too short", r: container.Resources{CPUPeriod: 999}, wantErr: "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"},
		{name: "quota too short", r: container.Resources{CPUQuota: 999}, wantErr: "CPU cfs quota can not be less than 1ms (i.e. 1000)"},
		{name: "quota", r: container.Resources{CPUQuota: 15000, CPUPeriod: 100000}, want: portlayer.ResourceLimits{CPUQuotaMicros: 15000, CPUPeriodMicros: 100000}},
		{name: "quota -1 is none", r: container.Resources{CPUQuota: -1}},
		{name: "pids", r: container.Resources{PidsLimit: pids(32)}, want: portlayer.ResourceLimits{PidsLimit: 32}},
		{name: "negative CPU shares", r: container.Resources{CPUShares: -1}, wantErr: "invalid CPU shares (-1): value must be a positive integer"},
		{name: "pids -1 is none", r: container.Resources{PidsLimit: pids(-1)}},
	} {
		got, err := ResourceLimits(tc.r, tc.update)
		switch {
		case tc.wantErr != "":
			if err == nil || err.Error() != tc.wantErr || !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s: err %v, want InvalidArgument %q", tc.name, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case got != tc.want:
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestMergeResources(t *testing.T) {
	const mib = 1 << 20
	pids := func(n int64) *int64 { return &n }
	cur := container.Resources{Memory: 200 * mib, PidsLimit: pids(32), CPUQuota: 15000, CPUPeriod: 100000}
	if err := mergeResources(&cur, container.Resources{Memory: 300 * mib, MemorySwap: 500 * mib}); err != nil {
		t.Fatal(err)
	}
	if cur.Memory != 300*mib || cur.MemorySwap != 500*mib || *cur.PidsLimit != 32 || cur.CPUQuota != 15000 {
		t.Errorf("after a memory update: %+v", cur)
	}
	if err := mergeResources(&cur, container.Resources{CPUQuota: -1, PidsLimit: pids(-2)}); err != nil {
		t.Fatal(err)
	}
	if cur.CPUQuota != -1 || *cur.PidsLimit != 0 || cur.Memory != 300*mib {
		t.Errorf("after unsetting quota and pids: %+v", cur)
	}
	err := mergeResources(&cur, container.Resources{Memory: 600 * mib})
	if err == nil || err.Error() != "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time" {
		t.Errorf("memory above the swap limit: %v", err)
	}
}
