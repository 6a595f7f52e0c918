package compute_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/compute"
)

// events records what compute publishes.
type events struct {
	mu  sync.Mutex
	evs []portlayer.Event
}

func (e *events) Publish(ev portlayer.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

// actions lists the container events of id, oldest first.
func (e *events) actions(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		if ev.ID == id && ev.Type == "container" {
			out = append(out, ev.Action)
		}
	}
	return out
}

// restart closes the harness's service, as a daemon that stops, and opens
// a new one on the same root and driver, as the next daemon.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.svc.Close(h.t.Context()); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	h.svc = h.open(h.cfg)
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stdoutText is the container's logged stdout.
func (h *harness) stdoutText(id string) string {
	var b strings.Builder
	for _, m := range h.logs(id, portlayer.LogOptions{Stdout: true, Tail: -1}) {
		b.Write(m.Data)
	}
	return b.String()
}

// checkCounter checks that out is "0\n1\n…" with nothing missing or twice,
// and returns how many lines it has.
func checkCounter(t *testing.T, out string) int {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		if l != strconv.Itoa(i) {
			t.Fatalf("log line %d is %q, want %d (a gap or a repeat): %q", i, l, i, out)
		}
	}
	return len(lines)
}

// A daemon that stops leaves its container VMs running; the next one takes
// them back: same VM, same StartedAt, the output continues in the log with
// nothing lost or repeated (also what the process wrote while no daemon
// ran), exec and stop work.
func TestCloseLeavesRunAndNextDaemonAdopts(t *testing.T) {
	ev := &events{}
	h := newHarness(t, func(c *compute.Config) { c.Events = ev })
	c := h.create(portlayer.ContainerSpec{Name: "ticker", Args: args("ticks", "2ms")})
	idle := h.create(portlayer.ContainerSpec{Name: "idle", Args: args("echo")})
	h.start(c.ID)
	before := h.inspect(c.ID)
	eventually(t, "output before the stop", func() bool { return strings.Count(h.stdoutText(c.ID), "\n") >= 5 })

	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(h.drv.Running()); n != 1 {
		t.Fatalf("%d VMs run after Close, want the container's 1", n)
	}
	time.Sleep(30 * time.Millisecond) // the process writes while no daemon runs
	h.svc = h.open(h.cfg)

	got := h.inspect(c.ID)
	if st := got.State; st.Status != portlayer.StatusRunning || !st.StartedAt.Equal(before.State.StartedAt) || st.Pid != before.State.Pid {
		t.Fatalf("after the restart: %+v, want running with StartedAt %v, Pid %d", st, before.State.StartedAt, before.State.Pid)
	}
	if got := h.inspect(idle.ID).State.Status; got != portlayer.StatusCreated {
		t.Errorf("idle container %s after restart", got)
	}
	if a := h.drv.Adopts(); len(a) == 0 {
		t.Error("the driver adopted nothing")
	}
	n0 := checkCounter(t, h.stdoutText(c.ID))
	eventually(t, "output after the restart", func() bool { return strings.Count(h.stdoutText(c.ID), "\n") > n0+5 })

	id, err := h.svc.Execs().CreateExec(t.Context(), c.ID, portlayer.ExecSpec{Args: args("echo", "from exec"), AttachStdout: true})
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	if err := h.svc.Execs().StartExec(t.Context(), id, portlayer.ExecStartOptions{Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "from exec\n" {
		t.Errorf("exec output %q", out.String())
	}

	zero := time.Duration(0)
	if err := h.svc.Stop(t.Context(), c.ID, &zero); err != nil {
		t.Fatal(err)
	}
	if st := h.inspect(c.ID).State; st.Status != portlayer.StatusExited || st.ExitCode != 137 {
		t.Errorf("after stop: %+v", st)
	}
	h.vmsEnd()
	n := checkCounter(t, h.stdoutText(c.ID))
	if n <= n0 {
		t.Errorf("%d lines after the stop, %d before", n, n0)
	}
	if a := ev.actions(c.ID); slices.Contains(a[:len(a)-3], "die") {
		t.Errorf("events %v: a die before the stop", a)
	}
}

// TestNoLogAdopted: a container that keeps no log, taken back by a new
// daemon after it wrote past the guest's spool, runs on to its exit: the
// new daemon resumes where the guest's output ends, so its
// acknowledgements count as the guest's (from 0 they fell short by
// what the old daemon had had, and the full spool stopped the process
// for good).
func TestNoLogAdopted(t *testing.T) {
	const n = 300000 // ~3.7 MB
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("lines", fmt.Sprint(n)), NoLog: true})
	var out syncBuffer
	a, err := h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdout: &out, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	h.start(c.ID)
	eventually(t, "1.5 MB of output", func() bool { return len(out.String()) > 1500000 })
	a.Close()
	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.svc = h.open(h.cfg)
	var after syncBuffer
	a, err = h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdout: &after, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	if code := h.waitExit(c.ID); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	recv(t, a.Done(), "attachment done")
	if got, want := after.String(), fmt.Sprintf("line %d\n", n); !strings.HasSuffix(got, want) {
		t.Errorf("output after the adoption ends %q, want %q", got[max(0, len(got)-40):], want)
	}
	h.vmsEnd()
}

