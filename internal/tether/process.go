package tether

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/tether/spool"
)

// defaultPath is the PATH Docker sets when the image has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// drainLimit bounds how long tether waits, after a process exits, for its
// output pipes to reach EOF (a background child may hold them open).
const drainLimit = 2 * time.Second

// startError is a process start failure with Docker's exit code for it.
type startError struct {
	msg  string
	code int
}

func (e *startError) Error() string { return e.msg }

// process is one running container process.
type process struct {
	pid    int
	ptmx   *os.File      // nil without a TTY
	ptyOut io.ReadCloser // reads ptmx (a pollReader); nil without a TTY
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr io.ReadCloser
	exited <-chan unix.WaitStatus

	// nsInit is a main process (PID 1 of its namespace), started at
	// started; its young signals are held (signalhold.go) in held until
	// gone is closed (the process has exited).
	nsInit  bool
	started time.Time
	held    signalQueue
	gone    chan struct{}
}

// lookPath finds file in the container's PATH the way execvp does, resolving
// every candidate inside the container root. Errors carry Go's os/exec texts,
// which Docker users know: `exec: "x": executable file not found in $PATH`.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		p, err := inRoot(file)
		if err != nil {
			return "", &startError{msg: fmt.Sprintf("exec: %q: %v", file, err), code: 127}
		}
		if _, err := os.Stat(p); err != nil {
			return "", &startError{msg: fmt.Sprintf("exec: %q: stat %s: no such file or directory", file, file), code: 127}
		}
		return file, nil
	}
	pathEnv := defaultPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		cand := path.Join(dir, file)
		p, err := inRoot(cand)
		if err != nil {
			continue
		}
		st, err := os.Stat(p)
		if err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return cand, nil
		}
	}
	return "", &startError{msg: fmt.Sprintf("exec: %q: executable file not found in $PATH", file), code: 127}
}

