package compute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/portlayer"
)

// execState is where one exec's lifecycle stands (execRec.state):
//
//	execCreated --StartExec--> execStarting --the guest started it--> execRunning --exit--> execExited
//	                                 \--the container does not run, or the guest refused--> execExited
//
// An exec starts once: StartExec in any state but execCreated is
// Conflict (ReasonRunning while execRunning, ReasonAlreadyRan
// otherwise). An exec whose daemon stops while it runs stays
// execRunning: it runs on in the guest, and its record goes with the
// daemon.
type execState int

const (
	// execCreated: recorded by CreateExec, not started.
	execCreated execState = iota
	// execStarting: StartExec took it and is asking the guest.
	execStarting
	// execRunning: its process runs in the guest (ExecInfo.Running).
	execRunning
	// execExited: it ended or could not start; exitCode is set.
	execExited
)

// execRec is one exec: a process run in a running container's PID
// namespace. Kept in memory with its container.
type execRec struct {
	id string
	c  *container

	mu       sync.Mutex
	spec     portlayer.ExecSpec
	state    execState
	exitCode *int           // set once execExited
	proc     *agent.Process // while execRunning
}

func (e *execRec) info() portlayer.ExecInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return portlayer.ExecInfo{ID: e.id, ContainerID: e.c.id, Spec: e.spec, Running: e.state == execRunning, ExitCode: e.exitCode}
}

// finish records the exec's end with code: execExited.
func (e *execRec) finish(code int) {
	e.mu.Lock()
	e.state = execExited
	e.exitCode = &code
	e.proc = nil
	e.mu.Unlock()
}

// Execs is compute's exec area: processes started beside a running
// container's main process, each in its own guest session, and the
// resizing of a container's or an exec's TTY. It implements
// portlayer.Execs and portlayer.ExecForgetter; get it with
// Service.Execs. Its records live in memory only: an exec does not
// outlive the daemon that started it.
type Execs struct {
	// What the area needs of the service: its containers, its events,
	// whether it is closing, its log.
	lookup   func(idOrName string) (*container, error)
	event    func(action string, rec portlayer.Container, extra map[string]string)
	stopping func() bool
	logger   *slog.Logger

	mu   sync.Mutex
	byID map[string]*execRec // by exec ID
}

var _ portlayer.Execs = (*Execs)(nil)

// Execs returns the service's exec area.
func (s *Service) Execs() *Execs { return s.execs }

// CreateExec implements portlayer.Execs.
func (x *Execs) CreateExec(ctx context.Context, idOrName string, spec portlayer.ExecSpec) (string, error) {
	if len(spec.Args) == 0 {
		return "", portlayer.Invalid(portlayer.KindExec, "Args", "", portlayer.ReasonRequired, "compute: no exec command to run")
	}
	c, err := x.lookup(idOrName)
	if err != nil {
		return "", err
	}
	if spec.WorkingDir != "" && !strings.HasPrefix(spec.WorkingDir, "/") {
		return "", portlayer.Invalid(portlayer.KindExec, "WorkingDir", spec.WorkingDir, portlayer.ReasonNotAbsolute, "compute: working directory "+strconv.Quote(spec.WorkingDir)+" is not an absolute path")
	}
	c.mu.Lock()
	base := c.rec.Spec
	base.Env = append(append([]string(nil), base.Env...), spec.Env...)
	base.Args = spec.Args
	if err := checkProcessSize(processFor(base)); err != nil {
		c.mu.Unlock()
		return "", err
	}
	running := c.guest != nil && c.rec.State.Status == portlayer.StatusRunning
	paused := c.rec.State.Status == portlayer.StatusPaused
	c.mu.Unlock()
	if paused {
		return "", portlayer.ContainerState("exec", c.id, portlayer.ReasonPaused)
	}
	if !running {
		return "", portlayer.ContainerState("exec", c.id, portlayer.ReasonNotRunning)
	}
	if spec.User != "" {
		// The user must exist in the container now, so a bad one fails at
		// the exec's creation and not after the client attached. A guest
		// agent that cannot answer is not asked.
		c.mu.Lock()
		g := c.guest
		c.mu.Unlock()
		if g != nil {
			uctx, cancel := context.WithTimeout(ctx, monitorTimeout)
			err := g.CheckUser(uctx, spec.User)
			cancel()
			var ue *agent.UserError
			if errors.As(err, &ue) {
				return "", &portlayer.UserError{Message: ue.Message}
			}
		}
	}
	e := &execRec{id: newID(), c: c, spec: spec}
	x.mu.Lock()
	x.byID[e.id] = e
	x.mu.Unlock()
	x.event("exec_create: "+strings.Join(spec.Args, " "), c.record(), map[string]string{"execID": e.id})
	return e.id, nil
}

