package compute_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/compute"
)

// TestStartRunning checks what Start asks of the driver and the guest, and
// the running state it records.
func TestStartRunning(t *testing.T) {
	tests := []struct {
		name     string
		cfg      func(*compute.Config)
		spec     portlayer.ContainerSpec
		wantMem  int
		wantCPUs int
		wantHost func(id string) string
		wantDom  string
		wantEnv  func(id string) []string
	}{
		{
			name:     "defaults",
			spec:     portlayer.ContainerSpec{Args: args("sleep")},
			wantMem:  256,
			wantCPUs: 1,
			wantHost: func(id string) string { return id[:12] },
			wantEnv:  func(id string) []string { return []string{"HOSTNAME=" + id[:12]} },
		},
		{
			name:     "tty adds TERM before the spec's env",
			spec:     portlayer.ContainerSpec{Args: args("sleep"), Tty: true, Env: []string{"A=1", "TERM=vt100"}},
			wantMem:  256,
			wantCPUs: 1,
			wantHost: func(id string) string { return id[:12] },
			wantEnv: func(id string) []string {
				return []string{"HOSTNAME=" + id[:12], "TERM=xterm", "A=1", "TERM=vt100"}
			},
		},
		{
			name:     "explicit hostname, domain and size",
			spec:     portlayer.ContainerSpec{Args: args("sleep"), Hostname: "box", Domainname: "example.org", MemoryMiB: 512, CPUs: 2},
			wantMem:  512,
			wantCPUs: 2,
			wantHost: func(string) string { return "box" },
			wantDom:  "example.org",
			wantEnv:  func(string) []string { return []string{"HOSTNAME=box"} },
		},
		{
			name:     "VCH defaults",
			cfg:      func(c *compute.Config) { c.DefaultMemoryMiB, c.DefaultCPUs = 128, 3 },
			spec:     portlayer.ContainerSpec{Args: args("sleep")},
			wantMem:  128,
			wantCPUs: 3,
			wantHost: func(id string) string { return id[:12] },
			wantEnv:  func(id string) []string { return []string{"HOSTNAME=" + id[:12]} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mods []func(*compute.Config)
			if tt.cfg != nil {
				mods = append(mods, tt.cfg)
			}
			h := newHarness(t, mods...)
			tt.spec.WorkingDir, tt.spec.User = "/work", "1000:1000"
			c := h.create(tt.spec)
			before := time.Now().UTC()
			h.start(c.ID)
			after := time.Now().UTC()

			got := h.inspect(c.ID)
			vm := h.vm(c.ID)
			if st := got.State; st.Status != portlayer.StatusRunning || st.Pid != vm.Pid() || st.Pid == 0 ||
				st.StartedAt.Before(before) || st.StartedAt.After(after) || !st.FinishedAt.IsZero() || st.ExitCode != 0 {
				t.Errorf("state %+v; want running, Pid %d, StartedAt in [%v, %v]", st, vm.Pid(), before, after)
			}
			wantSpec := hypervisor.Spec{
				Name: c.ID[:12], Kernel: h.cfg.Kernel, Initrd: h.cfg.Initrd, MemoryMiB: tt.wantMem, CPUs: tt.wantCPUs,
				ChannelName: wire.PortName, RuntimeDir: filepath.Join(h.cfg.Root, "run", c.ID[:12]),
				Disks: []hypervisor.Disk{{Path: filepath.Join(h.cfg.Root, "containers", c.ID, "rw.qcow2"), Format: "qcow2", Serial: wire.RootSerial},
					{Path: vm.Spec().Disks[1].Path, Format: "raw", ReadOnly: true, Serial: wire.BaseSerial}},
			}
			if gs := vm.Spec(); fmt.Sprint(gs) != fmt.Sprint(wantSpec) {
				t.Errorf("VM spec\n got %+v\nwant %+v", gs, wantSpec)
			}
			setup, ok := vm.Setup()
			if !ok || setup.Hostname != tt.wantHost(c.ID) || setup.Domainname != tt.wantDom ||
				!strings.Contains(setup.Hosts, "localhost") || setup.TimeUnixNano < before.UnixNano() || setup.TimeUnixNano > after.UnixNano() {
				t.Errorf("setup %+v (sent: %v)", setup, ok)
			}
			procs := vm.Processes()
			if len(procs) != 1 {
				t.Fatalf("%d processes started, want 1", len(procs))
			}
			want := wire.Process{Args: tt.spec.Args, Env: tt.wantEnv(c.ID), Dir: "/work", User: "1000:1000", Tty: tt.spec.Tty,
				ID: wire.MainProcessID, Resumable: true}
			if p := procs[0]; fmt.Sprint(p) != fmt.Sprint(want) {
				t.Errorf("process\n got %+v\nwant %+v", p, want)
			}
			// Starting a running container leaves it as it is, and
			// says so.
			if err := h.svc.Start(t.Context(), c.ID); !errdefs.IsNotModified(err) || portlayer.AsError(err).Reason != portlayer.ReasonRunning {
				t.Errorf("second Start = %v, want NotModified (running)", err)
			}
			if n := len(h.drv.VMs()); n != 1 {
				t.Errorf("%d VMs after a second Start, want 1", n)
			}
		})
	}
}

