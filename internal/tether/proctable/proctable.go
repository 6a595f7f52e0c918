// Package proctable is the guest's table of container processes, the part
// of tether that lets a process outlive the host's session (package
// wire, version 2). Tether and its in-process fake (hvfake) share it, so
// the fake's sessions behave as the guest's do.
//
// The table enters each process the host starts (wire.ChannelProcess)
// with its ID, its output in two spools (package spool), its stdin and its
// controls (signal, TTY size). It serves the process to a channel — the
// one that started it and later any wire.ChannelAttach by ID, in this or a
// later session — resuming output at the channel's offsets and sending the
// exit status after the last byte. It answers wire.RequestProcesses,
// wire.RequestAck and wire.RequestRelease.
//
// It does not start processes, read their pipes or reap them: its owner
// does, writing output into the spools and calling [Process.Exited].
// Safe for concurrent use.
package proctable

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/tether/spool"
)

// Controls are what the table asks of a running process.
type Controls interface {
	// Signal delivers Linux signal n to the process.
	Signal(n int) error
	// Resize sets its TTY's size in character cells; no-op without a TTY.
	Resize(rows, cols uint32)
}

// Table is the guest's process table. The zero value is not usable; call New.
type Table struct {
	limit int

	mu    sync.Mutex
	procs map[string]*Process
	order []*Process // start order
	seq   int
}

// New returns an empty table whose spools keep limit unacknowledged bytes
// per stream (wire.SpoolLimitBytes if limit <= 0).
func New(limit int) *Table {
	if limit <= 0 {
		limit = wire.SpoolLimitBytes
	}
	return &Table{limit: limit, procs: map[string]*Process{}}
}

// ErrInUse is Reserve's error for an ID the table already has.
var ErrInUse = errors.New("proctable: process ID in use")

// Reserve enters a process about to start, under spec.ID or a new ID when
// that is empty. It is not listed until Started. ErrInUse if the ID is
// taken.
func (t *Table) Reserve(spec wire.Process) (*Process, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := spec.ID
	if id == "" {
		for {
			t.seq++
			id = "p" + strconv.Itoa(t.seq)
			if _, taken := t.procs[id]; !taken {
				break
			}
		}
	} else if _, taken := t.procs[id]; taken {
		return nil, fmt.Errorf("%w: %q", ErrInUse, id)
	}
	spec.ID = id
	p := &Process{t: t, spec: spec, Stdout: spool.New(t.limit), Stderr: spool.New(t.limit), done: make(chan struct{})}
	t.procs[id] = p
	return p, nil
}

// Lookup returns the started process with ID id, or nil.
func (t *Table) Lookup(id string) *Process {
	t.mu.Lock()
	p := t.procs[id]
	t.mu.Unlock()
	if p != nil && p.isStarted() {
		return p
	}
	return nil
}

// List reports every started process not yet forgotten, in start order.
func (t *Table) List() wire.ProcessList {
	t.mu.Lock()
	procs := append([]*Process(nil), t.order...)
	t.mu.Unlock()
	out := wire.ProcessList{Processes: []wire.ProcessStatus{}}
	for _, p := range procs {
		out.Processes = append(out.Processes, p.status())
	}
	return out
}

// Release forgets an exited process (wire.RequestRelease). An error if it
// is unknown or still running.
func (t *Table) Release(id string) error {
	p := t.Lookup(id)
	if p == nil {
		return fmt.Errorf("no such process: %s", id)
	}
	select {
	case <-p.done:
	default:
		return fmt.Errorf("process %s is running", id)
	}
	t.forget(p)
	return nil
}

func (t *Table) forget(p *Process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.procs[p.spec.ID] == p {
		delete(t.procs, p.spec.ID)
	}
	for i, q := range t.order {
		if q == p {
			t.order = append(t.order[:i:i], t.order[i+1:]...)
			break
		}
	}
}

// Process is one entry of the table.
type Process struct {
	t    *Table
	spec wire.Process
	// Stdout and Stderr receive the process's output (only Stdout with a
	// TTY); the owner writes them and closes them through Exited.
	Stdout, Stderr *spool.Spool
	done           chan struct{} // closed by Exited

	mu          sync.Mutex
	started     bool
	pid         int
	ctl         Controls
	stdin       io.WriteCloser
	stdinClosed bool
	exitCode    *int
	oomKilled   bool
	att         *attachment
}