func (x *Execs) lookupExec(id string) (*execRec, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.byID[id]; ok {
		return e, nil
	}
	return nil, portlayer.NoSuchExec(id)
}

// InspectExec implements portlayer.Execs.
func (x *Execs) InspectExec(ctx context.Context, execID string) (portlayer.ExecInfo, error) {
	e, err := x.lookupExec(execID)
	if err != nil {
		return portlayer.ExecInfo{}, err
	}
	return e.info(), nil
}

// StartExec implements portlayer.Execs.
func (x *Execs) StartExec(ctx context.Context, execID string, opts portlayer.ExecStartOptions) error {
	e, err := x.lookupExec(execID)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if e.state != execCreated {
		e.mu.Unlock()
		if e.info().Running {
			return portlayer.ExecState(e.id, portlayer.ReasonRunning)
		}
		return portlayer.Refused(portlayer.ClassConflict, portlayer.KindExec, e.id, portlayer.ReasonAlreadyRan, "compute: exec "+e.id+" has run and ended")
	}
	e.state = execStarting
	spec := e.spec
	e.mu.Unlock()

	c := e.c
	c.mu.Lock()
	g, rec := c.guest, c.rec
	c.mu.Unlock()
	if g == nil || rec.State.Status != portlayer.StatusRunning {
		e.finish(126)
		return portlayer.ContainerState("exec", c.id, portlayer.ReasonNotRunning)
	}
	// An exec's environment is the container's (HOSTNAME, TERM with a
	// TTY, its Env), then the exec's own, so it sees what the main
	// process sees; working dir and user default to the container's.
	base := rec.Spec
	base.Tty = spec.Tty
	wp := processFor(base)
	wp.Args, wp.Stdin, wp.Exec = spec.Args, spec.AttachStdin, true
	// Its output goes to the client as it comes; nothing resumes it.
	wp.ID, wp.Resumable = e.id, false
	wp.Env = append(wp.Env, spec.Env...)
	if spec.WorkingDir != "" {
		wp.Dir = spec.WorkingDir
	}
	if spec.User != "" {
		wp.User = spec.User
	}
	wp.Rows, wp.Cols = uint32(opts.Rows), uint32(opts.Cols)
	if opts.Rows == 0 || opts.Cols == 0 {
		wp.Rows, wp.Cols = uint32(spec.ConsoleRows), uint32(spec.ConsoleCols)
	}
	proc, err := g.Start(ctx, wp)
	if err != nil {
		var se *agent.StartError
		if errors.As(err, &se) {
			e.finish(se.ExitCode)
			return portlayer.StartFailed(portlayer.KindExec, e.id, se.Message, se.ExitCode)
		}
		e.finish(126)
		return fmt.Errorf("compute: exec %s: %w", e.id, err)
	}
	e.mu.Lock()
	e.state, e.proc = execRunning, proc
	e.mu.Unlock()
	x.logger.Info("exec started", "container", c.id, "exec", e.id)
	x.event("exec_start: "+strings.Join(spec.Args, " "), rec, map[string]string{"execID": e.id})

	stdout, stderr := opts.Stdout, opts.Stderr
	if stdout == nil || opts.Detach {
		stdout = io.Discard
	}
	if stderr == nil || opts.Detach {
		stderr = io.Discard
	}
	if spec.AttachStdin && opts.Stdin != nil && !opts.Detach {
		go func() {
			w := proc.Stdin()
			_, _ = io.Copy(w, opts.Stdin)
			_ = w.Close()
		}()
	} else if spec.AttachStdin {
		_ = proc.Stdin().Close()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.CopyBuffer(stdout, proc.Stdout(), make([]byte, outputChunk)) }()
	go func() { defer wg.Done(); _, _ = io.CopyBuffer(stderr, proc.Stderr(), make([]byte, outputChunk)) }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, err := proc.Wait(context.Background())
		wg.Wait()
		if err != nil && x.stopping() {
			return // the daemon stops; the exec runs on in the guest
		}
		if err != nil {
			code = 137 // the container (and with it its PID namespace) ended
		}
		e.finish(code)
		x.logger.Info("exec exited", "container", c.id, "exec", e.id, "exit_code", code)
		x.event("exec_die", rec, map[string]string{"execID": e.id, "exitCode": strconv.Itoa(code)})
	}()
	if opts.Detach {
		return nil
	}
	var expired <-chan time.Time
	if opts.Timeout > 0 {
		t := time.NewTimer(opts.Timeout)
		defer t.Stop()
		expired = t.C
	}
	kill := func() {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), monitorTimeout)
		_ = proc.Signal(kctx, 9)
		cancel()
		select {
		case <-done: // its output is written
		case <-time.After(monitorTimeout):
		}
	}
	select {
	case <-done:
		return nil
	case <-expired:
		kill()
		return fmt.Errorf("compute: exec %s ran past %v: %w", e.id, opts.Timeout, context.DeadlineExceeded)
	case <-ctx.Done():
		// A bounded exec (a health probe) whose caller gave up first (its
		// start was slow) is killed as well: nobody waits for it, and
		// probes must not pile up in the container. Others run on, as
		// dockerd's execs do when their client goes.
		if opts.Timeout > 0 {
			kill()
		}
		return ctx.Err()
	}
}