func TestRunToExit(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args(
		"echo", "out 1", ";", "printerr", "err 1", ";", "echo", "out 2", ";", "echo", "-n", "no newline", ";", "exit", "3")})
	exitCh := h.wait(c.ID, portlayer.WaitNextExit)
	h.start(c.ID)
	if r := recv(t, exitCh, "exit"); r.ExitCode != 3 || r.Error != "" {
		t.Errorf("wait result %+v, want exit code 3", r)
	}
	got := h.inspect(c.ID)
	st := got.State
	if st.Status != portlayer.StatusExited || st.ExitCode != 3 || st.Pid != 0 || st.Error != "" ||
		st.FinishedAt.Before(st.StartedAt) || st.StartedAt.IsZero() {
		t.Errorf("state %+v", st)
	}
	vm := h.vm(c.ID)
	h.vmsEnd()
	if err := vm.Status().Err; err != nil {
		t.Errorf("VM ended with %v; want a guest power-off", err)
	}

	all := []string{"stdout:out 1\n", "stderr:err 1\n", "stdout:out 2\n", "stdout:no newline"}
	tests := []struct {
		name string
		opts portlayer.LogOptions
		want []string
	}{
		{name: "both", opts: portlayer.LogOptions{Stdout: true, Stderr: true, Tail: -1}},
		{name: "stdout", opts: portlayer.LogOptions{Stdout: true, Tail: -1}, want: []string{all[0], all[2], all[3]}},
		{name: "stderr", opts: portlayer.LogOptions{Stderr: true, Tail: -1}, want: []string{all[1]}},
		{name: "neither", opts: portlayer.LogOptions{Tail: -1}, want: []string{}},
		{name: "tail 2", opts: portlayer.LogOptions{Stdout: true, Tail: 2}, want: all[2:]},
		{name: "tail 0", opts: portlayer.LogOptions{Stdout: true, Stderr: true, Tail: 0}, want: []string{}},
		{name: "tail beyond", opts: portlayer.LogOptions{Stdout: true, Stderr: true, Tail: 100}},
		{name: "until before start", opts: portlayer.LogOptions{Stdout: true, Stderr: true, Tail: -1, Until: st.StartedAt.Add(-time.Second)}, want: []string{}},
		{name: "follow after exit", opts: portlayer.LogOptions{Stdout: true, Stderr: true, Tail: -1, Follow: true}},
	}
	for _, tt := range tests {
		t.Run("logs "+tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = all
			}
			msgs := h.logs(c.ID, tt.opts)
			// stdout and stderr are separate SSH streams: each keeps its
			// order, but their interleaving is not defined.
			if got := texts(msgs); !sameStreams(got, want) {
				t.Errorf("logs %q, want %q", got, want)
			}
			for _, m := range msgs {
				if m.Time.Before(st.StartedAt) || m.Time.After(st.FinishedAt) {
					t.Errorf("message time %v outside the run [%v, %v]", m.Time, st.StartedAt, st.FinishedAt)
				}
			}
		})
	}
	// The log file is Docker's json-file format; each line's attrs say
	// where in its stream it ends (for a restarted daemon).
	b, err := os.ReadFile(got.LogPath)
	if err != nil || !strings.Contains(string(b), `{"log":"out 1\n","stream":"stdout","attrs":{"vch.offset":"`) ||
		!strings.Contains(string(b), `"log":"out 2\n","stream":"stdout","attrs":{"vch.offset":"`) || !strings.Contains(string(b), `:12"},"time":"`) {
		t.Errorf("log file %q, %v", b, err)
	}
}

// TestRestart runs a container twice: logs accumulate and Since selects the
// second run.
func TestRestart(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("echo", "hello")})
	h.start(c.ID)
	h.waitExit(c.ID)
	first := h.inspect(c.ID).State
	mid := time.Now().UTC()
	h.start(c.ID)
	h.waitExit(c.ID)
	second := h.inspect(c.ID).State
	if !second.StartedAt.After(first.FinishedAt) || second.Status != portlayer.StatusExited {
		t.Errorf("second run %+v after first %+v", second, first)
	}
	if got := texts(h.logs(c.ID, portlayer.LogOptions{Stdout: true, Tail: -1})); len(got) != 2 {
		t.Errorf("logs of two runs %q", got)
	}
	if got := texts(h.logs(c.ID, portlayer.LogOptions{Stdout: true, Tail: -1, Since: mid})); len(got) != 1 {
		t.Errorf("logs since the second start %q, want one message", got)
	}
	if got := texts(h.logs(c.ID, portlayer.LogOptions{Stdout: true, Tail: -1, Until: mid})); len(got) != 1 {
		t.Errorf("logs until the second start %q, want one message", got)
	}
	if n := len(h.drv.VMs()); n != 2 {
		t.Errorf("%d VMs, want one per run", n)
	}
}

