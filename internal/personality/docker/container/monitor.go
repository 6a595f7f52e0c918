package container

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
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
	fields, err := ParsePsArgs(r.Form.Get("ps_args"))
	if err != nil {
		return err
	}
	procs, err := mr.m.Top(r.Context(), name)
	if err != nil {
		return monitorErr(name, err)
	}
	rows := TopRows(procs, time.Now())
	if fields == nil {
		return httputils.WriteJSON(w, http.StatusOK, container.TopResponse{Titles: TopTitles, Processes: rows})
	}
	resp := container.TopResponse{Processes: make([][]string, len(rows))}
	for _, f := range fields {
		resp.Titles = append(resp.Titles, psFields[f].title)
	}
	for i, row := range rows {
		for _, f := range fields {
			resp.Processes[i] = append(resp.Processes[i], row[psFields[f].column])
		}
	}
	return httputils.WriteJSON(w, http.StatusOK, resp)
}

// psFields are the `ps -o` fields docker top can show from the guest's
// /proc: their header (procps spelling) and their column in TopRows.
var psFields = map[string]struct {
	title  string
	column int
}{
	"uid": {"UID", 0}, "user": {"USER", 0}, "pid": {"PID", 1}, "ppid": {"PPID", 2},
	"c": {"C", 3}, "stime": {"STIME", 4}, "start": {"STIME", 4}, "tty": {"TT", 5}, "tname": {"TTY", 5},
	"time": {"TIME", 6}, "cputime": {"TIME", 6}, "args": {"COMMAND", 7}, "cmd": {"CMD", 7}, "command": {"COMMAND", 7}, "comm": {"COMMAND", 7},
}

// ParsePsArgs reads docker top's ps arguments. Empty, "-ef", "-e -f",
// "aux" and similar selections of all processes give nil (ps -ef columns);
// "-o f1,f2" or "-eo f1,f2" (fields from psFields) selects columns.
// InvalidArgument for an unknown field or option, as ps would fail.
func ParsePsArgs(args string) ([]string, error) {
	f := strings.Fields(args)
	for i := 0; i < len(f); i++ {
		a := f[i]
		if a == "o" || (strings.HasPrefix(a, "-") && strings.HasSuffix(a, "o")) {
			if i+1 >= len(f) {
				return nil, httputils.InvalidArgument("Error running ps: option %s needs a field list", a)
			}
			var fields []string
			for _, name := range strings.Split(strings.Join(f[i+1:], ","), ",") {
				name = strings.ToLower(strings.TrimSpace(name))
				if name == "" {
					continue
				}
				if _, ok := psFields[name]; !ok {
					return nil, httputils.InvalidArgument("Error running ps: unknown field %q (vch shows %s)", name, knownPsFields())
				}
				fields = append(fields, name)
			}
			return fields, nil
		}
		switch strings.TrimLeft(a, "-") {
		case "e", "f", "ef", "fe", "A", "a", "u", "x", "aux", "ax", "au", "ux":
		default:
			return nil, httputils.InvalidArgument("Error running ps: option %q is not supported by vch", a)
		}
	}
	return nil, nil
}

func knownPsFields() string {
	names := make([]string, 0, len(psFields))
	for k := range psFields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// StatsResponse renders a sample (and the previous one, for CPU deltas) in
// Docker's shape: cpu_stats.cpu_usage.total_usage is the guest's busy CPU
// time and system_cpu_usage its total CPU time, so the CLI's CPU % is the
// share of the VM's vCPUs in use; memory usage is the container cgroup's
// (its memory.current, with memory.stat's inactive_file, which the CLI
// subtracts, as cgroup v2 stats give it) against its -m, or the guest's
// RAM without one.
func StatsResponse(id, name string, cur, pre portlayer.StatsSample) container.StatsResponse {
	cpu := func(s portlayer.StatsSample) container.CPUStats {
		return container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: s.CPUBusyNanos}, SystemUsage: s.CPUTotalNanos, OnlineCPUs: uint32(s.OnlineCPUs)}
	}
	resp := container.StatsResponse{
		ID: id, Name: "/" + name, OSType: "linux", Read: cur.Read, PreRead: pre.Read,
		CPUStats: cpu(cur), PreCPUStats: cpu(pre),
		MemoryStats: container.MemoryStats{Usage: cur.MemUsedBytes, Limit: cur.MemLimitBytes, Stats: map[string]uint64{"inactive_file": cur.MemInactiveFileBytes}},
		PidsStats:   container.PidsStats{Current: uint64(cur.Pids)},
		BlkioStats: container.BlkioStats{IoServiceBytesRecursive: []container.BlkioStatEntry{
			{Major: 254, Minor: 0, Op: "read", Value: cur.DiskReadBytes},
			{Major: 254, Minor: 0, Op: "write", Value: cur.DiskWriteBytes},
		}},
	}
	for name, n := range cur.Networks {
		if resp.Networks == nil {
			resp.Networks = map[string]container.NetworkStats{}
		}
		resp.Networks[name] = container.NetworkStats{RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDropped: n.RxDropped,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDropped: n.TxDropped}
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