// ResizeExec implements portlayer.Execs.
func (x *Execs) ResizeExec(ctx context.Context, execID string, rows, cols uint) error {
	e, err := x.lookupExec(execID)
	if err != nil {
		return err
	}
	e.mu.Lock()
	proc := e.proc
	e.mu.Unlock()
	e.c.mu.Lock()
	ctrRunning := e.c.rec.State.Status == portlayer.StatusRunning
	e.c.mu.Unlock()
	if proc == nil || !ctrRunning {
		// Its container's end ends it, even before its exit is recorded.
		return portlayer.ExecState(execID, portlayer.ReasonNotRunning)
	}
	return proc.Resize(ctx, uint32(rows), uint32(cols))
}

// Resize implements portlayer.Execs for the container's main process.
func (x *Execs) Resize(ctx context.Context, idOrName string, rows, cols uint) error {
	c, err := x.lookup(idOrName)
	if err != nil {
		return err
	}
	c.mu.Lock()
	proc := c.proc
	c.mu.Unlock()
	if proc == nil {
		return portlayer.ContainerState("", c.id, portlayer.ReasonNotRunning)
	}
	return proc.Resize(ctx, uint32(rows), uint32(cols))
}

var _ portlayer.ExecForgetter = (*Execs)(nil)

// ForgetExec implements portlayer.ExecForgetter. A running exec runs on;
// only its record goes.
func (x *Execs) ForgetExec(_ context.Context, execID string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.byID[execID]; !ok {
		return portlayer.NoSuchExec(execID)
	}
	delete(x.byID, execID)
	return nil
}

// dropExecs forgets a removed container's execs.
func (x *Execs) dropExecs(c *container) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, e := range x.byID {
		if e.c == c {
			delete(x.byID, id)
		}
	}
}