// TestRestartKeepsFinishedAt: while a restarted container runs, FinishedAt
// still reports the previous run's end (Docker's SetRunning keeps it; the
// contract says it is zero only until the first exit).
func TestRestartKeepsFinishedAt(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	h.start(c.ID)
	if err := h.svc.Kill(t.Context(), c.ID, 9); err != nil {
		t.Fatal(err)
	}
	h.waitExit(c.ID)
	first := h.inspect(c.ID).State
	h.start(c.ID)
	if got := h.inspect(c.ID).State; !got.FinishedAt.Equal(first.FinishedAt) {
		t.Errorf("a restart changed FinishedAt of the previous run (got %v, want %v)", got.FinishedAt, first.FinishedAt)
	}
}

func TestStartFailure(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		arrange  func(h *harness)
		check    func(t *testing.T, err error)
		wantCode int
		wantMsg  string
	}{
		{
			name:     "executable not found",
			args:     args("nosuch", "arg"),
			wantCode: 127,
			wantMsg:  `exec: "nosuch": executable file not found in $PATH`,
			check: func(t *testing.T, err error) {
				pe, code, ok := portlayer.StartFailure(err)
				if !ok || code != 127 || pe.Kind != portlayer.KindContainer || pe.Message != `exec: "nosuch": executable file not found in $PATH` {
					t.Errorf("Start = %v, want StartFailed 127", err)
				}
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("Start = %v, want InvalidArgument", err)
				}
			},
		},
		{
			name:     "not executable",
			args:     args("noexec"),
			wantCode: 126,
			wantMsg:  "permission denied",
			check: func(t *testing.T, err error) {
				if _, code, ok := portlayer.StartFailure(err); !ok || code != 126 {
					t.Errorf("Start = %v, want StartFailed 126", err)
				}
			},
		},
		{
			name:    "VMM does not start",
			args:    args("echo"),
			arrange: func(h *harness) { h.drv.FailStart(fmt.Errorf("no qemu: %w", errdefs.ErrUnavailable)) },
			wantMsg: "no qemu",
			check: func(t *testing.T, err error) {
				if !errdefs.IsUnavailable(err) {
					t.Errorf("Start = %v, want Unavailable", err)
				}
			},
		},
		{
			name:    "guest never answers",
			args:    args("echo"),
			arrange: func(h *harness) { h.drv.HangNextBoot() },
			wantMsg: "guest did not answer",
			check: func(t *testing.T, err error) {
				if !errdefs.IsUnavailable(err) {
					t.Errorf("Start = %v, want Unavailable", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *compute.Config) { c.BootTimeout = 200 * time.Millisecond })
			if tt.arrange != nil {
				tt.arrange(h)
			}
			c := h.create(portlayer.ContainerSpec{Args: tt.args})
			err := h.svc.Start(t.Context(), c.ID)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			tt.check(t, err)
			st := h.inspect(c.ID).State
			if st.Status != portlayer.StatusCreated || !strings.Contains(st.Error, tt.wantMsg) || st.Pid != 0 {
				t.Errorf("state %+v; want created with error %q", st, tt.wantMsg)
			}
			if tt.wantCode != 0 && st.ExitCode != tt.wantCode {
				t.Errorf("exit code %d, want %d", st.ExitCode, tt.wantCode)
			}
			if tt.wantCode == 0 && st.ExitCode == 0 {
				t.Error("a failed start recorded exit code 0")
			}
			if n := len(h.drv.Running()); n != 0 {
				t.Errorf("%d VMs left running", n)
			}
			if r := recv(t, h.wait(c.ID, portlayer.WaitNotRunning), "not-running"); r.ExitCode != st.ExitCode {
				t.Errorf("wait result %+v, want exit code %d", r, st.ExitCode)
			}
			// The container can be started again once the cause is gone.
			if tt.wantCode == 0 {
				h.start(c.ID)
				if code := h.waitExit(c.ID); code != 0 {
					t.Errorf("second start exited %d", code)
				}
				if st := h.inspect(c.ID).State; st.Error != "" {
					t.Errorf("error %q kept after a successful run", st.Error)
				}
			}
		})
	}
}

func TestAutoRemove(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		startErr bool
	}{
		{name: "after exit", args: args("exit", "7"), wantCode: 7},
		{name: "after failed start", args: args("nosuch"), wantCode: 127, startErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.create(portlayer.ContainerSpec{Args: tt.args, AutoRemove: true})
			removed := h.wait(c.ID, portlayer.WaitRemoved)
			exited := h.wait(c.ID, portlayer.WaitNextExit)
			if err := h.svc.Start(t.Context(), c.ID); (err != nil) != tt.startErr {
				t.Fatalf("Start = %v", err)
			}
			if !tt.startErr {
				if r := recv(t, exited, "exit"); r.ExitCode != tt.wantCode {
					t.Errorf("exit %+v, want %d", r, tt.wantCode)
				}
			}
			if r := recv(t, removed, "removal"); r.ExitCode != tt.wantCode {
				t.Errorf("removal %+v, want exit code %d", r, tt.wantCode)
			}
			if _, err := h.svc.Inspect(t.Context(), c.ID); !errdefs.IsNotFound(err) {
				t.Errorf("Inspect after auto-remove = %v, want NotFound", err)
			}
			if exists(filepath.Join(h.cfg.Root, "containers", c.ID)) || exists(filepath.Join(h.cfg.Root, "run", c.ID[:12])) {
				t.Error("files left after auto-remove")
			}
			if err := h.svc.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			if cs, _ := h.open(h.cfg).List(t.Context()); len(cs) != 0 {
				t.Errorf("record reloaded after auto-remove: %+v", cs)
			}
		})
	}
}