// ID is the process's ID.
func (p *Process) ID() string { return p.spec.ID }

// Spec is the process's spec, ID filled in.
func (p *Process) Spec() wire.Process { return p.spec }

// Started lists the reserved process: it runs as pid; stdin (nil when the
// spec has no Stdin) receives what attached channels send; ctl takes
// signals and resizes.
func (p *Process) Started(pid int, stdin io.WriteCloser, ctl Controls) {
	p.mu.Lock()
	p.started, p.pid, p.stdin, p.ctl = true, pid, stdin, ctl
	p.mu.Unlock()
	p.t.mu.Lock()
	p.t.order = append(p.t.order, p)
	p.t.mu.Unlock()
}

func (p *Process) isStarted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// Abandon drops a reserved process that did not start.
func (p *Process) Abandon() { p.t.forget(p) }

// SetOOMKilled records that the container had an OOM kill while this
// process ran; its channel then sends wire.RequestOOM before the exit
// status. Call before Exited.
func (p *Process) SetOOMKilled() {
	p.mu.Lock()
	p.oomKilled = true
	p.mu.Unlock()
}

// Exited records the exit code once all the process's output is in its
// spools, and ends the spools: attached channels send what is left, then
// the exit status. Call once.
func (p *Process) Exited(code int) {
	p.mu.Lock()
	p.exitCode = &code
	stdin := p.stdin
	closed := p.stdinClosed
	p.stdinClosed = true
	p.mu.Unlock()
	if stdin != nil && !closed {
		_ = stdin.Close()
	}
	p.Stdout.CloseWrite()
	p.Stderr.CloseWrite()
	close(p.done)
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

func (p *Process) status() wire.ProcessStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, outEnd := p.Stdout.Bounds()
	_, errEnd := p.Stderr.Bounds()
	st := wire.ProcessStatus{ID: p.spec.ID, Args: p.spec.Args, Exec: p.spec.Exec, Tty: p.spec.Tty, Stdin: p.spec.Stdin,
		Resumable: p.spec.Resumable, Pid: p.pid, Running: p.exitCode == nil, Stdout: outEnd, Stderr: errEnd}
	if p.exitCode != nil {
		c := *p.exitCode
		st.ExitCode = &c
		st.OOMKilled = p.oomKilled
	}
	return st
}

// attachment is one channel serving a process.
type attachment struct {
	ch       link.Channel
	stop     chan struct{}
	stopOnce sync.Once
	// reqMu is held while a request is handled and answered, and taken
	// before the exit status is sent: a signal's reply then always
	// precedes the channel's close, even when the signal ends the
	// process at once.
	reqMu sync.Mutex
}

func (a *attachment) detach() {
	a.stopOnce.Do(func() {
		close(a.stop)
		_ = a.ch.Close()
	})
}

func (a *attachment) detached() bool {
	select {
	case <-a.stop:
		return true
	default:
		return false
	}
}

// bufSize is the most output one channel write carries, and the most
// stdin one channel read takes (256 KiB, as tether reads a process's
// output; the link splits a write into frames).
const bufSize = 256 << 10

