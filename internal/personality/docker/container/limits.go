package container

import (
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// minMemoryBytes is dockerd's smallest -m (linuxMinMemory, 6 MiB): a
// container VM is sized to hold the limit plus its own overhead
// (portlayer.VMOverheadMiB), so the limit alone has Docker's floor.
const minMemoryBytes = 6 << 20

// ResourceLimits validates a container's resource settings with dockerd's
// rules and texts (daemon/daemon_unix.go verifyPlatformContainerResources;
// all InvalidArgument, 400) and returns the limits the port layer
// enforces in the guest: -m, --memory-swap, --cpus, --cpu-quota with
// --cpu-period, --pids-limit. update is true for docker update, which
// may set a swap limit alone.
func ResourceLimits(r container.Resources, update bool) (portlayer.ResourceLimits, error) {
	switch {
	case r.Memory < 0 || r.NanoCPUs < 0:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("Range of memory and CPUs must be positive")
	case r.Memory != 0 && r.Memory < minMemoryBytes:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("Minimum memory limit allowed is 6MB")
	case r.Memory > 0 && r.MemorySwap > 0 && r.MemorySwap < r.Memory:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
	case r.Memory == 0 && r.MemorySwap > 0 && !update:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("You should always set the Memory limit when using Memoryswap limit, see usage")
	case r.NanoCPUs > 0 && r.CPUPeriod > 0:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
	case r.NanoCPUs > 0 && r.CPUQuota > 0:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
	case r.CPUPeriod != 0 && (r.CPUPeriod < 1000 || r.CPUPeriod > 1000000):
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
	case r.CPUQuota > 0 && r.CPUQuota < 1000:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
	case r.CPUShares < 0:
		return portlayer.ResourceLimits{}, httputils.InvalidArgument("invalid CPU shares (%d): value must be a positive integer", r.CPUShares)
	}
	l := portlayer.ResourceLimits{MemoryBytes: r.Memory, NanoCPUs: r.NanoCPUs}
	if r.Memory > 0 {
		l.MemorySwapBytes = r.MemorySwap
	}
	if r.CPUQuota > 0 {
		l.CPUQuotaMicros, l.CPUPeriodMicros = r.CPUQuota, r.CPUPeriod
	}
	if r.PidsLimit != nil && *r.PidsLimit > 0 {
		l.PidsLimit = *r.PidsLimit
	}
	return l, nil
}

// mergeResources applies docker update's settings to the container's
// (daemon/update.go): a zero field keeps the current value, PidsLimit nil
// keeps it and ≤ 0 removes it. The error is dockerd's when a new -m would
// pass the swap limit already set.
func mergeResources(cur *container.Resources, u container.Resources) error {
	if u.Memory != 0 && u.MemorySwap == 0 && cur.MemorySwap > 0 && u.Memory > cur.MemorySwap {
		return httputils.InvalidArgument("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time")
	}
	set := func(dst *int64, v int64) {
		if v != 0 {
			*dst = v
		}
	}
	set(&cur.Memory, u.Memory)
	set(&cur.MemorySwap, u.MemorySwap)
	set(&cur.NanoCPUs, u.NanoCPUs)
	set(&cur.CPUQuota, u.CPUQuota)
	set(&cur.CPUPeriod, u.CPUPeriod)
	if u.PidsLimit != nil {
		n := max(*u.PidsLimit, 0)
		cur.PidsLimit = &n
	}
	return nil
}