func TestWait(t *testing.T) {
	tests := []struct {
		name string
		// state prepares the container: "created", "exited" (code 5) or
		// "running" (sleep, killed by the test after the wait).
		state    string
		cond     portlayer.WaitCondition
		now      bool // the result comes at once
		act      func(h *harness, id string)
		wantCode int
	}{
		{name: "not-running on created", state: "created", cond: portlayer.WaitNotRunning, now: true},
		{name: "empty condition is not-running", state: "exited", cond: "", now: true, wantCode: 5},
		{name: "not-running on exited", state: "exited", cond: portlayer.WaitNotRunning, now: true, wantCode: 5},
		{name: "not-running on running", state: "running", cond: portlayer.WaitNotRunning, act: kill(9), wantCode: 137},
		{name: "next-exit on running", state: "running", cond: portlayer.WaitNextExit, act: kill(9), wantCode: 137},
		{
			name: "next-exit on exited waits for the next run", state: "exited", cond: portlayer.WaitNextExit,
			act: func(h *harness, id string) { h.start(id) }, wantCode: 5,
		},
		{
			name: "removed", state: "exited", cond: portlayer.WaitRemoved, wantCode: 5,
			act: func(h *harness, id string) {
				if err := h.svc.Remove(h.t.Context(), id, false); err != nil {
					h.t.Fatal(err)
				}
			},
		},
		{
			name: "removed with force", state: "running", cond: portlayer.WaitRemoved, wantCode: 137,
			act: func(h *harness, id string) {
				if err := h.svc.Remove(h.t.Context(), id, true); err != nil {
					h.t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			var c portlayer.Container
			switch tt.state {
			case "created":
				c = h.create(portlayer.ContainerSpec{Args: args("exit", "5")})
			case "exited":
				c = h.run(portlayer.ContainerSpec{Args: args("exit", "5")})
			case "running":
				c = h.create(portlayer.ContainerSpec{Args: args("sleep")})
				h.start(c.ID)
			}
			ch := h.wait(c.ID, tt.cond)
			if !tt.now {
				notYet(t, ch, 20*time.Millisecond, "wait")
				tt.act(h, c.ID)
			}
			if r := recv(t, ch, "wait result"); r.ExitCode != tt.wantCode || r.Error != "" {
				t.Errorf("result %+v, want exit code %d", r, tt.wantCode)
			}
		})
	}
	t.Run("invalid condition", func(t *testing.T) {
		h := newHarness(t)
		c := h.create(portlayer.ContainerSpec{Args: args("echo")})
		if _, err := h.svc.Wait(t.Context(), c.ID, "sometime"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Wait = %v, want InvalidArgument", err)
		}
	})
}

func kill(sig int) func(h *harness, id string) {
	return func(h *harness, id string) {
		if err := h.svc.Kill(h.t.Context(), id, sig); err != nil {
			h.t.Fatalf("Kill(%d): %v", sig, err)
		}
	}
}

// TestWaitDuringFailedStart: a not-running waiter registered while the VM
// boots is released when the start fails (the container is then not
// running).
func TestWaitDuringFailedStart(t *testing.T) {
	h := newHarness(t, func(c *compute.Config) { c.BootTimeout = 300 * time.Millisecond })
	c := h.create(portlayer.ContainerSpec{Args: args("echo")})
	h.drv.HangNextBoot()
	startErr := make(chan error, 1)
	go func() { startErr <- h.svc.Start(t.Context(), c.ID) }()
	if _, err := h.drv.WaitVM(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	ch := h.wait(c.ID, portlayer.WaitNotRunning)
	if err := recv(t, startErr, "start"); err == nil {
		t.Fatal("Start succeeded with a guest that never answers")
	}
	select {
	case r := <-ch:
		if r.ExitCode == 0 {
			t.Errorf("result %+v, want the failed start's exit code", r)
		}
	case <-time.After(time.Second):
		t.Error("a not-running waiter registered during a start that fails was never released")
	}
}

func TestKill(t *testing.T) {
	tests := []struct {
		name     string
		env      []string
		signals  []int
		wantCode int
	}{
		{name: "SIGKILL", signals: []int{9}, wantCode: 137},
		{name: "signal 0 means SIGKILL", signals: []int{0}, wantCode: 137},
		{name: "SIGTERM ignored, then SIGKILL", signals: []int{15, 9}, wantCode: 137},
		{name: "SIGTERM trapped", env: []string{"TRAP_TERM=1"}, signals: []int{15}, wantCode: 143},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Env: tt.env})
			h.start(c.ID)
			ch := h.wait(c.ID, portlayer.WaitNextExit)
			for i, sig := range tt.signals {
				if err := h.svc.Kill(t.Context(), c.ID, sig); err != nil {
					t.Fatalf("Kill(%d): %v", sig, err)
				}
				if i < len(tt.signals)-1 {
					notYet(t, ch, 20*time.Millisecond, "exit after an ignored signal")
				}
				if sig == 0 || sig == 9 {
					// As dockerd's, a SIGKILL returns once the container
					// is dead: its state says so at once.
					if st := h.inspect(c.ID).State; st.Status != portlayer.StatusExited {
						t.Errorf("state right after Kill(%d) = %s, want exited", sig, st.Status)
					}
				}
			}
			if r := recv(t, ch, "exit"); r.ExitCode != tt.wantCode {
				t.Errorf("exit %d, want %d", r.ExitCode, tt.wantCode)
			}
			if st := h.inspect(c.ID).State; st.Status != portlayer.StatusExited || st.ExitCode != tt.wantCode || st.Error != "" {
				t.Errorf("state %+v", st)
			}
		})
	}
	t.Run("invalid signal", func(t *testing.T) {
		h := newHarness(t)
		c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
		h.start(c.ID)
		for _, sig := range []int{-1, 65} {
			if err := h.svc.Kill(t.Context(), c.ID, sig); !errdefs.IsInvalidArgument(err) {
				t.Errorf("Kill(%d) = %v, want InvalidArgument", sig, err)
			}
		}
	})
	t.Run("not running", func(t *testing.T) {
		h := newHarness(t)
		created := h.create(portlayer.ContainerSpec{Args: args("echo")})
		exited := h.run(portlayer.ContainerSpec{Args: args("echo")})
		for _, id := range []string{created.ID, exited.ID} {
			if err := h.svc.Kill(t.Context(), id, 9); !errdefs.IsConflict(err) {
				t.Errorf("Kill = %v, want Conflict", err)
			}
		}
	})
}

