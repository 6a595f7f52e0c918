package tether

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	bpf "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/tether/seccomp"
)

// Spawn helper: tether re-executes itself with spawnArg inside the new PID
// namespace; the helper mounts that namespace's /proc over the container's
// /proc (a proc mount shows the PID namespace of the process that mounts
// it; tether's own mount namespace is kept so later processes can join the
// container's PID namespace and see the same /proc), enters
// the container root, drops to the user's credentials and execs the
// program, which so becomes PID 1 of the namespace.
const (
	// selfPath is tether's own binary inside the initramfs.
	selfPath = "/init"
	// spawnArg selects the helper mode.
	spawnArg = "vch-spawn"
	// spawnEnv carries the JSON spawnSpec to the helper.
	spawnEnv = "VCH_SPAWN"
	// statusFD is the helper's end of the start-status pipe.
	statusFD = 3
)

// spawnSpec is what the helper needs, already resolved by tether: the
// program's path inside the container, its argv, env, working directory
// and credentials.
type spawnSpec struct {
	Path   string   `json:"path"`
	Args   []string `json:"args"`
	Env    []string `json:"env"`
	Dir    string   `json:"dir"`
	UID    int      `json:"uid"`
	GID    int      `json:"gid"`
	Groups []int    `json:"groups,omitempty"`
	// Exec: the helper runs in the container's existing PID namespace and
	// must not mount /proc.
	Exec bool `json:"exec,omitempty"`
	// Init: stay as PID 1, run the program as a child (see runInit).
	Init bool `json:"init,omitempty"`
	// Tty: the program gets the terminal as its foreground process group.
	Tty bool `json:"tty,omitempty"`
	// Cgroup is the cgroup directory the helper joins before it execs
	// (joinCgroup); empty: it stays in tether's. CgroupWritable mounts
	// the main process's view of it read-write.
	Cgroup         string `json:"cgroup,omitempty"`
	CgroupWritable bool   `json:"cgroup_writable,omitempty"`
	// NoNewPrivs sets PR_SET_NO_NEW_PRIVS before the exec.
	NoNewPrivs bool `json:"no_new_privs,omitempty"`
	// Seccomp is the container's syscall filter (OCI linux.seccomp JSON),
	// installed last before the exec (package seccomp).
	Seccomp []byte `json:"seccomp,omitempty"`
	// MaskedPaths and ReadonlyPaths are applied once the main process's
	// /proc is mounted (maskPaths); execs see the same mounts.
	MaskedPaths   []string `json:"masked_paths,omitempty"`
	ReadonlyPaths []string `json:"readonly_paths,omitempty"`
}

// IsSpawnHelper reports whether this process was started as the spawn
// helper (argv[1] is the helper's marker).
func IsSpawnHelper() bool { return len(os.Args) > 1 && os.Args[1] == spawnArg }

// RunSpawnHelper runs the helper; it never returns. On failure it writes a
// wire.StartError to the status pipe and exits with its code.
func RunSpawnHelper() {
	// The cgroup namespace joinCgroup enters is the calling thread's;
	// the exec must happen on that thread.
	runtime.LockOSThread()
	fail := func(code int, msg string) {
		f := os.NewFile(statusFD, "status")
		_, _ = f.Write(wire.Encode(wire.StartError{Message: msg, ExitCode: code}))
		os.Exit(code)
	}
	var spec spawnSpec
	if os.Getenv(zygoteEnv) != "" {
		var err error
		if spec, err = awaitSpec(); err != nil {
			fail(126, err.Error())
		}
	} else if err := json.Unmarshal([]byte(os.Getenv(spawnEnv)), &spec); err != nil {
		unix.CloseOnExec(statusFD)
		fail(126, "tether: bad spawn spec: "+err.Error())
	}
	unix.CloseOnExec(statusFD)
	if !spec.Exec {
		procDir, err := inRoot("/proc")
		if err != nil {
			fail(126, err.Error())
		}
		if err := unix.Mount("proc", procDir, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			fail(126, fmt.Sprintf("tether: mount /proc: %v", err))
		}
		// After /proc: masks set before it would lie under the new mount.
		if err := maskPaths(spec.MaskedPaths, spec.ReadonlyPaths); err != nil {
			fail(126, err.Error())
		}
	}
	if spec.Cgroup != "" {
		if err := joinCgroup(spec.Cgroup, !spec.Exec, spec.CgroupWritable); err != nil {
			fail(126, err.Error())
		}
	}
	if err := unix.Chroot(RootMount); err != nil {
		fail(126, fmt.Sprintf("tether: chroot: %v", err))
	}
	if err := unix.Chdir(spec.Dir); err != nil {
		fail(126, fmt.Sprintf("chdir to cwd (%q) set in config.json failed: %v", spec.Dir, err))
	}
	var filter *bpf.Policy
	if len(spec.Seccomp) > 0 {
		var err error
		if filter, err = seccomp.Policy(spec.Seccomp); err != nil {
			fail(126, err.Error())
		}
		if !spec.NoNewPrivs {
			// Installed while the helper still has CAP_SYS_ADMIN (as runc
			// does without no_new_privs); it then filters the credential
			// calls below too.
			if err := seccomp.Load(filter); err != nil {
				fail(126, fmt.Sprintf("tether: seccomp: %v", err))
			}
			filter = nil
		}
	}
	// syscall's credential calls apply to every thread of the Go runtime.
	if err := syscall.Setgroups(spec.Groups); err != nil {
		fail(126, fmt.Sprintf("setgroups: %v", err))
	}
	if err := syscall.Setgid(spec.GID); err != nil {
		fail(126, fmt.Sprintf("setgid %d: %v", spec.GID, err))
	}
	if err := syscall.Setuid(spec.UID); err != nil {
		fail(126, fmt.Sprintf("setuid %d: %v", spec.UID, err))
	}
	if spec.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fail(126, fmt.Sprintf("tether: no_new_privs: %v", err))
		}
	}
	if filter != nil {
		// With no_new_privs the filter goes last, as unprivileged.
		if err := seccomp.Load(filter); err != nil {
			fail(126, fmt.Sprintf("tether: seccomp: %v", err))
		}
	}
	if spec.Init {
		runInit(spec) // never returns
	}
	err := syscall.Exec(spec.Path, spec.Args, spec.Env)
	code := 126
	if errors.Is(err, unix.ENOENT) {
		code = 127
	}
	fail(code, fmt.Sprintf("exec: %q: %v", spec.Args[0], err))
}