// resolveUser resolves a Docker user spec against the container's own
// /etc/passwd and /etc/group, and adds the groups of extra (names or
// numeric IDs, as runc's additional groups) to its supplementary ones.
func resolveUser(spec string, extra []string) (*user.ExecUser, error) {
	passwd, err := inRoot("/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := inRoot("/etc/group")
	if err != nil {
		return nil, err
	}
	defaults := &user.ExecUser{Uid: 0, Gid: 0, Home: "/"}
	u, err := user.GetExecUserPath(spec, defaults, passwd, group)
	if err != nil {
		// The library's own text, as dockerd passes it on ("unable to
		// find user x: no matching entries in passwd file", "unable to
		// find group g: …").
		return nil, &startError{msg: err.Error(), code: 126}
	}
	if len(extra) > 0 {
		gids, err := user.GetAdditionalGroupsPath(extra, group)
		if err != nil {
			return nil, &startError{msg: err.Error(), code: 126}
		}
		for _, g := range gids {
			if !slices.Contains(u.Sgids, g) {
				u.Sgids = append(u.Sgids, g)
			}
		}
	}
	return u, nil
}

// buildEnv adds PATH and HOME when the spec lacks them, as Docker does.
func buildEnv(env []string, home string) []string {
	out := append([]string(nil), env...)
	has := func(k string) bool {
		for _, e := range out {
			if strings.HasPrefix(e, k+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		out = append(out, "PATH="+defaultPath)
	}
	if !has("HOME") {
		out = append(out, "HOME="+home)
	}
	return out
}

// processSecurity is what Setup says of every process: no new privileges
// (PR_SET_NO_NEW_PRIVS), whether the cgroup mount is writable, and the
// paths the main process's helper masks and makes read-only.
type processSecurity struct {
	noNewPrivs, writableCgroup bool
	masked, readonly           []string
	seccomp                    []byte // OCI linux.seccomp JSON; nil: none
}

// startProcess starts p inside the container root as PID 1 of a new PID
// namespace, as Docker's runtime does: the process sees itself as PID 1, signals it has no
// handler for are ignored, and when it exits every process it left behind
// is killed. tether re-executes itself as a short-lived spawn helper in
// the new namespaces (see spawn.go); the helper execs the user's program,
// which so keeps PID 1. A main process becomes z, a restored template's
// waiting helper, when there is one (zygote.go). The returned process's exit status arrives on its
// exited channel via the reaper.
//
// An exec process (p.Exec) joins the PID namespace of mainPid instead:
// the spawn helper is forked from an OS thread that entered that namespace
// (setns on a PID namespace changes the namespace of the thread's future
// children only); the thread is never returned to the Go scheduler.
//
// cgroup, when not empty, is the container's cgroup directory: the helper
// joins it before the exec (cgroup.go); sec is the container's security
// settings.
func startProcess(r *reaper, z *zygote, p wire.Process, mainPid int, cgroup string, sec processSecurity) (*process, error) {
	if len(p.Args) == 0 {
		return nil, &startError{msg: "no command specified", code: 126}
	}
	u, err := resolveUser(p.User, p.Groups)
	if err != nil {
		return nil, err
	}
	env := buildEnv(p.Env, u.Home)
	argv0, err := lookPath(p.Args[0], env)
	if err != nil {
		return nil, err
	}
	dir := p.Dir
	if dir == "" {
		dir = "/"
	}
	if !path.IsAbs(dir) {
		return nil, &startError{msg: fmt.Sprintf("the working directory '%s' is invalid, it needs to be an absolute path", dir), code: 126}
	}
	if hp, err := inRoot(dir); err == nil {
		// Docker creates a missing working directory for the main process
		// but not for an exec, which fails like runc's chdir.
		st, serr := os.Stat(hp)
		switch {
		case serr == nil && !st.IsDir():
			return nil, &startError{msg: fmt.Sprintf("chdir to cwd (%q) set in config.json failed: not a directory", dir), code: 126}
		case serr != nil && p.Exec:
			return nil, &startError{msg: fmt.Sprintf("chdir to cwd (%q) set in config.json failed: no such file or directory", dir), code: 126}
		case serr != nil:
			if err := os.MkdirAll(hp, 0o755); err != nil {
				return nil, &startError{msg: fmt.Sprintf("mkdir %s: %v", dir, errors.Unwrap(err)), code: 126}
			}
		}
	}
	// The primary group leads the supplementary ones, as dockerd puts it
	// in AdditionalGids (daemon/oci_linux.go getUser), so `id` shows it.
	groups := []int{u.Gid}
	for _, g := range u.Sgids {
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	spec := spawnSpec{Path: argv0, Args: p.Args, Env: env, Dir: dir, UID: u.Uid, GID: u.Gid, Groups: groups, Exec: p.Exec, Init: p.Init && !p.Exec, Tty: p.Tty, Cgroup: cgroup,
		NoNewPrivs: sec.noNewPrivs, CgroupWritable: sec.writableCgroup, Seccomp: sec.seccomp}
	if !p.Exec {
		spec.MaskedPaths, spec.ReadonlyPaths = sec.masked, sec.readonly
	}
	sys := &syscall.SysProcAttr{Setsid: true}
	if !p.Exec {
		sys.Cloneflags = syscall.CLONE_NEWPID
	} else if mainPid <= 0 {
		return nil, &startError{msg: "container is not running", code: 126}
	}
	proc := &process{}
	var childFiles []*os.File
	var closeAfter []*os.File
	if p.Tty {
		ptmx, tty, err := openPty()
		if err != nil {
			return nil, err
		}
		if p.Rows > 0 && p.Cols > 0 {
			_ = pty.Setsize(ptmx, &pty.Winsize{Rows: uint16(p.Rows), Cols: uint16(p.Cols)})
		}
		out, err := newPollReaderDup(int(ptmx.Fd()))
		if err != nil {
			ptmx.Close()
			tty.Close()
			return nil, fmt.Errorf("tether: pty: %w", err)
		}
		sys.Setctty = true
		sys.Ctty = 0
		childFiles = []*os.File{tty, tty, tty}
		closeAfter = []*os.File{tty}
		proc.ptmx, proc.ptyOut = ptmx, out
	} else {
		var stdinR *os.File
		if p.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, fmt.Errorf("tether: pipe: %w", err)
			}
			growPipe(w)
			stdinR, proc.stdin = r, w
		} else {
			stdinR, err = os.Open(os.DevNull)
			if err != nil {
				return nil, fmt.Errorf("tether: open /dev/null: %w", err)
			}
		}
		outR, outW, err := newPollPipe()
		if err != nil {
			return nil, fmt.Errorf("tether: pipe: %w", err)
		}
		errR, errW, err := newPollPipe()
		if err != nil {
			outR.Close()
			outW.Close()
			return nil, fmt.Errorf("tether: pipe: %w", err)
		}
		growPipe(outW)
		growPipe(errW)
		proc.stdout, proc.stderr = outR, errR
		childFiles = []*os.File{stdinR, outW, errW}
		closeAfter = childFiles
	}
	// The helper reports a failure before exec on this pipe; a successful
	// exec closes it (close-on-exec) with nothing written.
	statusR, statusW, err := os.Pipe()
	if err != nil {
		proc.closeAll()
		return nil, fmt.Errorf("tether: pipe: %w", err)
	}
	defer statusR.Close()
	childFiles = append(childFiles, statusW)
	closeAfter = append(closeAfter, statusW)
	if cgroup != "" {
		defer intoCgroup(sys, cgroup)()
	}
	attr := &os.ProcAttr{Dir: "/", Env: []string{spawnEnv + "=" + string(wire.Encode(spec))}, Files: childFiles, Sys: sys}
	var osp *os.Process
	pid, zygoteUsed := 0, false
	if !p.Exec {
		// stdin, stdout, stderr, status: as the helper gets them.
		pid, zygoteUsed = z.use(spec, childFiles)
	}
	switch {
	case zygoteUsed:
	case p.Exec:
		osp, err = startInPidNamespace(mainPid, attr)
	default:
		osp, err = os.StartProcess(selfPath, []string{selfPath, spawnArg}, attr)
	}
	for _, f := range closeAfter {
		f.Close()
	}
	if err != nil {
		proc.closeAll()
		return nil, fmt.Errorf("tether: spawn helper: %w", err)
	}
	if osp != nil {
		pid = osp.Pid
	}
	exited := r.wait(pid)
	if osp != nil {
		_ = osp.Release() // the reaper collects it; Release also clears osp.Pid
	}
	report, _ := io.ReadAll(statusR)
	if len(report) > 0 {
		<-exited
		proc.closeAll()
		var se wire.StartError
		if json.Unmarshal(report, &se) != nil {
			se = wire.StartError{Message: string(report), ExitCode: 126}
		}
		return nil, &startError{msg: se.Message, code: se.ExitCode}
	}
	proc.pid = pid
	proc.exited = exited
	proc.nsInit = !p.Exec
	proc.started = time.Now()
	proc.gone = make(chan struct{})
	return proc, nil
}

func (p *process) closeAll() {
	for _, c := range []io.Closer{p.ptyOut, p.ptmx, p.stdin, p.stdout, p.stderr} {
		if c != nil && !isNilFile(c) {
			c.Close()
		}
	}
}

func isNilFile(c io.Closer) bool {
	f, ok := c.(*os.File)
	return ok && f == nil
}

// stdinWriter is where the process's stdin goes: the pipe's write end,
// the terminal (never closed by the host: see proctable), or nil without
// stdin.
func (p *process) stdinWriter() io.WriteCloser {
	switch {
	case p.ptmx != nil:
		return ttyInput{p.ptmx}
	case p.stdin != nil:
		return p.stdin
	default:
		return nil
	}
}

// ttyInput writes to a terminal; closing it leaves the terminal open (the
// output side still reads it).
type ttyInput struct{ f *os.File }

func (t ttyInput) Write(b []byte) (int, error) { return t.f.Write(b) }
func (t ttyInput) Close() error                { return nil }

// feed copies the process's output into the spools until EOF and returns
// the exit code once the process has exited and its output is in (bounded
// by drainLimit after the exit, for background children that keep the
// pipes open; time spent waiting for a full spool — the host away — does
// not count).
func (p *process) feed(stdout, stderr *spool.Spool) int {
	var wg sync.WaitGroup
	var busy atomic.Int32 // copiers waiting on a full spool
	copyOut := func(dst *spool.Spool, src io.Reader) {
		defer wg.Done()
		for {
			// Read straight into the spool's ring: under TCG every
			// copy of the output is guest CPU time.
			busy.Add(1)
			room, werr := dst.Space(readBytes)
			busy.Add(-1)
			if werr != nil {
				return
			}
			n, err := src.Read(room)
			if n > 0 {
				if dst.Commit(n) != nil {
					return
				}
			}
			if err != nil {
				return
			}
			if n < shortRead && n < len(room) {
				// A short read that did not fill the room (which may
				// itself be short, at the ring's end) is a program
				// writing little at a time (a line per write): let more
				// gather before the next.
				time.Sleep(gatherDelay)
			}
		}
	}
	if p.ptmx != nil {
		wg.Add(1)
		go copyOut(stdout, p.ptyOut)
	} else {
		wg.Add(2)
		go copyOut(stdout, p.stdout)
		go copyOut(stderr, p.stderr)
	}
	ws := <-p.exited
	close(p.gone)
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	timer := time.NewTimer(drainLimit)
	defer timer.Stop()
wait:
	for {
		select {
		case <-drained:
			break wait
		case <-timer.C:
			if busy.Load() > 0 {
				timer.Reset(drainLimit)
				continue
			}
			break wait
		}
	}
	p.closeAll()
	<-drained
	return exitCode(ws)
}

// Signal delivers a signal to the process (proctable.Controls). A main
// process's signal that it has no handler for yet is held for it while it
// is young (see signalhold.go): Signal then returns nil at once and the
// signal follows. Signals keep their order.
func (p *process) Signal(n int) error {
	if p.pid <= 0 {
		return fmt.Errorf("tether: signal %d: no process: %w", n, unix.ESRCH)
	}
	if p.nsInit && (holds(n, p.started) || !p.held.empty()) && n != int(unix.SIGKILL) {
		select {
		case <-p.gone:
			return fmt.Errorf("tether: signal %d to %d: %w", n, p.pid, unix.ESRCH)
		default:
		}
		if caught, err := handlesSignal(p.pid, n); err != nil || !caught || !p.held.empty() {
			p.held.send(p.pid, n, p.started, p.gone)
			return nil
		}
	}
	if err := unix.Kill(p.pid, unix.Signal(n)); err != nil {
		return fmt.Errorf("tether: signal %d to %d: %w", n, p.pid, err)
	}
	return nil
}

// Resize sets the TTY size; no-op without a TTY (proctable.Controls).
func (p *process) Resize(rows, cols uint32) {
	if p.ptmx != nil {
		_ = pty.Setsize(p.ptmx, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)})
	}
}

