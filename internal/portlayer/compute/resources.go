package compute

import (
	"cmp"
	"context"
	"fmt"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/portlayer"
)

// cpuPeriodMicros is the CFS period of a container's cpu.max, in
// microseconds: Linux's default of 100 ms, over which NanoCPUs becomes a
// quota.
const cpuPeriodMicros = 100000

// guestResources turns a container's limits into its guest cgroup's,
// for a VM of vcpus vCPUs; nil when it has none. As ResourceLimits
// defines them (the same rules as the Engine API's HostConfig, so limits
// mean what their users know): swap is as much as MemoryBytes when
// MemorySwapBytes is 0, unlimited at -1, else MemorySwapBytes minus
// MemoryBytes; NanoCPUs becomes a quota per 100 ms period, needed only
// when it is less than the VM's vCPUs; CPUQuotaMicros is one.
func guestResources(l portlayer.ResourceLimits, vcpus int) *wire.Resources {
	if l == (portlayer.ResourceLimits{}) {
		return nil
	}
	r := &wire.Resources{MemoryMaxBytes: l.MemoryBytes, PidsMax: l.PidsLimit}
	if l.MemoryBytes > 0 {
		switch {
		case l.MemorySwapBytes < 0:
			r.SwapMaxBytes = -1
		case l.MemorySwapBytes == 0:
			r.SwapMaxBytes = l.MemoryBytes
		default:
			r.SwapMaxBytes = max(0, l.MemorySwapBytes-l.MemoryBytes)
		}
	}
	switch {
	case l.CPUQuotaMicros > 0:
		r.CPUQuotaMicros, r.CPUPeriodMicros = l.CPUQuotaMicros, cmp.Or(l.CPUPeriodMicros, cpuPeriodMicros)
	case l.NanoCPUs > 0 && l.NanoCPUs < int64(vcpus)*1e9:
		r.CPUQuotaMicros = l.NanoCPUs * cpuPeriodMicros / 1e9
		r.CPUPeriodMicros = cpuPeriodMicros
	}
	return r
}

// applyLimits sets a running container's new limits in its guest g, for
// a VM of vcpus vCPUs. The caller checked that they fit the VM.
func applyLimits(ctx context.Context, g *agent.Client, l portlayer.ResourceLimits, vcpus int) error {
	r := guestResources(l, vcpus)
	if r == nil {
		r = &wire.Resources{}
	}
	ctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()
	if err := g.SetResources(ctx, *r); err != nil {
		return fmt.Errorf("compute: update limits: %w", err)
	}
	return nil
}
