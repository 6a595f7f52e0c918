// Package agent is the guest agent's protocol and its host side: tether
// (the agent in every container VM) and the host speak package wire's
// messages over package link's transport, and this package is the host's
// client. It belongs to neither the port layer nor the hypervisor drivers:
// compute uses it to run containers, and hvtest to check that a driver's
// channel reaches a booted guest.
//
// The client turns a VM's guest channel into typed calls — set up the
// container, start a process and stream its stdio, signal it, resize its
// TTY, collect its exit status, power the VM off — and, with a v2 guest,
// list the guest's processes, attach to one again after a reconnect,
// acknowledge stored output and release an exited process.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
)

// Client is a connection to one guest's tether. Safe for concurrent use.
type Client struct {
	conn     transport
	protocol string
}

// Dial starts a session over the guest channel c (wire protocol v3, or
// SSH with a guest of protocol v1 or v2; see package wire). It returns
// when tether answers (the guest has booted) or ctx ends (Unavailable).
func Dial(ctx context.Context, c net.Conn) (*Client, error) {
	return DialWith(ctx, c, Handlers{})
}

// Handlers serve the requests the guest sends to the host.
type Handlers struct {
	// DNS answers a DNS query relayed by the guest (wire.RequestDNS; RFC
	// 1035 wire format both ways). Nil refuses every query.
	DNS func(ctx context.Context, query []byte) ([]byte, error)
}

// dnsTimeout bounds one relayed DNS answer.
const dnsTimeout = 5 * time.Second

// DialWith is Dial with handlers for the guest's requests.
func DialWith(ctx context.Context, c net.Conn, h Handlers) (*Client, error) {
	type result struct {
		t        transport
		protocol string
		err      error
	}
	done := make(chan result, 1)
	go func() {
		t, protocol, err := handshake(c, h)
		done <- result{t, protocol, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("agent: handshake: %w: %w", r.err, errdefs.ErrUnavailable)
		}
		return &Client{conn: r.t, protocol: r.protocol}, nil
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("agent: handshake: %w: %w", ctx.Err(), errdefs.ErrUnavailable)
	}
}

// Protocol is the wire protocol version the guest speaks: wire.Version4,
// wire.Version3, or wire.Version2 for an SSH guest (v1 guests included).
func (c *Client) Protocol() string { return c.protocol }

// serveRequests answers the guest's global requests until the connection
// ends; DNS queries are answered concurrently.
func serveRequests(reqs <-chan *link.Request, h Handlers) {
	for req := range reqs {
		if req.Type != wire.RequestDNS || h.DNS == nil {
			_ = req.Reply(false, nil)
			continue
		}
		go func(req *link.Request) {
			ctx, cancel := context.WithTimeout(context.Background(), dnsTimeout)
			defer cancel()
			answer, err := h.DNS(ctx, req.Payload)
			_ = req.Reply(err == nil, answer)
		}(req)
	}
}

// ConfigureInterface (re)configures one NIC of the running VM (network
// connect and disconnect).
func (c *Client) ConfigureInterface(ctx context.Context, f wire.Interface) error {
	return c.request(ctx, wire.RequestInterface, wire.Encode(f))
}

// Close closes the connection. Idempotent.
func (c *Client) Close() error { return c.conn.Close() }

// Wait blocks until the connection ends.
func (c *Client) Wait() error { return c.conn.Wait() }

// request sends a global request and turns a refusal into an error carrying
// the guest's text.
func (c *Client) request(ctx context.Context, name string, payload []byte) error {
	_, err := c.query(ctx, name, payload)
	return err
}

// query sends a global request and returns the guest's reply payload.
func (c *Client) query(ctx context.Context, name string, payload []byte) ([]byte, error) {
	ok, resp, err := c.conn.SendRequest(ctx, name, true, payload)
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w: %w", name, err, errdefs.ErrUnavailable)
	}
	if !ok {
		return nil, fmt.Errorf("agent: %s refused: %s", name, resp)
	}
	return resp, nil
}

// Top lists the container's processes as the guest sees them.
func (c *Client) Top(ctx context.Context) (wire.Top, error) {
	var t wire.Top
	b, err := c.query(ctx, wire.RequestTop, nil)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	return t, err
}

// Stats samples the guest's resource counters.
func (c *Client) Stats(ctx context.Context) (wire.Stats, error) {
	var s wire.Stats
	b, err := c.query(ctx, wire.RequestStats, nil)
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	return s, err
}

// Setup applies the container-wide setup. Call once, before Start. A
// refusal for a mount's volume subpath is a *wire.MountError (its
// Reason, Target and Subpath); other refusals are errors with the
// guest's text.
func (c *Client) Setup(ctx context.Context, s wire.Setup) error {
	ok, resp, err := c.conn.SendRequest(ctx, wire.RequestSetup, true, wire.Encode(s))
	switch {
	case err != nil:
		return fmt.Errorf("agent: %s: %w: %w", wire.RequestSetup, err, errdefs.ErrUnavailable)
	case ok:
		return nil
	}
	var me wire.MountError
	if json.Unmarshal(resp, &me) == nil && me.Reason != "" {
		return &me
	}
	return fmt.Errorf("agent: %s refused: %s", wire.RequestSetup, resp)
}

