package container

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// statsInterval is how often a stats stream sends a sample (dockerd: 1 s).
const statsInterval = time.Second

// MonitorRoutes serves GET /containers/{id}/top and /stats (Engine API
// v1.50) from the port layer's Monitor. compute resolves names.
func MonitorRoutes(m portlayer.Monitor, compute portlayer.Compute) []httputils.Route {
	mr := &monitorRouter{m: m, compute: compute}
	return []httputils.Route{
		httputils.NewRoute(http.MethodGet, "/containers/{name}/top", mr.getTop),
		httputils.NewRoute(http.MethodGet, "/containers/{name}/stats", mr.getStats),
	}
}

type monitorRouter struct {
	m       portlayer.Monitor
	compute portlayer.Compute
}

func monitorErr(name string, err error) error {
	if errdefs.IsConflict(err) {
		return httputils.Classify(errdefs.ErrConflict, err, httputils.PortLayerText(err))
	}
	return containerErr("top", name, err)
}

// TopTitles are the columns of `docker top` without ps arguments (ps -ef).
var TopTitles = []string{"UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"}

// TopRows renders processes in `ps -ef` form. The ps_args of the request
// are not passed to a ps binary (there is none on the host side of a VM);
// every form answers with these columns.
func TopRows(procs []portlayer.ProcessInfo, now time.Time) [][]string {
	rows := make([][]string, 0, len(procs))
	for _, p := range procs {
		uid := strconv.Itoa(p.UID)
		if p.UID == 0 {
			uid = "root"
		}
		stime := p.Started.Local().Format("15:04")
		if now.Sub(p.Started) > 24*time.Hour {
			stime = p.Started.Local().Format("Jan02")
		}
		cpu := int(p.CPUTime.Seconds())
		t := fmt.Sprintf("%02d:%02d:%02d", cpu/3600, cpu/60%60, cpu%60)
		rows = append(rows, []string{uid, strconv.Itoa(p.PID), strconv.Itoa(p.PPID), "0", stime, p.TTY, t, p.Cmd})
	}
	return rows
}

func (mr *monitorRouter) getTop(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	procs, err := mr.m.Top(r.Context(), name)
	if err != nil {
		return monitorErr(name, err)
	}
	return httputils.WriteJSON(w, http.StatusOK, container.TopResponse{Titles: TopTitles, Processes: TopRows(procs, time.Now())})
}

// StatsResponse renders a sample (and the previous one, for CPU deltas) in
// Docker's shape: cpu_stats.cpu_usage.total_usage is the guest's busy CPU
// time and system_cpu_usage its total CPU time, so the CLI's CPU % is the
// share of the VM's vCPUs in use; memory usage is MemTotal − MemAvailable
// against the guest's RAM as the limit.
func StatsResponse(id, name string, cur, pre portlayer.StatsSample) container.StatsResponse {
	cpu := func(s portlayer.StatsSample) container.CPUStats {
		return container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: s.CPUBusyNanos}, SystemUsage: s.CPUTotalNanos, OnlineCPUs: uint32(s.OnlineCPUs)}
	}
	resp := container.StatsResponse{
		ID: id, Name: "/" + name, OSType: "linux", Read: cur.Read, PreRead: pre.Read,
		CPUStats: cpu(cur), PreCPUStats: cpu(pre),
		MemoryStats: container.MemoryStats{Usage: cur.MemUsedBytes, Limit: cur.MemLimitBytes, Stats: map[string]uint64{}},
		PidsStats:   container.PidsStats{Current: uint64(cur.Pids)},
		BlkioStats: container.BlkioStats{IoServiceBytesRecursive: []container.BlkioStatEntry{
			{Major: 254, Minor: 0, Op: "read", Value: cur.DiskReadBytes},
			{Major: 254, Minor: 0, Op: "write", Value: cur.DiskWriteBytes},
		}},
	}
	return resp
}

// getStats serves GET /containers/{id}/stats?stream=&one-shot=. With
// stream=false it answers one sample whose precpu is taken one interval
// earlier (so CPU % is meaningful), unless one-shot=true. A stopped
// container answers a zero sample, as dockerd does.
func (mr *monitorRouter) getStats(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	c, err := mr.compute.Inspect(ctx, name)
	if err != nil {
		return containerErr("stats", name, err)
	}
	stream := httputils.BoolValueOrDefault(r, "stream", true)
	sample := func() (portlayer.StatsSample, error) {
		s, err := mr.m.Stats(ctx, c.ID)
		if errdefs.IsConflict(err) {
			return portlayer.StatsSample{Read: time.Now().UTC()}, nil
		}
		return s, err
	}
	pre, err := sample()
	if err != nil {
		return monitorErr(name, err)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	if !stream {
		cur := pre
		if !httputils.BoolValue(r, "one-shot") {
			select {
			case <-time.After(statsInterval):
			case <-ctx.Done():
				return nil
			}
			if cur, err = sample(); err != nil {
				return monitorErr(name, err)
			}
		} else {
			pre = portlayer.StatsSample{}
		}
		w.WriteHeader(http.StatusOK)
		return enc.Encode(StatsResponse(c.ID, c.Spec.Name, cur, pre))
	}
	w.WriteHeader(http.StatusOK)
	if err := enc.Encode(StatsResponse(c.ID, c.Spec.Name, pre, portlayer.StatsSample{})); err != nil {
		return nil
	}
	httputils.Flush(w)
	tick := time.NewTicker(statsInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := sample()
		if err != nil {
			return nil
		}
		if err := enc.Encode(StatsResponse(c.ID, c.Spec.Name, cur, pre)); err != nil {
			return nil
		}
		httputils.Flush(w)
		pre = cur
	}
}
