package hvfake_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/hvfake"
	"github.com/vchproject/vch/internal/hypervisor/hvtest"
)

func spec(t *testing.T) hypervisor.Spec {
	return hypervisor.Spec{Name: "vm0", MemoryMiB: 256, CPUs: 1, ChannelName: wire.PortName, RuntimeDir: t.TempDir()}
}

// boot starts a VM and connects the real host-side client (package agent).
func boot(t *testing.T, d *hvfake.Driver) (*hvfake.VM, *agent.Client) {
	t.Helper()
	vm, err := d.Start(t.Context(), spec(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = vm.Kill() })
	g, err := agent.Dial(t.Context(), vm.Channel())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return vm.(*hvfake.VM), g
}

type result struct {
	stdout, stderr string
	code           int
	err            error
}

// run starts p and collects its output and exit status; signal, when not
// nil, is called once the process runs.
func run(t *testing.T, g *agent.Client, p wire.Process, stdin string, signal func(*agent.Process)) result {
	t.Helper()
	proc, err := g.Start(t.Context(), p)
	if err != nil {
		return result{err: err}
	}
	var out, errb bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(&out, proc.Stdout()) }()
	go func() { defer wg.Done(); _, _ = io.Copy(&errb, proc.Stderr()) }()
	if p.Stdin {
		_, _ = io.WriteString(proc.Stdin(), stdin)
		_ = proc.Stdin().Close()
	}
	if signal != nil {
		signal(proc)
	}
	code, err := proc.Wait(t.Context())
	wg.Wait()
	return result{stdout: out.String(), stderr: errb.String(), code: code, err: err}
}

func TestPrograms(t *testing.T) {
	sig := func(ns ...int) func(*agent.Process) {
		return func(p *agent.Process) {
			for _, n := range ns {
				if err := p.Signal(context.Background(), n); err != nil {
					t.Errorf("signal %d: %v", n, err)
				}
			}
		}
	}
	tests := []struct {
		name   string
		proc   wire.Process
		stdin  string
		signal func(*agent.Process)
		want   result
	}{
		{name: "echo", proc: wire.Process{Args: []string{"echo", "a", "b"}}, want: result{stdout: "a b\n"}},
		{name: "echo -n", proc: wire.Process{Args: []string{"echo", "-n", "a"}}, want: result{stdout: "a"}},
		{name: "printerr", proc: wire.Process{Args: []string{"printerr", "oops"}}, want: result{stderr: "oops\n"}},
		{name: "printerr with tty", proc: wire.Process{Args: []string{"printerr", "oops"}, Tty: true}, want: result{stdout: "oops\n"}},
		{name: "sequence", proc: wire.Process{Args: []string{"echo", "x", ";", "printerr", "y", ";", "exit", "3", ";", "echo", "never"}}, want: result{stdout: "x\n", stderr: "y\n", code: 3}},
		{name: "lines", proc: wire.Process{Args: []string{"lines", "3"}}, want: result{stdout: "line 1\nline 2\nline 3\n"}},
		{name: "cat", proc: wire.Process{Args: []string{"cat"}, Stdin: true}, stdin: "hello\n", want: result{stdout: "hello\n"}},
		{name: "cat without stdin", proc: wire.Process{Args: []string{"cat"}}, want: result{}},
		{name: "sleep duration", proc: wire.Process{Args: []string{"sleep", "1ms", ";", "echo", "woke"}}, want: result{stdout: "woke\n"}},
		{name: "sleep killed", proc: wire.Process{Args: []string{"sleep"}}, signal: sig(9), want: result{code: 137}},
		{name: "sleep ignores term", proc: wire.Process{Args: []string{"sleep"}}, signal: sig(15, 2, 9), want: result{code: 137}},
		{name: "sleep traps term", proc: wire.Process{Args: []string{"sleep"}, Env: []string{"TRAP_TERM=1"}}, signal: sig(15), want: result{code: 143}},
	}
	d := hvfake.New()
	_, g := boot(t, d)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, g, tt.proc, tt.stdin, tt.signal)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantMsg  string
	}{
		{args: []string{"nosuch"}, wantCode: 127, wantMsg: `exec: "nosuch": executable file not found in $PATH`},
		{args: []string{"noexec"}, wantCode: 126, wantMsg: `exec: "noexec": permission denied`},
	}
	d := hvfake.New()
	vm, g := boot(t, d)
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			_, err := g.Start(t.Context(), wire.Process{Args: tt.args})
			var se *agent.StartError
			if !errors.As(err, &se) || se.ExitCode != tt.wantCode || se.Message != tt.wantMsg {
				t.Fatalf("got %v (%#v), want StartError %d %q", err, se, tt.wantCode, tt.wantMsg)
			}
		})
	}
	if n := len(vm.Processes()); n != len(tests) {
		t.Errorf("recorded %d processes, want %d", n, len(tests))
	}
}

