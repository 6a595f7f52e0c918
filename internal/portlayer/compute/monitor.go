package compute

import (
	"context"
	"fmt"
	"time"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/portlayer"
)

// monitorTimeout bounds a top or stats query: a guest that stops answering
// gets Unavailable, never a hung API call.
const monitorTimeout = 10 * time.Second

var (
	_ portlayer.Monitor = (*Service)(nil)
	_ portlayer.Monitor = (*monitor)(nil)
)

// Top implements portlayer.Monitor from the guest's /proc.
func (s *Service) Top(ctx context.Context, idOrName string) ([]portlayer.ProcessInfo, error) {
	return s.mon.Top(ctx, idOrName)
}

// Stats implements portlayer.Monitor from the guest's counters.
func (s *Service) Stats(ctx context.Context, idOrName string) (portlayer.StatsSample, error) {
	return s.mon.Stats(ctx, idOrName)
}

// monitor is compute's monitoring area: what runs in a running
// container's guest (its processes, top) and what its VM uses (stats),
// asked of the guest's agent within monitorTimeout. It owns no state: it
// finds the container through lookup and takes its guest connection
// under the container's lock, which it does not hold while the guest
// answers.
type monitor struct {
	lookup lookupFunc
}

// runningGuest is the guest connection of a running container: Conflict
// (ReasonPaused, ReasonNotRunning) otherwise, decided under c.mu.
func (m *monitor) runningGuest(idOrName string) (*container, *agent.Client, error) {
	c, err := m.lookup(idOrName)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.rec.State.Status {
	case portlayer.StatusRunning:
	case portlayer.StatusPaused:
		return nil, nil, portlayer.ContainerState("", c.id, portlayer.ReasonPaused)
	default:
		return nil, nil, portlayer.ContainerState("", c.id, portlayer.ReasonNotRunning)
	}
	if c.guest == nil {
		return nil, nil, portlayer.ContainerState("", c.id, portlayer.ReasonNotRunning)
	}
	return c, c.guest, nil
}

// Top is Service.Top.
func (m *monitor) Top(ctx context.Context, idOrName string) ([]portlayer.ProcessInfo, error) {
	_, g, err := m.runningGuest(idOrName)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()
	t, err := g.Top(ctx)
	if err != nil {
		return nil, fmt.Errorf("compute: top: %w", err)
	}
	hz := t.TicksPerSecond
	if hz <= 0 {
		hz = 100
	}
	boot := time.Unix(t.BootTimeUnix, 0)
	out := make([]portlayer.ProcessInfo, 0, len(t.Processes))
	for _, p := range t.Processes {
		out = append(out, portlayer.ProcessInfo{
			PID: p.PID, PPID: p.PPID, UID: p.UID, TTY: p.TTY, Cmd: p.Cmd,
			Started: boot.Add(time.Duration(p.StartTicks) * time.Second / time.Duration(hz)),
			CPUTime: time.Duration(p.CPUTicks) * time.Second / time.Duration(hz),
		})
	}
	return out, nil
}

// Stats is Service.Stats.
func (m *monitor) Stats(ctx context.Context, idOrName string) (portlayer.StatsSample, error) {
	_, g, err := m.runningGuest(idOrName)
	if err != nil {
		return portlayer.StatsSample{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()
	st, err := g.Stats(ctx)
	if err != nil {
		return portlayer.StatsSample{}, fmt.Errorf("compute: stats: %w", err)
	}
	sample := portlayer.StatsSample{
		Read: time.Now().UTC(), CPUBusyNanos: st.CPUBusyNanos, CPUTotalNanos: st.CPUTotalNanos, OnlineCPUs: st.OnlineCPUs,
		MemUsedBytes: st.MemUsedBytes, MemLimitBytes: st.MemTotalBytes,
		DiskReadBytes: st.DiskReadBytes, DiskWriteBytes: st.DiskWriteBytes, Pids: st.Pids,
	}
	if st.CgroupMemBytes > 0 {
		// The container's own processes (its cgroup), not the guest's
		// kernel and agent: what the container's limit applies to.
		sample.MemUsedBytes, sample.MemInactiveFileBytes = st.CgroupMemBytes, st.CgroupInactiveFileBytes
		if st.CgroupMemLimitBytes > 0 && st.CgroupMemLimitBytes < st.MemTotalBytes {
			sample.MemLimitBytes = st.CgroupMemLimitBytes
		}
	}
	for name, n := range st.Networks {
		if sample.Networks == nil {
			sample.Networks = map[string]portlayer.NetStats{}
		}
		sample.Networks[name] = portlayer.NetStats(n)
	}
	return sample, nil
}