// TestStop: the stop signal, then after the timeout SIGKILL — delivered in
// the guest, so the guest still syncs its disk before it powers off.
func TestStop(t *testing.T) {
	d := func(v time.Duration) *time.Duration { return &v }
	tests := []struct {
		name        string
		spec        portlayer.ContainerSpec
		timeout     *time.Duration
		wantCode    int
		wantSignals []int
		minElapsed  time.Duration
	}{
		{name: "SIGTERM ignored, killed after the timeout", spec: portlayer.ContainerSpec{Args: args("sleep")}, timeout: d(200 * time.Millisecond), wantCode: 137, wantSignals: []int{15, 9}, minElapsed: 200 * time.Millisecond},
		{name: "SIGTERM trapped", spec: portlayer.ContainerSpec{Args: args("sleep"), Env: []string{"TRAP_TERM=1"}}, timeout: d(10 * time.Second), wantCode: 143, wantSignals: []int{15}},
		{name: "negative timeout waits", spec: portlayer.ContainerSpec{Args: args("sleep"), Env: []string{"TRAP_TERM=1"}}, timeout: d(-1), wantCode: 143, wantSignals: []int{15}},
		{name: "zero timeout kills at once", spec: portlayer.ContainerSpec{Args: args("sleep"), Env: []string{"TRAP_TERM=1"}}, timeout: d(0), wantCode: 137, wantSignals: []int{9}},
		{name: "container's stop signal", spec: portlayer.ContainerSpec{Args: args("sleep"), StopSignal: 2}, timeout: d(50 * time.Millisecond), wantCode: 137, wantSignals: []int{2, 9}},
		{name: "container's stop timeout", spec: portlayer.ContainerSpec{Args: args("sleep"), StopTimeout: d(100 * time.Millisecond)}, wantCode: 137, wantSignals: []int{15, 9}, minElapsed: 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.create(tt.spec)
			h.start(c.ID)
			begin := time.Now()
			if err := h.svc.Stop(t.Context(), c.ID, tt.timeout); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if el := time.Since(begin); el < tt.minElapsed {
				t.Errorf("Stop returned after %v, before the %v timeout", el, tt.minElapsed)
			}
			// Stop returns once the exit is recorded.
			if st := h.inspect(c.ID).State; st.Status != portlayer.StatusExited || st.ExitCode != tt.wantCode {
				t.Errorf("state after Stop %+v, want exited %d", st, tt.wantCode)
			}
			if got := h.vm(c.ID).Signals(); !slices.Equal(got, tt.wantSignals) {
				t.Errorf("signals %v, want %v", got, tt.wantSignals)
			}
			h.vmsEnd()
			// Stopping a stopped container leaves it as it is, and says
			// so.
			if err := h.svc.Stop(t.Context(), c.ID, nil); !errdefs.IsNotModified(err) || portlayer.AsError(err).Reason != portlayer.ReasonNotRunning {
				t.Errorf("second Stop = %v, want NotModified (not running)", err)
			}
		})
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name    string
		running bool
		force   bool
		wantErr bool
	}{
		{name: "created"},
		{name: "exited", force: false},
		{name: "running without force", running: true, wantErr: true},
		{name: "running with force", running: true, force: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			var c portlayer.Container
			switch {
			case tt.running:
				c = h.create(portlayer.ContainerSpec{Name: "victim", Args: args("sleep")})
				h.start(c.ID)
			case tt.name == "exited":
				c = h.run(portlayer.ContainerSpec{Name: "victim", Args: args("echo", "x")})
			default:
				c = h.create(portlayer.ContainerSpec{Name: "victim", Args: args("echo")})
			}
			err := h.svc.Remove(t.Context(), "victim", tt.force)
			if tt.wantErr {
				pe := portlayer.AsError(err)
				if !errdefs.IsConflict(err) || pe == nil || pe.Op != "remove" || pe.Reason != portlayer.ReasonRunning || pe.ID != c.ID {
					t.Fatalf("Remove = %v, want ContainerState remove running (Conflict)", err)
				}
				if st := h.inspect(c.ID).State; st.Status != portlayer.StatusRunning {
					t.Errorf("refused Remove changed the state: %+v", st)
				}
				return
			}
			if err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if _, err := h.svc.Inspect(t.Context(), c.ID); !errdefs.IsNotFound(err) {
				t.Errorf("Inspect after Remove = %v, want NotFound", err)
			}
			if exists(filepath.Join(h.cfg.Root, "containers", c.ID)) || exists(filepath.Join(h.cfg.Root, "run", c.ID[:12])) {
				t.Error("files left after Remove")
			}
			if n := len(h.drv.Running()); n != 0 {
				t.Errorf("%d VMs running after Remove", n)
			}
			// The name is free again.
			h.create(portlayer.ContainerSpec{Name: "victim", Args: args("echo")})
			if err := h.svc.Remove(t.Context(), c.ID, false); !errdefs.IsNotFound(err) {
				t.Errorf("second Remove = %v, want NotFound", err)
			}
		})
	}
}