// SetClock sets the guest's clock to the host's time now.
func (c *Client) SetClock(ctx context.Context) error {
	return c.request(ctx, wire.RequestClock, wire.Encode(wire.Clock{TimeUnixNano: time.Now().UnixNano()}))
}

// UserError is the guest's refusal of a user spec (wire.RequestUser):
// its text, "unable to find user x: no matching entries in passwd file".
type UserError struct{ Message string }

func (e *UserError) Error() string { return e.Message }

// CheckUser asks the guest whether user ("name", "uid", "name:group",
// "uid:gid") resolves against the container's /etc/passwd and /etc/group
// (wire.RequestUser): nil if it does, a *UserError with the guest's text
// if not, another error if the guest did not answer (a guest agent that
// predates the request refuses it with no text: not a *UserError).
func (c *Client) CheckUser(ctx context.Context, user string) error {
	ok, resp, err := c.conn.SendRequest(ctx, wire.RequestUser, true, wire.Encode(wire.User{User: user}))
	switch {
	case err != nil:
		return fmt.Errorf("agent: %s: %w: %w", wire.RequestUser, err, errdefs.ErrUnavailable)
	case !ok && len(resp) > 0:
		return &UserError{Message: string(resp)}
	case !ok:
		return fmt.Errorf("agent: %s refused: %w", wire.RequestUser, errdefs.ErrNotImplemented)
	}
	return nil
}

// SetResources replaces the limits of the running container's cgroup
// (wire.RequestResources; docker update). An error with the guest's text
// when it refuses them (a guest agent that predates the request refuses
// it with none).
func (c *Client) SetResources(ctx context.Context, r wire.Resources) error {
	return c.request(ctx, wire.RequestResources, wire.Encode(r))
}

// PowerOff asks the guest to sync its disks and power off; it returns once
// the guest acknowledged. The VM ends shortly after.
func (c *Client) PowerOff(ctx context.Context) error {
	return c.request(ctx, wire.RequestPowerOff, nil)
}

// StartError is a process that could not be started: the guest's reason and
// Docker's exit code for it (127 not found, 126 not executable).
type StartError struct {
	Message  string
	ExitCode int
}

func (e *StartError) Error() string { return e.Message }

// Process is a started guest process, or one attached to again (Attach).
type Process struct {
	id        string
	resumable bool
	ch        link.Channel
	exitOnce  sync.Once
	exited    chan struct{}
	code      int
	oomKilled bool
	mu        sync.Mutex
}

// Start starts a process. Its stdout and stderr are read with Stdout and
// Stderr (they must be drained, or the guest blocks); a *StartError when the
// guest could not start it.
func (c *Client) Start(ctx context.Context, p wire.Process) (*Process, error) {
	ch, reqs, err := c.conn.OpenChannel(ctx, wire.ChannelProcess, wire.Encode(p))
	if err != nil {
		var oce *link.OpenChannelError
		if errors.As(err, &oce) {
			var se wire.StartError
			if json.Unmarshal([]byte(oce.Message), &se) == nil && se.Message != "" {
				return nil, &StartError{Message: se.Message, ExitCode: se.ExitCode}
			}
		}
		return nil, fmt.Errorf("agent: start process: %w: %w", err, errdefs.ErrUnavailable)
	}
	return newProcess(p.ID, p.Resumable, ch, reqs), nil
}

// Attach attaches to a process the guest already runs (or ran: an exited
// one not yet released), by ID, resuming its output at the offsets given
// (wire.ChannelAttach, protocol v2). The Process then behaves as one from
// Start. NotFound if the guest has no such process; NotImplemented if the
// guest speaks only protocol v1.
func (c *Client) Attach(ctx context.Context, at wire.Attach, resumable bool) (*Process, error) {
	ch, reqs, err := c.conn.OpenChannel(ctx, wire.ChannelAttach, wire.Encode(at))
	if err != nil {
		var oce *link.OpenChannelError
		if errors.As(err, &oce) {
			if oce.Reason == link.UnknownChannelType {
				return nil, fmt.Errorf("agent: attach %s: the guest agent cannot re-attach (protocol v1): %w", at.ID, errdefs.ErrNotImplemented)
			}
			var se wire.StartError
			if json.Unmarshal([]byte(oce.Message), &se) == nil && se.Message != "" {
				return nil, fmt.Errorf("agent: attach %s: %s: %w", at.ID, se.Message, errdefs.ErrNotFound)
			}
		}
		return nil, fmt.Errorf("agent: attach %s: %w: %w", at.ID, err, errdefs.ErrUnavailable)
	}
	return newProcess(at.ID, resumable, ch, reqs), nil
}

