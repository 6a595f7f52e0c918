package tether

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vchproject/vch/internal/agent/wire"
)

// userHZ is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
const userHZ = 100

// containerPids returns the PIDs (tether's view) of the processes in the
// PID namespace of mainPid, with their PID inside that namespace.
func containerPids(mainPid int) (map[int]int, error) {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", mainPid))
	if err != nil {
		return nil, fmt.Errorf("tether: container PID namespace: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("tether: read /proc: %w", err)
	}
	out := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns/pid"))
		if err != nil || ns != want {
			continue
		}
		out[pid] = nsPid(pid)
	}
	return out, nil
}

// nsPid reads the innermost PID from /proc/<pid>/status (NSpid line).
func nsPid(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return pid
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			f := strings.Fields(v)
			if n, err := strconv.Atoi(f[len(f)-1]); err == nil {
				return n
			}
		}
	}
	return pid
}

// top lists the container's processes from /proc (proc(5) stat fields).
func top(mainPid int) (wire.Top, error) {
	pids, err := containerPids(mainPid)
	if err != nil {
		return wire.Top{}, err
	}
	t := wire.Top{TicksPerSecond: userHZ, BootTimeUnix: bootTime()}
	for hostPid, inner := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", hostPid))
		if err != nil {
			continue
		}
		// comm is in parentheses and may hold spaces: split after the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		comm := s[strings.IndexByte(s, '(')+1 : i]
		f := strings.Fields(s[i+1:])
		if len(f) < 20 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ttyNr, _ := strconv.Atoi(f[4])
		utime, _ := strconv.ParseUint(f[11], 10, 64)
		stime, _ := strconv.ParseUint(f[12], 10, 64)
		start, _ := strconv.ParseUint(f[19], 10, 64)
		p := wire.ProcessInfo{PID: inner, PPID: pids[ppid], StartTicks: start, CPUTicks: utime + stime, TTY: ttyName(ttyNr), Cmd: "[" + comm + "]"}
		if inner == 1 {
			p.PPID = 0
		}
		if st, err := os.Stat(fmt.Sprintf("/proc/%d", hostPid)); err == nil {
			p.UID = statUID(st)
		}
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", hostPid)); err == nil && len(cmd) > 0 {
			p.Cmd = strings.TrimRight(strings.ReplaceAll(string(cmd), "\x00", " "), " ")
		}
		t.Processes = append(t.Processes, p)
	}
	sort.Slice(t.Processes, func(i, j int) bool { return t.Processes[i].PID < t.Processes[j].PID })
	return t, nil
}

// ttyName decodes a tty_nr (proc(5)) for the common case of /dev/pts/N.
func ttyName(nr int) string {
	major, minor := (nr>>8)&0xfff, (nr&0xff)|((nr>>12)&0xfff00)
	switch {
	case nr == 0:
		return "?"
	case major >= 136 && major <= 143:
		return fmt.Sprintf("pts/%d", (major-136)*256+minor)
	default:
		return "?"
	}
}

func bootTime() int64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// stats samples the guest's CPU, memory and root disk counters, and the
// container cgroup's memory when it has one.
func stats(mainPid int) (wire.Stats, error) {
	var s wire.Stats
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && f[0] == "cpu" {
				var total, idle uint64
				for i, v := range f[1:] {
					n, _ := strconv.ParseUint(v, 10, 64)
					total += n
					if i == 3 || i == 4 { // idle, iowait
						idle += n
					}
				}
				s.CPUTotalNanos = total * (1e9 / userHZ)
				s.CPUBusyNanos = (total - idle) * (1e9 / userHZ)
			} else if len(f) > 0 && strings.HasPrefix(f[0], "cpu") {
				s.OnlineCPUs++
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var total, avail uint64
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			n, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "MemTotal:":
				total = n * 1024
			case "MemAvailable:":
				avail = n * 1024
			}
		}
		s.MemTotalBytes, s.MemUsedBytes = total, total-avail
	}
	if b, err := os.ReadFile("/proc/diskstats"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			// Every whole virtio disk counts (root and volumes), as
			// Docker's blkio counts all the container's devices.
			if len(f) > 9 && isWholeVirtioDisk(f[2]) {
				rd, _ := strconv.ParseUint(f[5], 10, 64)
				wr, _ := strconv.ParseUint(f[9], 10, 64)
				s.DiskReadBytes += rd * 512
				s.DiskWriteBytes += wr * 512
			}
		}
	}
	if mainPid > 0 {
		if pids, err := containerPids(mainPid); err == nil {
			s.Pids = len(pids)
		}
	}
	if cur, limit, inactive, ok := cgroupMemory(); ok {
		s.CgroupMemBytes, s.CgroupMemLimitBytes, s.CgroupInactiveFileBytes = cur, limit, inactive
	}
	s.Networks = netStats("/sys/class/net")
	return s, nil
}

// netStats reads the counters of the container's interfaces (named ethN
// by tether) under dir.
func netStats(dir string) map[string]wire.NetStats {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[string]wire.NetStats{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "eth") {
			continue
		}
		read := func(f string) uint64 {
			b, _ := os.ReadFile(filepath.Join(dir, name, "statistics", f))
			n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
		out[name] = wire.NetStats{
			RxBytes: read("rx_bytes"), RxPackets: read("rx_packets"), RxErrors: read("rx_errors"), RxDropped: read("rx_dropped"),
			TxBytes: read("tx_bytes"), TxPackets: read("tx_packets"), TxErrors: read("tx_errors"), TxDropped: read("tx_dropped"),
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// isWholeVirtioDisk reports whether name is a virtio-blk disk ("vda",
// "vdab"), not a partition ("vda1").
func isWholeVirtioDisk(name string) bool {
	rest, ok := strings.CutPrefix(name, "vd")
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}