// startInPidNamespace starts the spawn helper in the PID namespace of pid.
func startInPidNamespace(pid int, attr *os.ProcAttr) (*os.Process, error) {
	type result struct {
		p   *os.Process
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread's namespace for children is changed,
		// so it ends with this goroutine instead of serving others.
		runtime.LockOSThread()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			done <- result{nil, fmt.Errorf("tether: container PID namespace: %w", err)}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWPID); err != nil {
			done <- result{nil, fmt.Errorf("tether: enter container PID namespace: %w", err)}
			return
		}
		p, err := os.StartProcess(selfPath, []string{selfPath, spawnArg}, attr)
		done <- result{p, err}
	}()
	r := <-done
	return r.p, r.err
}

// openPty allocates a pseudo-terminal in the container's own devpts
// instance (mounted newinstance at /dev/pts), so the process sees it as
// /dev/pts/N inside the container. Returns the master and the slave.
func openPty() (*os.File, *os.File, error) {
	ptmxPath, err := inRoot("/dev/pts/ptmx")
	if err != nil {
		return nil, nil, err
	}
	// Opened blocking and made an *os.File by os.NewFile, so it is never
	// in Go's netpoller (see pollReader): the output is read through a
	// pollReader of its own descriptor.
	fd, err := unix.Open(ptmxPath, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("tether: open pty: %w", &os.PathError{Op: "open", Path: ptmxPath, Err: err})
	}
	ptmx := os.NewFile(uintptr(fd), ptmxPath)
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("tether: unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("tether: pty number: %w", err)
	}
	slavePath, err := inRoot(fmt.Sprintf("/dev/pts/%d", n))
	if err != nil {
		ptmx.Close()
		return nil, nil, err
	}
	tty, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("tether: open pty slave: %w", err)
	}
	return ptmx, tty, nil
}