// TestConcurrentStart: a second Start while the VM boots either is refused
// (Conflict) or waits for the first and then finds it running
// (NotModified); it never boots a second VM.
func TestConcurrentStart(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	release := h.drv.HoldNextBoot()
	defer release()
	first := make(chan error, 1)
	go func() { first <- h.svc.Start(t.Context(), c.ID) }()
	if _, err := h.drv.WaitVM(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- h.svc.Start(t.Context(), c.ID) }()
	time.AfterFunc(20*time.Millisecond, release)
	if err := recv(t, first, "first Start"); err != nil {
		t.Fatalf("first Start: %v", err)
	}
	if err := recv(t, second, "second Start"); !errdefs.IsNotModified(err) && !errdefs.IsConflict(err) {
		t.Errorf("second Start = %v, want NotModified or Conflict", err)
	}
	if st := h.inspect(c.ID).State; st.Status != portlayer.StatusRunning {
		t.Errorf("state %+v, want running", st)
	}
	if n := len(h.drv.VMs()); n != 1 {
		t.Errorf("%d VMs, want 1", n)
	}
}

// TestRemoveDuringStart: Remove while the VM boots must not leave a VM
// running for a container that no longer exists. Either Remove waits for
// the start and then refuses (Conflict: it runs), or the start is undone.
func TestRemoveDuringStart(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	release := h.drv.HoldNextBoot()
	defer release()
	startErr := make(chan error, 1)
	go func() { startErr <- h.svc.Start(t.Context(), c.ID) }()
	if _, err := h.drv.WaitVM(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	rmErr := make(chan error, 1)
	go func() { rmErr <- h.svc.Remove(t.Context(), c.ID, false) }()
	time.AfterFunc(20*time.Millisecond, release)
	sErr := recv(t, startErr, "Start")
	rErr := recv(t, rmErr, "Remove")
	if _, err := h.svc.Inspect(t.Context(), c.ID); errdefs.IsNotFound(err) {
		orphans := h.drv.Running()
		for _, vm := range orphans {
			_ = vm.Kill()
		}
		if len(orphans) > 0 {
			t.Errorf("Remove during Start succeeded (Remove %v, Start %v) and the container's VM keeps running, unreachable", rErr, sErr)
		}
		return
	}
	if sErr != nil || !errdefs.IsConflict(rErr) {
		t.Errorf("Start = %v, Remove = %v; want nil and Conflict", sErr, rErr)
	}
}

func TestVMDiesMidRun(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("echo", "before", ";", "sleep")})
	h.start(c.ID)
	ch := h.wait(c.ID, portlayer.WaitNextExit)
	// The crash comes after the output was logged, so that the log must
	// keep it (not before the fake guest wrote it).
	for deadline := time.Now().Add(10 * time.Second); len(h.logs(c.ID, portlayer.LogOptions{Stdout: true, Tail: -1})) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no output before the crash")
		}
		time.Sleep(time.Millisecond)
	}
	h.vm(c.ID).Crash(errors.New("qemu: terminated by signal 11"))
	if r := recv(t, ch, "exit"); r.ExitCode != 255 {
		t.Errorf("exit %d, want 255", r.ExitCode)
	}
	st := h.inspect(c.ID).State
	if st.Status != portlayer.StatusExited || st.ExitCode != 255 || !strings.Contains(st.Error, "signal 11") || st.FinishedAt.IsZero() {
		t.Errorf("state %+v; want exited 255 with the VM's error", st)
	}
	if got := texts(h.logs(c.ID, portlayer.LogOptions{Stdout: true, Tail: -1})); !slices.Equal(got, []string{"stdout:before\n"}) {
		t.Errorf("logs %q", got)
	}
}