// Serve serves the process on an accepted channel until the process's
// exit status has been sent (then the channel is closed), the channel or
// its session ends, or a newer attachment replaces it. Output resumes at
// from's offsets. dead reports whether the channel's connection has
// failed: an EOF on the channel then is the session ending, not the
// host's stdin EOF, and leaves the process's stdin open.
func (p *Process) Serve(ch link.Channel, reqs <-chan *link.Request, from wire.Attach, dead func() bool) {
	a := &attachment{ch: ch, stop: make(chan struct{})}
	p.mu.Lock()
	old := p.att
	p.att = a
	stdin := p.stdin
	p.mu.Unlock()
	if old != nil {
		old.detach()
	}
	defer func() {
		p.mu.Lock()
		if p.att == a {
			p.att = nil
		}
		p.mu.Unlock()
	}()
	go p.serveRequests(a, reqs)
	if stdin != nil {
		go p.copyStdin(a, stdin, dead)
	}
	var wg sync.WaitGroup
	complete := make([]bool, 2)
	pump := func(i int, sp *spool.Spool, w io.Writer, off int64) {
		defer wg.Done()
		for {
			// The spool's own bytes, sent without a copy (they stay
			// until acknowledged, which is after this write).
			b, at, eof := sp.Peek(off, bufSize, a.stop)
			if eof {
				complete[i] = true
				return
			}
			if len(b) == 0 {
				return // detached
			}
			if _, err := w.Write(b); err != nil {
				a.detach()
				return
			}
			off = at + int64(len(b))
			if !p.spec.Resumable {
				// Only the current attachment acknowledges: a newer
				// one may be sending these bytes from the ring already
				// (Peek), and an acknowledgement would let the writer
				// fill their room again under it.
				p.mu.Lock()
				if p.att == a {
					sp.Ack(off)
				}
				p.mu.Unlock()
			}
		}
	}
	wg.Add(2)
	go pump(0, p.Stdout, ch, from.Stdout)
	go pump(1, p.Stderr, ch.Stderr(), from.Stderr)
	wg.Wait()
	if !complete[0] || !complete[1] {
		a.detach()
		return
	}
	p.mu.Lock()
	code, oom := *p.exitCode, p.oomKilled
	p.mu.Unlock()
	a.reqMu.Lock()
	defer a.reqMu.Unlock()
	if oom {
		_, _ = ch.SendRequest(wire.RequestOOM, false, nil)
	}
	_, err := ch.SendRequest(wire.RequestExitStatus, false, wire.EncodeExitStatus(code))
	a.detach()
	if err == nil && !p.spec.Resumable {
		p.t.forget(p)
	}
}

// copyStdin feeds what the channel sends to the process's stdin; the
// channel's EOF closes it, unless the session died or the attachment was
// replaced. With a TTY stdin is never closed (as v1: the client ends its
// stdin to detach).
func (p *Process) copyStdin(a *attachment, stdin io.WriteCloser, dead func() bool) {
	buf := make([]byte, bufSize)
	for {
		n, err := a.ch.Read(buf)
		if n > 0 {
			if _, werr := stdin.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) && !dead() && !a.detached() && !p.spec.Tty {
			p.mu.Lock()
			closed := p.stdinClosed
			p.stdinClosed = true
			p.mu.Unlock()
			if !closed {
				_ = stdin.Close()
			}
		}
		return
	}
}

func (p *Process) serveRequests(a *attachment, reqs <-chan *link.Request) {
	for req := range reqs {
		a.reqMu.Lock()
		ok := false
		switch req.Type {
		case wire.RequestSignal:
			var sig wire.Signal
			if json.Unmarshal(req.Payload, &sig) == nil {
				ok = p.ctl.Signal(sig.Number) == nil
			}
		case wire.RequestWindowChange:
			if rows, cols, valid := wire.DecodeWindowChange(req.Payload); valid {
				p.ctl.Resize(rows, cols)
				ok = true
			}
		case wire.RequestAck:
			var ack wire.Ack
			if json.Unmarshal(req.Payload, &ack) == nil {
				p.Stdout.Ack(ack.Stdout)
				p.Stderr.Ack(ack.Stderr)
				ok = true
			}
		}
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		a.reqMu.Unlock()
	}
}

// ServeAttach handles a wire.ChannelAttach: it finds the process, accepts
// the channel and serves it (see Serve). Unknown IDs are rejected with a
// wire.StartError whose ExitCode is 0.
func (t *Table) ServeAttach(nc link.NewChannel, dead func() bool) {
	var at wire.Attach
	if err := json.Unmarshal(nc.ExtraData(), &at); err != nil {
		_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "bad attach request: " + err.Error()})))
		return
	}
	p := t.Lookup(at.ID)
	if p == nil {
		_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "no such process: " + at.ID})))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	p.Serve(ch, reqs, at, dead)
}

// HandleRequest answers the table's global requests (wire.RequestProcesses,
// wire.RequestRelease) and reports whether req was one of them.
func (t *Table) HandleRequest(req *link.Request) bool {
	switch req.Type {
	case wire.RequestProcesses:
		_ = req.Reply(true, wire.Encode(t.List()))
	case wire.RequestRelease:
		var r wire.Release
		err := json.Unmarshal(req.Payload, &r)
		if err == nil {
			err = t.Release(r.ID)
		}
		if req.WantReply {
			if err != nil {
				_ = req.Reply(false, []byte(err.Error()))
			} else {
				_ = req.Reply(true, nil)
			}
		}
	default:
		return false
	}
	return true
}