// readBytes is the most one read of a process's output takes (256 KiB):
// a program writing in large blocks into its 1 MiB pipe is read, spooled
// and sent in a quarter as many steps, each a wake-up of the guest's one
// vCPU, as with 32 KiB reads (docker exec of `dd bs=1M count=100` to the
// client: 10.6 → 6.2 s, medians of 10 A/B, 2026-12-03).
const readBytes = 256 << 10

// shortRead is a read small enough to be a program writing little at a
// time (under 16 KiB).
const shortRead = 16 << 10

// gatherDelay is how long tether waits after a short read of a process's
// output before reading again (1 ms: no one sees it in a terminal). On a
// single emulated vCPU the guest otherwise switches to tether for every
// line a program writes, and every line becomes a frame and a write on
// the port: `yes | head -c 100M` took 67 s to the client against 17 s to
// /dev/null.
const gatherDelay = time.Millisecond

// pipeBytes is the capacity tether gives a process's stdio pipes (1 MiB,
// Linux's default /proc/sys/fs/pipe-max-size) instead of the default
// 64 KiB. Each time a pipe fills or empties, the guest switches between
// the process and tether, and under emulation a switch costs tether the
// translated-address cache (QEMU's software TLB) of its whole working
// set: measured, 64 KiB pipes held stdout to about a sixth of what
// tether's own file reads reach on the same channel.
const pipeBytes = 1 << 20

// growPipe sets f's pipe capacity to pipeBytes; a refusal leaves it as is.
func growPipe(f *os.File) {
	if sc, err := f.SyscallConn(); err == nil {
		_ = sc.Control(func(fd uintptr) {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeBytes)
		})
	}
}