func TestAttach(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("echo", "a", ";", "printerr", "b", ";", "echo", "-n", "c", ";", "exit", "2")})
	var out, errb syncBuffer
	a, err := h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdout: &out, Stderr: &errb, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	notYet(t, a.Done(), 10*time.Millisecond, "Done before Start")
	h.start(c.ID)
	recv(t, a.Done(), "attachment Done")
	if out.String() != "a\nc" || errb.String() != "b\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errb.String())
	}
	if err := a.Close(); err != nil || a.Close() != nil {
		t.Errorf("Close not idempotent: %v", err)
	}

	t.Run("logs replay only", func(t *testing.T) {
		var out, errb syncBuffer
		a, err := h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdout: &out, Stderr: &errb, Logs: true})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, a.Done(), "Done")
		if out.String() != "a\nc" || errb.String() != "b\n" {
			t.Errorf("replay stdout %q stderr %q", out.String(), errb.String())
		}
	})
	t.Run("logs replay then live", func(t *testing.T) {
		var out syncBuffer
		a, err := h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdout: &out, Logs: true, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		h.start(c.ID)
		recv(t, a.Done(), "Done")
		if out.String() != "a\nca\nc" {
			t.Errorf("stdout %q, want the first run's then the second's", out.String())
		}
	})
	t.Run("close detaches", func(t *testing.T) {
		s := h.create(portlayer.ContainerSpec{Args: args("sleep")})
		a, err := h.svc.Attach(t.Context(), s.ID, portlayer.AttachOptions{Stdout: io.Discard, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		h.start(s.ID)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		recv(t, a.Done(), "Done after Close")
		if st := h.inspect(s.ID).State; st.Status != portlayer.StatusRunning {
			t.Errorf("detach changed the state: %+v", st)
		}
	})
}

func TestAttachStdin(t *testing.T) {
	tests := []struct {
		name        string
		attachFirst bool
		tty         bool
	}{
		{name: "attached before start", attachFirst: true},
		{name: "attached while running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.create(portlayer.ContainerSpec{Args: args("cat"), OpenStdin: true, StdinOnce: true, Tty: tt.tty})
			exitCh := h.wait(c.ID, portlayer.WaitNextExit)
			var out syncBuffer
			attach := func() portlayer.Attachment {
				a, err := h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdin: strings.NewReader("hello\nworld\n"), Stdout: &out, Stream: true})
				if err != nil {
					t.Fatal(err)
				}
				return a
			}
			var a portlayer.Attachment
			if tt.attachFirst {
				a = attach()
				h.start(c.ID)
			} else {
				h.start(c.ID)
				notYet(t, exitCh, 20*time.Millisecond, "cat without stdin")
				a = attach()
			}
			if r := recv(t, exitCh, "exit at stdin EOF"); r.ExitCode != 0 {
				t.Errorf("exit %d", r.ExitCode)
			}
			recv(t, a.Done(), "Done")
			if out.String() != "hello\nworld\n" {
				t.Errorf("stdout %q", out.String())
			}
			if p := h.vm(c.ID).Processes(); len(p) != 1 || !p[0].Stdin {
				t.Errorf("process %+v, want stdin connected", p)
			}
		})
	}
}

// TestAttachStdinTTY: with a TTY, EOF on the client's stdin ends the attach
// but never closes the container's stdin (dockerd's rule: the CLI ends its
// stdin to detach), so a later attach can type into the same process.
func TestAttachStdinTTY(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("cat"), OpenStdin: true, StdinOnce: true, Tty: true})
	exitCh := h.wait(c.ID, portlayer.WaitNextExit)
	var out syncBuffer
	a, err := h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdin: strings.NewReader("hello\n"), Stdout: &out, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	h.start(c.ID)
	recv(t, a.Done(), "Done at stdin EOF")
	notYet(t, exitCh, 100*time.Millisecond, "cat after a TTY client's EOF")
	if st := h.inspect(c.ID).State.Status; st != portlayer.StatusRunning {
		t.Errorf("status %s after the attach ended, want running", st)
	}
	if err := h.svc.Kill(t.Context(), c.ID, 9); err != nil {
		t.Fatal(err)
	}
	recv(t, exitCh, "exit after kill")
}

// TestLogsFollow: a follower gets output as it is produced and its channel
// closes at the exit.
func TestLogsFollow(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("cat"), OpenStdin: true, StdinOnce: true})
	pr, pw := io.Pipe()
	if _, err := h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdin: pr, Stream: true}); err != nil {
		t.Fatal(err)
	}
	h.start(c.ID)
	ch, err := h.svc.Logs(t.Context(), c.ID, portlayer.LogOptions{Stdout: true, Follow: true, Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"one\n", "two\n"} {
		if _, err := io.WriteString(pw, line); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, ch, "followed line"); string(m.Data) != line {
			t.Errorf("followed %q, want %q", m.Data, line)
		}
	}
	pw.Close()
	select {
	case m, ok := <-ch:
		if ok {
			t.Errorf("extra message %q", m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow channel not closed at exit")
	}
}

// TestLargeOutput: 10,000 lines reach an attached client and the log
// complete and in order.
func TestLargeOutput(t *testing.T) {
	const n = 10000
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("lines", fmt.Sprint(n))})
	runAttached(t, h, c.ID, n)
	msgs := h.logs(c.ID, portlayer.LogOptions{Stdout: true, Tail: -1})
	if len(msgs) != n {
		t.Fatalf("%d log messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if got, want := string(m.Data), fmt.Sprintf("line %d\n", i+1); got != want {
			t.Fatalf("message %d = %q, want %q", i, got, want)
		}
	}
	if last := h.logs(c.ID, portlayer.LogOptions{Stdout: true, Tail: 1}); len(last) != 1 || string(last[0].Data) != fmt.Sprintf("line %d\n", n) {
		t.Errorf("tail 1 = %q", texts(last))
	}
}