// A VM that exits while no daemon runs is recorded with its own exit code
// and all its output, once.
func TestExitWhileNoDaemon(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("echo", "a", ";", "sleep", "30ms", ";", "echo", "b", ";", "exit", "4")})
	h.start(c.ID)
	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	h.svc = h.open(h.cfg)
	if code := h.waitExit(c.ID); code != 4 {
		t.Errorf("exit %d, want 4", code)
	}
	if got := h.stdoutText(c.ID); got != "a\nb\n" {
		t.Errorf("logged %q, want a, b once each", got)
	}
	h.vmsEnd()
}

// A container whose VM is gone when the daemon starts (a host reboot) is
// exited with 255 and a die event; StartedAt is kept.
func TestVMGoneWhileNoDaemon(t *testing.T) {
	ev := &events{}
	h := newHarness(t, func(c *compute.Config) { c.Events = ev })
	c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	h.start(c.ID)
	started := h.inspect(c.ID).State.StartedAt
	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.drv.CrashAll(errors.New("host rebooted"))
	before := time.Now().UTC()
	h.svc = h.open(h.cfg)
	st := h.inspect(c.ID).State
	if st.Status != portlayer.StatusExited || st.ExitCode != 255 || st.Pid != 0 || st.Error == "" ||
		!st.StartedAt.Equal(started) || st.FinishedAt.Before(before) {
		t.Errorf("state %+v; want exited 255 with an error, StartedAt %v", st, started)
	}
	if a := ev.actions(c.ID); len(a) == 0 || a[len(a)-1] != "die" {
		t.Errorf("events %v, want a die last", a)
	}
	// Persisted, not only reported.
	h.restart()
	if st := h.inspect(c.ID).State; st.Status != portlayer.StatusExited || st.ExitCode != 255 {
		t.Errorf("second reload: %+v", st)
	}
}

// A VM that cannot be taken back is killed, and its container exited.
func TestAdoptFails(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	h.start(c.ID)
	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.drv.FailAdopt(errors.New("channel broken"))
	h.svc = h.open(h.cfg)
	if st := h.inspect(c.ID).State; st.Status != portlayer.StatusExited || st.ExitCode != 255 || !strings.Contains(st.Error, "channel broken") {
		t.Errorf("state %+v", st)
	}
}

// restoreNet is a NetworkPlumber that records Restore and Publish.
type restoreNet struct {
	mu        sync.Mutex
	next      int
	restored  map[string][]string // container → taps
	published map[string][]portlayer.PortBinding
	eps       map[string][]portlayer.Endpoint
}

func newRestoreNet() *restoreNet {
	return &restoreNet{restored: map[string][]string{}, published: map[string][]portlayer.PortBinding{}, eps: map[string][]portlayer.Endpoint{}}
}