func TestSetupAndPowerOff(t *testing.T) {
	d := hvfake.New()
	vm, g := boot(t, d)
	want := wire.Setup{Hostname: "abc", Hosts: "127.0.0.1 localhost\n", Mounts: []wire.Mount{{Type: wire.MountTmpfs, Target: "/t"}}}
	if err := g.Setup(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	if got, ok := vm.Setup(); !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("Setup() = %+v, %v; want %+v", got, ok, want)
	}
	if err := g.PowerOff(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-vm.Done()
	if err := vm.Status().Err; err != nil {
		t.Errorf("Status().Err = %v after power-off, want nil", err)
	}
	if len(d.Running()) != 0 {
		t.Error("VM still listed as running")
	}
}

func TestKillAndCrash(t *testing.T) {
	crash := errors.New("boom")
	tests := []struct {
		name    string
		end     func(*hvfake.VM)
		wantErr error
	}{
		{name: "kill", end: func(vm *hvfake.VM) { _ = vm.Kill(); _ = vm.Kill() }, wantErr: hvfake.ErrKilled},
		{name: "crash", end: func(vm *hvfake.VM) { vm.Crash(crash) }, wantErr: crash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm, g := boot(t, hvfake.New())
			proc, err := g.Start(t.Context(), wire.Process{Args: []string{"sleep"}})
			if err != nil {
				t.Fatal(err)
			}
			tt.end(vm)
			<-vm.Done()
			if got := vm.Status().Err; !errors.Is(got, tt.wantErr) {
				t.Errorf("Status().Err = %v, want %v", got, tt.wantErr)
			}
			if code, err := proc.Wait(t.Context()); err == nil {
				t.Errorf("Wait = %d, nil; want an error (no exit status)", code)
			}
		})
	}
}

