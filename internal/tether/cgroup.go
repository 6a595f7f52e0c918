package tether

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

// The container's cgroup (cgroup v2, Linux's
// Documentation/admin-guide/cgroup-v2.rst): every process of the
// container, main and execs, runs in containerCgroup, which carries the
// limits docker run sets (-m, --memory-swap, --cpus, --pids-limit);
// tether itself stays in the root cgroup, so a container that exhausts
// its limit is killed by the kernel's memory-cgroup OOM killer while
// tether serves on. The spawn helper moves itself in before it execs the
// program (so nothing the program starts escapes) and enters a cgroup
// namespace rooted there, as Docker's containers on cgroup v2 do: inside,
// /proc/self/cgroup reads "0::/" and /sys/fs/cgroup shows the container's
// own files (memory.max, cpu.max, …), read-only.
const (
	cgroupRoot      = "/sys/fs/cgroup"
	containerCgroup = cgroupRoot + "/container"
)

// cgroupControllers are enabled for the container's cgroup; each limit
// needs its own (memory for memory.max, cpu for cpu.max, pids for
// pids.max).
var cgroupControllers = []string{"memory", "cpu", "pids"}

// prepareCgroup mounts the cgroup2 hierarchy, enables the controllers
// for its children and creates containerCgroup, each step only if not
// done yet. It returns the controllers it could not enable. Tether calls
// it at boot (before a template is saved, so restored VMs skip it) and
// setupCgroup again at setup.
func prepareCgroup() error {
	if err := os.MkdirAll(cgroupRoot, 0o755); err != nil {
		return fmt.Errorf("tether: mkdir %s: %w", cgroupRoot, err)
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err != nil {
		if err := unix.Mount("cgroup2", cgroupRoot, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("tether: mount cgroup2: %w", err)
		}
	}
	enabled, _ := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.subtree_control"))
	var missing []string
	for _, c := range cgroupControllers {
		if slices.Contains(strings.Fields(string(enabled)), c) {
			continue
		}
		if err := writeCgroupFile(filepath.Join(cgroupRoot, "cgroup.subtree_control"), "+"+c); err != nil {
			missing = append(missing, c)
		}
	}
	if err := os.Mkdir(containerCgroup, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("tether: mkdir %s: %w", containerCgroup, err)
	}
	if len(missing) > 0 {
		return &missingControllers{names: missing}
	}
	return nil
}

// missingControllers names the controllers the guest kernel would not
// enable.
type missingControllers struct{ names []string }

func (m *missingControllers) Error() string {
	return fmt.Sprintf("tether: cgroup controllers %s unavailable in the guest kernel", strings.Join(m.names, ", "))
}

// setupCgroup makes sure the container's cgroup exists (prepareCgroup)
// and applies r's limits (nil: none). Idempotent. Missing controllers
// fail it only when limits were asked.
func setupCgroup(r *wire.Resources) error {
	var want wire.Resources
	if r != nil {
		want = *r
	}
	if err := prepareCgroup(); err != nil {
		var mc *missingControllers
		if !errors.As(err, &mc) || want != (wire.Resources{}) {
			return err
		}
	}
	if want == (wire.Resources{}) {
		return nil // a VM's one setup: its new cgroup has no limits yet
	}
	return applyResources(containerCgroup, want)
}

// cgroupFiles renders r as the cgroup files to write under a cgroup
// directory, in order: file name and content. A zero limit is "max".
// memory.swap.max is written only with a memory limit (Docker ties swap
// to -m); memory.max comes first so that a lower limit never sits below
// a swap limit it is checked against.
func cgroupFiles(r wire.Resources) [][2]string {
	limit := func(n int64) string {
		if n <= 0 {
			return "max"
		}
		return strconv.FormatInt(n, 10)
	}
	files := [][2]string{{"memory.max", limit(r.MemoryMaxBytes)}}
	if r.MemoryMaxBytes > 0 {
		swap := "max"
		if r.SwapMaxBytes >= 0 {
			swap = strconv.FormatInt(r.SwapMaxBytes, 10)
		}
		files = append(files, [2]string{"memory.swap.max", swap})
	} else {
		files = append(files, [2]string{"memory.swap.max", "max"})
	}
	period := r.CPUPeriodMicros
	if period <= 0 {
		period = 100000 // the kernel's default period, 100 ms
	}
	files = append(files, [2]string{"cpu.max", limit(r.CPUQuotaMicros) + " " + strconv.FormatInt(period, 10)})
	files = append(files, [2]string{"pids.max", limit(r.PidsMax)})
	return files
}

// applyResources writes r's limits into the cgroup at dir. A file the
// kernel lacks (memory.swap.max without swap accounting) is skipped
// when its value is "max", since that is its default.
func applyResources(dir string, r wire.Resources) error {
	for _, f := range cgroupFiles(r) {
		err := writeCgroupFile(filepath.Join(dir, f[0]), f[1])
		switch {
		case err == nil:
		case errors.Is(err, os.ErrNotExist) && strings.HasPrefix(f[1], "max"):
		default:
			return fmt.Errorf("tether: cgroup %s = %s: %w", f[0], f[1], err)
		}
	}
	return nil
}

// intoCgroup makes a process started with sys begin in the cgroup at dir
// (clone3's CLONE_INTO_CGROUP), so it need not move there; it returns
// the function that closes the directory once the process started. A
// cgroup that cannot be opened leaves sys as it was (the helper then
// moves itself, joinCgroup).
func intoCgroup(sys *syscall.SysProcAttr, dir string) func() {
	f, err := os.Open(dir)
	if err != nil {
		return func() {}
	}
	sys.UseCgroupFD, sys.CgroupFD = true, int(f.Fd())
	return func() { f.Close() }
}

// writeCgroupFile writes value to an existing cgroup interface file (one
// write, as the kernel parses each write whole); it never creates one.
func writeCgroupFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// oomKills is the container cgroup's oom_kill count (memory.events,
// hierarchical), or 0 when it has none.
func oomKills() int64 {
	b, err := os.ReadFile(filepath.Join(containerCgroup, "memory.events"))
	if err != nil {
		return 0
	}
	return keyedValue(string(b), "oom_kill")
}

// keyedValue reads "key value" lines (memory.events, memory.stat) and
// returns key's value, 0 when absent.
func keyedValue(text, key string) int64 {
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// cgroupMemory reads the container cgroup's memory.current, memory.max
// (0 for "max") and memory.stat's inactive_file, in bytes; ok false when
// there is no container cgroup.
func cgroupMemory() (current, limit, inactiveFile uint64, ok bool) {
	read := func(name string) (string, bool) {
		b, err := os.ReadFile(filepath.Join(containerCgroup, name))
		return strings.TrimSpace(string(b)), err == nil
	}
	cur, ok := read("memory.current")
	if !ok {
		return 0, 0, 0, false
	}
	current, _ = strconv.ParseUint(cur, 10, 64)
	if max, ok := read("memory.max"); ok && max != "max" {
		limit, _ = strconv.ParseUint(max, 10, 64)
	}
	if stat, ok := read("memory.stat"); ok {
		inactiveFile = uint64(keyedValue(stat, "inactive_file"))
	}
	return current, limit, inactiveFile, true
}

// joinCgroup is the spawn helper's step: move this process into the
// cgroup at dir, enter a cgroup namespace rooted there, and for a main
// process (mount true) mount that view at the container's /sys/fs/cgroup,
// read-only unless writable. Called before chroot, in tether's mount
// namespace.
func joinCgroup(dir string, mount, writable bool) error {
	// A helper cloned into the cgroup (intoCgroup) is there already.
	self, _ := os.ReadFile("/proc/self/cgroup")
	if strings.TrimSpace(string(self)) != "0::"+strings.TrimPrefix(dir, cgroupRoot) {
		if err := writeCgroupFile(filepath.Join(dir, "cgroup.procs"), "0"); err != nil {
			return fmt.Errorf("tether: join cgroup: %w", err)
		}
	}
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("tether: cgroup namespace: %w", err)
	}
	if !mount {
		return nil
	}
	p, err := inRoot(cgroupRoot)
	if err != nil {
		return err
	}
	if st, err := os.Stat(p); err != nil || !st.IsDir() {
		return nil // an image without /sys/fs/cgroup in its sysfs view: nothing to show
	}
	var fs unix.Statfs_t
	if unix.Statfs(p, &fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
		return nil // mounted by an earlier main process of this guest
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !writable {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("cgroup2", p, "cgroup2", flags, ""); err != nil {
		return fmt.Errorf("tether: mount the container's cgroup: %w", err)
	}
	return nil
}