func (f *restoreNet) NewNIC(ctx context.Context, id string) (portlayer.NIC, error) {
	file, err := os.Open(os.DevNull)
	if err != nil {
		return portlayer.NIC{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	return portlayer.NIC{Name: fmt.Sprintf("vt%d", f.next), File: file}, nil
}

func (f *restoreNet) Join(ctx context.Context, id, name, nic string, spec portlayer.EndpointSpec) (portlayer.Endpoint, error) {
	ep := portlayer.Endpoint{ID: "ep-" + nic, NetworkID: "net-" + spec.Network, NetworkName: spec.Network, ContainerID: id,
		Address: netip.MustParsePrefix("172.18.0.2/16"), Gateway: netip.MustParseAddr("172.18.0.1"), MAC: "02:42:ac:12:00:02", NIC: nic}
	f.mu.Lock()
	f.eps[id] = append(f.eps[id], ep)
	f.mu.Unlock()
	return ep, nil
}
func (f *restoreNet) Leave(ctx context.Context, id, network string) error { return nil }
func (f *restoreNet) LeaveAll(id string)                                  {}
func (f *restoreNet) Publish(ctx context.Context, id string, target netip.Addr, ports []portlayer.PortBinding) ([]portlayer.PortBinding, error) {
	out := append([]portlayer.PortBinding(nil), ports...)
	for i := range out {
		if out[i].HostPort == 0 {
			out[i].HostPort = 49153
		}
	}
	f.mu.Lock()
	f.published[id] = out
	f.mu.Unlock()
	return out, nil
}
func (f *restoreNet) Unpublish(id string)                {}
func (f *restoreNet) Rename(id, oldName, newName string) {}
func (f *restoreNet) Resolve(ctx context.Context, id string, servers []string, q []byte) ([]byte, error) {
	return nil, errors.New("no DNS")
}
func (f *restoreNet) Restore(ctx context.Context, id, name string, nics []string, eps []portlayer.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restored[id] = nics
	f.eps[id] = eps
	return nil
}

// The adopted container's NICs (spare ones included), endpoints and
// published host ports are registered again.
func TestAdoptRestoresNetwork(t *testing.T) {
	fn := newRestoreNet()
	h := newHarness(t, func(c *compute.Config) { c.Network = fn })
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Networks: []portlayer.EndpointSpec{{Network: "user"}},
		Ports: []portlayer.PortBinding{{Proto: "tcp", ContainerPort: 80}}})
	h.start(c.ID)
	rec := h.inspect(c.ID)
	h.restart()
	fn.mu.Lock()
	taps, ports := fn.restored[c.ID], fn.published[c.ID]
	fn.mu.Unlock()
	if want := []string{"vt1", "vt2", "vt3"}; !slices.Equal(taps, want) {
		t.Errorf("restored taps %v, want %v (the attached one and the spares)", taps, want)
	}
	if len(ports) != 1 || ports[0].HostPort != 49153 {
		t.Errorf("re-published %+v, want the recorded host port", ports)
	}
	got := h.inspect(c.ID)
	if fmt.Sprint(got.Endpoints) != fmt.Sprint(rec.Endpoints) || fmt.Sprint(got.Ports) != fmt.Sprint(rec.Ports) {
		t.Errorf("after adoption: endpoints %+v ports %+v, want %+v %+v", got.Endpoints, got.Ports, rec.Endpoints, rec.Ports)
	}
}

func TestRestartPolicies(t *testing.T) {
	tests := []struct {
		name      string
		policy    portlayer.RestartPolicy
		program   []string
		restarts  int // RestartCount to reach
		thenStops bool
	}{
		{"always after success", portlayer.RestartPolicy{Name: portlayer.RestartAlways}, args("exit", "0"), 3, false},
		{"unless-stopped", portlayer.RestartPolicy{Name: portlayer.RestartUnlessStopped}, args("exit", "2"), 2, false},
		{"on-failure unlimited", portlayer.RestartPolicy{Name: portlayer.RestartOnFailure}, args("exit", "1"), 3, false},
		{"on-failure at most 2", portlayer.RestartPolicy{Name: portlayer.RestartOnFailure, MaximumRetryCount: 2}, args("exit", "1"), 2, true},
		{"on-failure after success", portlayer.RestartPolicy{Name: portlayer.RestartOnFailure}, args("exit", "0"), 0, true},
		{"no", portlayer.RestartPolicy{Name: portlayer.RestartNo}, args("exit", "1"), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := &events{}
			h := newHarness(t, func(c *compute.Config) { c.Events = ev })
			c := h.create(portlayer.ContainerSpec{Args: tt.program, RestartPolicy: tt.policy})
			start := time.Now()
			h.start(c.ID)
			eventually(t, fmt.Sprintf("restart count %d", tt.restarts), func() bool { return h.inspect(c.ID).RestartCount >= tt.restarts })
			if tt.thenStops {
				eventually(t, "exited", func() bool { return h.inspect(c.ID).State.Status == portlayer.StatusExited })
				time.Sleep(400 * time.Millisecond) // longer than the next backoff
				if got := h.inspect(c.ID); got.RestartCount != tt.restarts || got.State.Status != portlayer.StatusExited {
					t.Errorf("RestartCount %d, status %s; want %d, exited", got.RestartCount, got.State.Status, tt.restarts)
				}
			}
			if tt.restarts >= 3 {
				// 100 ms, then 200 ms before the third: the backoff doubles.
				if d := time.Since(start); d < 300*time.Millisecond {
					t.Errorf("%d restarts within %s: no backoff", tt.restarts, d)
				}
			}
			starts := 0
			for _, a := range ev.actions(c.ID) {
				if a == "start" {
					starts++
				}
			}
			// RestartCount counts a restart when it is decided (as
			// Docker's); its start follows the backoff.
			if starts < tt.restarts {
				t.Errorf("%d start events for %d restarts", starts, tt.restarts)
			}
		})
	}
}

