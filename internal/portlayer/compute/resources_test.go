package compute

import (
	"testing"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/portlayer"
)

func TestGuestResources(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name  string
		l     portlayer.ResourceLimits
		vcpus int
		want  *wire.Resources
	}{
		{"none", portlayer.ResourceLimits{}, 1, nil},
		{"memory, default swap", portlayer.ResourceLimits{MemoryBytes: 32 * mib}, 1, &wire.Resources{MemoryMaxBytes: 32 * mib, SwapMaxBytes: 32 * mib}},
		{"memory-swap equal to memory", portlayer.ResourceLimits{MemoryBytes: 32 * mib, MemorySwapBytes: 32 * mib}, 1, &wire.Resources{MemoryMaxBytes: 32 * mib}},
		{"memory-swap -1", portlayer.ResourceLimits{MemoryBytes: 32 * mib, MemorySwapBytes: -1}, 1, &wire.Resources{MemoryMaxBytes: 32 * mib, SwapMaxBytes: -1}},
		{"memory-swap above memory", portlayer.ResourceLimits{MemoryBytes: 300 * mib, MemorySwapBytes: 500 * mib}, 1, &wire.Resources{MemoryMaxBytes: 300 * mib, SwapMaxBytes: 200 * mib}},
		{"cpus 0.5", portlayer.ResourceLimits{NanoCPUs: 5e8}, 1, &wire.Resources{CPUQuotaMicros: 50000, CPUPeriodMicros: 100000}},
		{"cpus 1.5 on 2 vCPUs", portlayer.ResourceLimits{NanoCPUs: 15e8}, 2, &wire.Resources{CPUQuotaMicros: 150000, CPUPeriodMicros: 100000}},
		{"cpus 2 on 2 vCPUs: no quota", portlayer.ResourceLimits{NanoCPUs: 2e9}, 2, &wire.Resources{}},
		{"cpu-quota, default period", portlayer.ResourceLimits{CPUQuotaMicros: 15000}, 1, &wire.Resources{CPUQuotaMicros: 15000, CPUPeriodMicros: 100000}},
		{"pids", portlayer.ResourceLimits{PidsLimit: 32}, 1, &wire.Resources{PidsMax: 32}},
	} {
		got := guestResources(tc.l, tc.vcpus)
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("%s: guestResources = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestVMSize(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		spec      portlayer.ContainerSpec
		mem, cpus int
	}{
		{portlayer.ContainerSpec{}, 256, 1},
		{portlayer.ContainerSpec{MemoryMiB: 192, CPUs: 3}, 192, 3},
		{portlayer.ContainerSpec{Limits: portlayer.ResourceLimits{MemoryBytes: 6 * mib}}, 256, 1},
		{portlayer.ContainerSpec{Limits: portlayer.ResourceLimits{MemoryBytes: 160 * mib}}, 256, 1},
		{portlayer.ContainerSpec{Limits: portlayer.ResourceLimits{MemoryBytes: 161 * mib}}, 512, 1},
		{portlayer.ContainerSpec{Limits: portlayer.ResourceLimits{MemoryBytes: 1 << 30, NanoCPUs: 15e8}}, 2048, 2},
	} {
		if mem, cpus := tc.spec.VMMemoryMiB(256), tc.spec.VMCPUs(1); mem != tc.mem || cpus != tc.cpus {
			t.Errorf("%+v: VM of %d MiB, %d vCPUs; want %d, %d", tc.spec.Limits, mem, cpus, tc.mem, tc.cpus)
		}
	}
}