func TestDriverFailures(t *testing.T) {
	t.Run("FailStart", func(t *testing.T) {
		d := hvfake.New()
		want := errors.New("no qemu")
		d.FailStart(want)
		if _, err := d.Start(t.Context(), spec(t)); !errors.Is(err, want) {
			t.Fatalf("Start = %v, want %v", err, want)
		}
		vm, err := d.Start(t.Context(), spec(t))
		if err != nil {
			t.Fatalf("second Start = %v, want success", err)
		}
		_ = vm.Kill()
		if n := len(d.Specs()); n != 2 {
			t.Errorf("recorded %d specs, want 2", n)
		}
	})
	t.Run("HangNextBoot", func(t *testing.T) {
		d := hvfake.New()
		d.HangNextBoot()
		vm, err := d.Start(t.Context(), spec(t))
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Kill()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if _, err := agent.Dial(ctx, vm.Channel()); !errdefs.IsUnavailable(err) {
			t.Fatalf("Dial = %v, want Unavailable", err)
		}
	})
	t.Run("HoldNextBoot", func(t *testing.T) {
		d := hvfake.New()
		release := d.HoldNextBoot()
		vm, err := d.Start(t.Context(), spec(t))
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Kill()
		time.AfterFunc(10*time.Millisecond, release)
		g, err := agent.Dial(t.Context(), vm.Channel())
		if err != nil {
			t.Fatal(err)
		}
		g.Close()
	})
	t.Run("invalid spec", func(t *testing.T) {
		for _, mod := range []func(*hypervisor.Spec){
			func(s *hypervisor.Spec) { s.Name = "" },
			func(s *hypervisor.Spec) { s.MemoryMiB = 1 },
			func(s *hypervisor.Spec) { s.CPUs = 0 },
			func(s *hypervisor.Spec) { s.RuntimeDir += "/missing" },
			func(s *hypervisor.Spec) { s.ChannelName = "" },
			func(s *hypervisor.Spec) { s.Disks = []hypervisor.Disk{{Path: "/x.vmdk", Format: "vmdk"}} },
		} {
			s := spec(t)
			mod(&s)
			if _, err := hvfake.New().Start(t.Context(), s); !errdefs.IsInvalidArgument(err) {
				t.Errorf("Start(%+v) = %v, want InvalidArgument", s, err)
			}
		}
	})
	t.Run("duplicate running name", func(t *testing.T) {
		d := hvfake.New()
		vm, err := d.Start(t.Context(), spec(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Start(t.Context(), spec(t)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("second Start = %v, want InvalidArgument", err)
		}
		_ = vm.Kill()
		vm, err = d.Start(t.Context(), spec(t))
		if err != nil {
			t.Fatalf("Start after the first ended = %v", err)
		}
		_ = vm.Kill()
	})
	t.Run("FailOverlay", func(t *testing.T) {
		d := hvfake.New()
		dir := t.TempDir()
		base := hypervisor.Disk{Path: dir + "/base.raw", Format: "raw", ReadOnly: true}
		if _, err := d.CreateOverlay(t.Context(), base, dir+"/rw.qcow2", 0); err == nil {
			t.Error("overlay over a missing base succeeded")
		}
		if err := writeFile(base.Path); err != nil {
			t.Fatal(err)
		}
		want := errors.New("disk full")
		d.FailOverlay(want)
		if _, err := d.CreateOverlay(t.Context(), base, dir+"/rw.qcow2", 0); !errors.Is(err, want) {
			t.Errorf("CreateOverlay = %v, want %v", err, want)
		}
		disk, err := d.CreateOverlay(t.Context(), base, dir+"/rw.qcow2", 1<<30)
		if err != nil || disk.Format != "qcow2" {
			t.Fatalf("CreateOverlay = %+v, %v", disk, err)
		}
		if got := d.Overlays(); len(got) != 1 || got[0].Path != dir+"/rw.qcow2" || got[0].SizeBytes != 1<<30 {
			t.Errorf("Overlays() = %+v", got)
		}
	})
}

func TestLargeOutputInOrder(t *testing.T) {
	_, g := boot(t, hvfake.New())
	got := run(t, g, wire.Process{Args: []string{"lines", "10000"}}, "", nil)
	lines := strings.Split(strings.TrimSuffix(got.stdout, "\n"), "\n")
	if len(lines) != 10000 || lines[0] != "line 1" || lines[9999] != "line 10000" {
		t.Fatalf("got %d lines, first %q", len(lines), lines[0])
	}
}

func writeFile(path string) error { return os.WriteFile(path, nil, 0o600) }

// The fake passes the conformance suite's adoption part, as QEMU does.
func TestConformanceAdopt(t *testing.T) {
	d := hvfake.New()
	hvtest.RunAdopt(t, func(t *testing.T) hypervisor.Driver { return d }, hvtest.GuestImage{
		Kernel: "/boot/vmlinuz-fake", Initrd: "/boot/initrd-fake", ChannelName: wire.PortName,
		RootDisk: func(t *testing.T, dir string) hypervisor.Disk {
			path := filepath.Join(dir, "root.raw")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return hypervisor.Disk{Path: path, Format: "raw"}
		},
	})
}

// A resumable process keeps running while no host is connected; an
// adopting host lists it and resumes its output where it left off.
func TestAdoptResumesProcess(t *testing.T) {
	d := hvfake.New()
	sp := spec(t)
	vm, err := d.Start(t.Context(), sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = vm.Kill() })
	g, err := agent.Dial(t.Context(), vm.Channel())
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Start(t.Context(), wire.Process{Args: []string{"ticks", "5ms"}, ID: wire.MainProcessID, Resumable: true})
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 4)
	if _, err := io.ReadFull(p.Stdout(), first); err != nil || string(first) != "0\n1\n" {
		t.Fatalf("first output %q, %v", first, err)
	}
	g.Close()
	time.Sleep(50 * time.Millisecond) // ticks while nobody listens

	av, err := d.Adopt(t.Context(), sp)
	if err != nil {
		t.Fatal(err)
	}
	if av.Pid() != vm.Pid() {
		t.Errorf("adopted pid %d, want %d", av.Pid(), vm.Pid())
	}
	g2, err := agent.Dial(t.Context(), av.Channel())
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	l, err := g2.Processes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Processes) != 1 || !l.Processes[0].Running || l.Processes[0].Stdout <= 4 {
		t.Fatalf("Processes = %+v", l)
	}
	p2, err := g2.Attach(t.Context(), wire.Attach{ID: wire.MainProcessID, Stdout: 4}, true)
	if err != nil {
		t.Fatal(err)
	}
	next := make([]byte, 4)
	if _, err := io.ReadFull(p2.Stdout(), next); err != nil || string(next) != "2\n3\n" {
		t.Fatalf("resumed output %q, %v; want the lines after the stored ones", next, err)
	}
	if err := p2.Signal(t.Context(), 9); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, p2.Stdout())
	go io.Copy(io.Discard, p2.Stderr())
	if code, err := p2.Wait(t.Context()); err != nil || code != 137 {
		t.Errorf("Wait = %d, %v; want 137", code, err)
	}
	if got := d.Adopts(); len(got) != 1 || got[0].Name != sp.Name {
		t.Errorf("Adopts = %+v", got)
	}
}

func TestAdoptErrors(t *testing.T) {
	d := hvfake.New()
	sp := spec(t)
	if _, err := d.Adopt(t.Context(), sp); !errdefs.IsNotFound(err) {
		t.Errorf("Adopt without a VM: %v, want NotFound", err)
	}
	vm, err := d.Start(t.Context(), sp)
	if err != nil {
		t.Fatal(err)
	}
	want := errors.New("boom")
	d.FailAdopt(want)
	if _, err := d.Adopt(t.Context(), sp); !errors.Is(err, want) {
		t.Errorf("FailAdopt: %v", err)
	}
	d.CrashAll(errors.New("host rebooted"))
	<-vm.Done()
	if _, err := d.Adopt(t.Context(), sp); !errdefs.IsNotFound(err) {
		t.Errorf("Adopt after CrashAll: %v, want NotFound", err)
	}
}