// runAttached starts container id, whose command is `lines n`, with a
// client attached to its stdout, and checks that the client gets every
// line in order and the exit is 0.
func runAttached(t *testing.T, h *harness, id string, n int) {
	t.Helper()
	var out syncBuffer
	a, err := h.svc.Attach(t.Context(), id, portlayer.AttachOptions{Stdout: &out, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	h.start(id)
	recv(t, a.Done(), "Done")
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if out.String() != want.String() {
		t.Errorf("attached output: %d bytes, want %d", len(out.String()), want.Len())
	}
	if code := h.waitExit(id); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// sameStreams reports whether got and want hold the same messages in the
// same order within each stream ("stdout:…", "stderr:…").
func sameStreams(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, prefix := range []string{"stdout:", "stderr:"} {
		only := func(s []string) []string {
			var out []string
			for _, m := range s {
				if strings.HasPrefix(m, prefix) {
					out = append(out, m)
				}
			}
			return out
		}
		if !slices.Equal(only(got), only(want)) {
			return false
		}
	}
	return true
}

// TestLogRotation: with max-size and max-file the log files stay bounded,
// the oldest lines are dropped, and Logs reads across the rotated files in
// order (Docker json-file's max-size/max-file).
func TestLogRotation(t *testing.T) {
	h := newHarness(t)
	c := h.run(portlayer.ContainerSpec{Args: args("lines", "2000"), LogMaxSizeBytes: 16 << 10, LogMaxFiles: 3})
	var total int64
	for _, suffix := range []string{"", ".1", ".2", ".3"} {
		st, err := os.Stat(c.LogPath + suffix)
		if suffix == ".3" {
			if err == nil {
				t.Errorf("%s.3 exists: max-file 3 keeps three files", c.LogPath)
			}
			continue
		}
		if err != nil {
			t.Fatalf("log file %s: %v", suffix, err)
		}
		if st.Size() > 16<<10 {
			t.Errorf("log file %q is %d bytes, over max-size", suffix, st.Size())
		}
		total += st.Size()
	}
	msgs := h.logs(c.ID, portlayer.LogOptions{Stdout: true, Stderr: true, Tail: -1})
	if len(msgs) == 0 || len(msgs) >= 2000 {
		t.Fatalf("%d messages after rotation, want some but not all 2000", len(msgs))
	}
	last := string(msgs[len(msgs)-1].Data)
	first := string(msgs[0].Data)
	prev := -1
	for _, m := range msgs {
		n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(m.Data)), "line "))
		if err != nil || n <= prev {
			t.Fatalf("messages out of order: %q after %d", m.Data, prev)
		}
		prev = n
	}
	if last != "line 2000\n" {
		t.Errorf("last message %q, want the newest line", last)
	}
	t.Logf("kept %d of 2000 lines (%d bytes), first %q", len(msgs), total, first)
}

// TestNoLog: a container that keeps no log (Docker's "none" logging
// driver) still streams its output to an attached client whole and in
// order, writes no log file, runs to its exit when no one reads (output
// past the guest's spool is acknowledged, not held), and answers Logs
// and a replaying Attach with FailedPrecondition, ReasonNoLog.
func TestNoLog(t *testing.T) {
	const n = 200000 // ~2.5 MB, past wire.SpoolLimitBytes
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("lines", fmt.Sprint(n)), NoLog: true})
	if c.LogPath != "" {
		t.Errorf("LogPath %q, want none", c.LogPath)
	}
	runAttached(t, h, c.ID, n)

	// Again with no one attached: the run must not stall on a full spool.
	h.start(c.ID)
	if code := h.waitExit(c.ID); code != 0 {
		t.Errorf("unattached run: exit %d", code)
	}

	noLog := func(what string, err error) {
		t.Helper()
		pe := portlayer.AsError(err)
		if pe == nil || pe.Class != portlayer.ClassFailedPrecondition || pe.Reason != portlayer.ReasonNoLog || pe.ID != c.ID {
			t.Errorf("%s: %#v, want FailedPrecondition %s for %s", what, err, portlayer.ReasonNoLog, c.ID)
		}
	}
	_, err := h.svc.Logs(t.Context(), c.ID, portlayer.LogOptions{Stdout: true, Tail: -1})
	noLog("Logs", err)
	_, err = h.svc.Attach(t.Context(), c.ID, portlayer.AttachOptions{Stdout: io.Discard, Logs: true})
	noLog("Attach with Logs", err)
	err = filepath.WalkDir(h.cfg.Root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".log") {
			t.Errorf("a log file was written: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