func newProcess(id string, resumable bool, ch link.Channel, reqs <-chan *link.Request) *Process {
	proc := &Process{id: id, resumable: resumable, ch: ch, exited: make(chan struct{}), code: -1}
	go func() {
		for req := range reqs {
			switch req.Type {
			case wire.RequestExitStatus:
				if code, ok := wire.DecodeExitStatus(req.Payload); ok {
					proc.mu.Lock()
					proc.code = code
					proc.mu.Unlock()
				}
			case wire.RequestOOM:
				proc.mu.Lock()
				proc.oomKilled = true
				proc.mu.Unlock()
			}
			_ = req.Reply(false, nil)
		}
		// The request channel closes with the channel: every exit-status
		// request (sent after all output) has been seen.
		proc.exitOnce.Do(func() { close(proc.exited) })
	}()
	return proc
}

// Processes lists the guest's processes (wire.RequestProcesses, protocol
// v2). NotImplemented if the guest speaks only protocol v1.
func (c *Client) Processes(ctx context.Context) (wire.ProcessList, error) {
	var l wire.ProcessList
	b, err := c.query(ctx, wire.RequestProcesses, nil)
	if err != nil {
		if !errdefs.IsUnavailable(err) {
			return l, fmt.Errorf("agent: list processes: the guest agent speaks protocol v1: %w", errdefs.ErrNotImplemented)
		}
		return l, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("agent: list processes: %w", err)
	}
	return l, nil
}

// Release tells the guest an exited process's status is recorded, so it
// forgets the process (wire.RequestRelease).
func (c *Client) Release(ctx context.Context, id string) error {
	return c.request(ctx, wire.RequestRelease, wire.Encode(wire.Release{ID: id}))
}

// OOMKilled reports, once Wait returned, whether the guest said the
// container had an OOM kill while this (main) process ran
// (wire.RequestOOM).
func (p *Process) OOMKilled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.oomKilled
}

// ID is the process's ID in the guest (empty for a v1 process started
// without one).
func (p *Process) ID() string { return p.id }

// Ack tells the guest its output before these byte offsets is stored, so
// it may drop it (wire.RequestAck). Only a resumable process needs it; it
// does not wait for the guest.
func (p *Process) Ack(stdout, stderr int64) error {
	if _, err := p.ch.SendRequest(wire.RequestAck, false, wire.Encode(wire.Ack{Stdout: stdout, Stderr: stderr})); err != nil {
		return fmt.Errorf("agent: ack: %w: %w", err, errdefs.ErrUnavailable)
	}
	return nil
}

// Stdout returns the process's stdout (its TTY output with a TTY).
func (p *Process) Stdout() io.Reader { return p.ch }

// Stderr returns the process's stderr (empty with a TTY).
func (p *Process) Stderr() io.Reader { return p.ch.Stderr() }

// Stdin returns the process's stdin; close it to deliver EOF.
func (p *Process) Stdin() io.WriteCloser { return stdin{p.ch} }

type stdin struct{ ch link.Channel }

func (s stdin) Write(b []byte) (int, error) { return s.ch.Write(b) }
func (s stdin) Close() error                { return s.ch.CloseWrite() }

// Signal delivers Linux signal n to the process.
func (p *Process) Signal(ctx context.Context, n int) error {
	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		ok, err := p.ch.SendRequest(wire.RequestSignal, true, wire.Encode(wire.Signal{Number: n}))
		done <- result{ok, err}
	}()
	var ok bool
	var err error
	select {
	case r := <-done:
		ok, err = r.ok, r.err
	case <-ctx.Done():
		return fmt.Errorf("agent: signal %d: %w: %w", n, ctx.Err(), errdefs.ErrUnavailable)
	}
	if err != nil {
		return fmt.Errorf("agent: signal %d: %w: %w", n, err, errdefs.ErrUnavailable)
	}
	if !ok {
		return fmt.Errorf("agent: signal %d refused: %w", n, errdefs.ErrConflict)
	}
	return nil
}

// Resize sets the process's TTY size in character cells.
func (p *Process) Resize(ctx context.Context, rows, cols uint32) error {
	if _, err := p.ch.SendRequest(wire.RequestWindowChange, false, wire.EncodeWindowChange(rows, cols)); err != nil {
		return fmt.Errorf("agent: resize: %w: %w", err, errdefs.ErrUnavailable)
	}
	return nil
}

// Wait returns the exit code once the process has exited and the channel
// closed. -1 with Unavailable if the connection ended without a status.
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.exited:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.code < 0 {
		return -1, fmt.Errorf("agent: process ended without exit status: %w", errdefs.ErrUnavailable)
	}
	return p.code, nil
}