// Between an exit and its restart the container is restarting; a stop
// then cancels the restart for good (until a start by hand, which sets
// RestartCount back to 0), and so does a kill of a running container.
func TestStopCancelsRestart(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep", "100ms", ";", "exit", "1"), RestartPolicy: portlayer.RestartPolicy{Name: portlayer.RestartAlways}})
	h.start(c.ID)
	eventually(t, "restarting with backoff", func() bool {
		r := h.inspect(c.ID)
		return r.State.Status == portlayer.StatusRestarting && r.RestartCount >= 3 // the next wait is 800 ms
	})
	got := h.inspect(c.ID)
	if got.State.ExitCode != 1 || got.State.Pid != 0 {
		t.Errorf("restarting state %+v", got.State)
	}
	// A wait for not-running counts the restarting container as running.
	waitCh := h.wait(c.ID, portlayer.WaitNotRunning)
	if err := h.svc.Stop(t.Context(), c.ID, nil); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, waitCh, "stop of a restarting container"); r.ExitCode != 1 {
		t.Errorf("wait result %+v", r)
	}
	got = h.inspect(c.ID)
	if got.State.Status != portlayer.StatusExited || !got.ManuallyStopped {
		t.Fatalf("after stop: %+v (manually stopped %v)", got.State, got.ManuallyStopped)
	}
	count := got.RestartCount
	time.Sleep(time.Second)
	if got := h.inspect(c.ID); got.RestartCount != count || got.State.Status != portlayer.StatusExited {
		t.Errorf("restarted after a stop: %d → %d, %s", count, got.RestartCount, got.State.Status)
	}
	h.start(c.ID)
	if got := h.inspect(c.ID); got.RestartCount != 0 || got.ManuallyStopped {
		t.Errorf("after a start by hand: RestartCount %d, manually stopped %v", got.RestartCount, got.ManuallyStopped)
	}

	k := h.create(portlayer.ContainerSpec{Args: args("sleep"), RestartPolicy: portlayer.RestartPolicy{Name: portlayer.RestartAlways}})
	h.start(k.ID)
	if err := h.svc.Kill(t.Context(), k.ID, 9); err != nil {
		t.Fatal(err)
	}
	if code := h.waitExit(k.ID); code != 137 {
		t.Errorf("exit %d", code)
	}
	time.Sleep(300 * time.Millisecond)
	if got := h.inspect(k.ID); got.State.Status != portlayer.StatusExited || got.RestartCount != 0 {
		t.Errorf("killed container: %s, RestartCount %d; want exited, not restarted", got.State.Status, got.RestartCount)
	}
}

// After a host reboot (every VM gone while no daemon ran) the next daemon
// starts the containers their policies say: always (even one stopped by
// hand), unless-stopped unless stopped by hand, on-failure (the lost VM
// counts as a failure); others stay exited with 255.
func TestPoliciesAfterReboot(t *testing.T) {
	h := newHarness(t)
	mk := func(name, policy string, program ...string) portlayer.Container {
		c := h.create(portlayer.ContainerSpec{Name: name, Args: program, RestartPolicy: portlayer.RestartPolicy{Name: policy}})
		h.start(c.ID)
		return c
	}
	always := mk("always", portlayer.RestartAlways, "sleep")
	unless := mk("unless", portlayer.RestartUnlessStopped, "sleep")
	onFailure := mk("onfailure", portlayer.RestartOnFailure, "sleep")
	none := mk("none", portlayer.RestartNo, "sleep")
	stoppedAlways := mk("stopped-always", portlayer.RestartAlways, "sleep")
	stoppedUnless := mk("stopped-unless", portlayer.RestartUnlessStopped, "sleep")
	cleanOnFailure := mk("clean-onfailure", portlayer.RestartOnFailure, "exit", "0")
	never := h.create(portlayer.ContainerSpec{Name: "never-started", Args: args("sleep"), RestartPolicy: portlayer.RestartPolicy{Name: portlayer.RestartAlways}})
	zero := time.Duration(0)
	for _, c := range []portlayer.Container{stoppedAlways, stoppedUnless} {
		if err := h.svc.Stop(t.Context(), c.ID, &zero); err != nil {
			t.Fatal(err)
		}
	}
	h.waitExit(cleanOnFailure.ID)
	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.drv.CrashAll(errors.New("host rebooted"))
	h.svc = h.open(h.cfg)

	for _, c := range []portlayer.Container{always, unless, onFailure, stoppedAlways} {
		eventually(t, c.Spec.Name+" running again", func() bool { return h.inspect(c.ID).State.Status == portlayer.StatusRunning })
	}
	time.Sleep(100 * time.Millisecond)
	for _, c := range []portlayer.Container{none, stoppedUnless, cleanOnFailure} {
		if st := h.inspect(c.ID).State; st.Status != portlayer.StatusExited {
			t.Errorf("%s: %s, want exited", c.Spec.Name, st.Status)
		}
	}
	if st := h.inspect(none.ID).State; st.ExitCode != 255 {
		t.Errorf("none: exit %d, want 255", st.ExitCode)
	}
	if st := h.inspect(never.ID).State; st.Status != portlayer.StatusCreated {
		t.Errorf("never started: %s, want created", st.Status)
	}
}

// A graceful restart keeps a container that is waiting for its restart
// restarting: the next daemon starts it.
func TestPendingRestartSurvivesClose(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("exit", "1"), RestartPolicy: portlayer.RestartPolicy{Name: portlayer.RestartOnFailure}})
	h.start(c.ID)
	eventually(t, "a long backoff", func() bool {
		r := h.inspect(c.ID)
		return r.State.Status == portlayer.StatusRestarting && r.RestartCount >= 3
	})
	h.restart()
	eventually(t, "started again by the next daemon", func() bool {
		return len(h.drv.VMs()) > 4
	})
}

func TestRestartPolicyValidation(t *testing.T) {
	tests := []struct {
		policy     portlayer.RestartPolicy
		autoRemove bool
		want       string // field/reason/value of the InvalidArgument error; "" accepted
	}{
		{portlayer.RestartPolicy{}, true, ""},
		{portlayer.RestartPolicy{Name: "no"}, true, ""},
		{portlayer.RestartPolicy{Name: "always", MaximumRetryCount: 3}, false, "RestartPolicy.MaximumRetryCount/only_on_failure/3"},
		{portlayer.RestartPolicy{Name: "no", MaximumRetryCount: -1}, false, "RestartPolicy.MaximumRetryCount/only_on_failure/-1"},
		{portlayer.RestartPolicy{Name: "on-failure", MaximumRetryCount: -1}, false, "RestartPolicy.MaximumRetryCount/negative/-1"},
		{portlayer.RestartPolicy{Name: "sometimes"}, false, "RestartPolicy.Name/unknown/sometimes"},
		{portlayer.RestartPolicy{Name: "always"}, true, "AutoRemove/exclusive/true"},
		{portlayer.RestartPolicy{Name: "on-failure", MaximumRetryCount: 3}, false, ""},
	}
	h := newHarness(t)
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s:%d_rm=%v", tt.policy.Name, tt.policy.MaximumRetryCount, tt.autoRemove), func(t *testing.T) {
			_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("echo"), RestartPolicy: tt.policy, AutoRemove: tt.autoRemove})
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (!errdefs.IsInvalidArgument(err) || fieldReason(err) != tt.want):
				t.Errorf("Create = %v (%s), want %q", err, fieldReason(err), tt.want)
			}
		})
	}
}

// TestSweepLeftovers: the files of a container whose removal was cut
// short after its record went (a daemon killed mid-removal) are deleted
// by the next daemon; a container with a record keeps its own.
func TestSweepLeftovers(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("true")})
	orphan := strings.Repeat("ab", 32)
	for _, d := range []string{filepath.Join(h.cfg.Root, "containers", orphan), filepath.Join(h.cfg.Root, "run", orphan[:12])} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "disk"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.restart()
	for _, d := range []string{filepath.Join(h.cfg.Root, "containers", orphan), filepath.Join(h.cfg.Root, "run", orphan[:12])} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s survived the restart: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Root, "containers", c.ID)); err != nil {
		t.Errorf("the recorded container's directory went: %v", err)
	}
	h.inspect(c.ID)
}
