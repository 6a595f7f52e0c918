package vmtemplate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
)

// fakeDriver is a hypervisor.Driver and Templater that records what it
// was asked and fails on demand. Its restored guests answer the wake as
// tether does (unless mute) and record it.
type fakeDriver struct {
	mu          sync.Mutex
	calls       []string // "start", "save", "restore"
	wakes       []wire.Wake
	failSave    bool
	failRestore bool
	mute        bool // restored guests never answer the wake
}

func (d *fakeDriver) record(c string) {
	d.mu.Lock()
	d.calls = append(d.calls, c)
	d.mu.Unlock()
}

func (d *fakeDriver) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

func (d *fakeDriver) Start(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	d.record("start")
	host, _ := net.Pipe()
	return newFakeVM(host), nil
}

func (d *fakeDriver) CreateOverlay(ctx context.Context, base hypervisor.Disk, path string, size int64) (hypervisor.Disk, error) {
	return hypervisor.Disk{}, errdefs.ErrNotImplemented
}

func (d *fakeDriver) Capabilities() hypervisor.Capabilities {
	return hypervisor.Capabilities{Templates: true, Accelerator: "fake"}
}

func (d *fakeDriver) TemplateKey(spec hypervisor.Spec) (string, error) {
	return fmt.Sprintf("key%013d%d", spec.MemoryMiB, len(spec.NICs)), nil
}

func (d *fakeDriver) SaveTemplate(ctx context.Context, spec hypervisor.Spec, dir string, ready func(context.Context, net.Conn) error) error {
	d.record("save")
	for i, n := range spec.NICs {
		if n.File != nil || n.MAC != wire.TemplateMAC(i) {
			return fmt.Errorf("template NIC %d: %+v, want no file and the template MAC", i, n)
		}
	}
	if d.failSave {
		return fmt.Errorf("fake: save failed: %w", errdefs.ErrUnavailable)
	}
	host, guest := net.Pipe()
	go func() { _, _ = io.WriteString(guest, "boot noise\n"+wire.TemplateReady) }()
	if err := ready(ctx, host); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "state"), []byte("saved"), 0o600)
}

func (d *fakeDriver) Restore(ctx context.Context, spec hypervisor.Spec, dir string) (hypervisor.VM, error) {
	d.record("restore")
	if _, err := os.Stat(filepath.Join(dir, "state")); err != nil || d.failRestore {
		return nil, fmt.Errorf("fake: no template: %w", errdefs.ErrFailedPrecondition)
	}
	host, guest := net.Pipe()
	vm := newFakeVM(host)
	go func() {
		line, err := bufio.NewReader(guest).ReadBytes('\n')
		if err != nil {
			return
		}
		var w wire.Wake
		if json.Unmarshal(bytes.TrimSpace(line), &w) == nil {
			d.mu.Lock()
			d.wakes = append(d.wakes, w)
			mute := d.mute
			d.mu.Unlock()
			if !mute {
				_, _ = io.WriteString(guest, wire.Awake)
			}
		}
	}()
	return vm, nil
}

type fakeVM struct {
	ch   net.Conn
	done chan struct{}
	once sync.Once
}

func newFakeVM(ch net.Conn) *fakeVM { return &fakeVM{ch: ch, done: make(chan struct{})} }

func (v *fakeVM) Channel() net.Conn { return v.ch }
func (v *fakeVM) Pid() int          { return 0 }
func (v *fakeVM) Done() <-chan struct{} {
	return v.done
}
func (v *fakeVM) Status() hypervisor.ExitStatus { return hypervisor.ExitStatus{} }
func (v *fakeVM) Kill() error {
	v.once.Do(func() { v.ch.Close(); close(v.done) })
	return nil
}

func newStarter(t *testing.T, d *fakeDriver, enabled bool) *Starter {
	t.Helper()
	s, err := New(Config{Enabled: enabled, Dir: filepath.Join(t.TempDir(), "templates"), WakeTimeout: 500 * time.Millisecond},
		d, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func spec(mem int, macs ...string) hypervisor.Spec {
	s := hypervisor.Spec{Name: "c1", MemoryMiB: mem, CPUs: 1}
	for _, m := range macs {
		s.NICs = append(s.NICs, hypervisor.NIC{File: os.Stdin, MAC: m})
	}
	return s
}

func TestStarter(t *testing.T) {
	for _, tc := range []struct {
		name    string
		enabled bool
		setup   func(d *fakeDriver)
		// between is called before run i, if set
		between func(d *fakeDriver, i int)
		runs    int
		// want: the driver's calls for the first start (the build, when
		// enabled) and the runs after it
		want []string
	}{
		{name: "off boots every VM", enabled: false, runs: 2, want: []string{"start", "start"}},
		{name: "first start builds, later ones restore", enabled: true, runs: 3,
			want: []string{"save", "restore", "restore", "restore", "restore"}},
		{name: "a failed build boots and is not retried at once", enabled: true, runs: 2,
			setup: func(d *fakeDriver) { d.failSave = true },
			want:  []string{"save", "start", "start", "start"}},
		{name: "a failed restore boots, the template is made again", enabled: true, runs: 3,
			between: func(d *fakeDriver, i int) {
				d.mu.Lock()
				d.failRestore = i == 0
				d.mu.Unlock()
			},
			want: []string{"save", "restore", "restore", "start", "save", "restore", "restore"}},
		{name: "two failed restores in a row back off", enabled: true, runs: 4,
			between: func(d *fakeDriver, i int) {
				d.mu.Lock()
				d.failRestore = i >= 0
				d.mu.Unlock()
			},
			want: []string{"save", "restore", "restore", "start", "save", "restore", "start", "start", "start"}},
		{name: "a guest that does not wake is killed and the VM boots", enabled: true, runs: 1,
			setup: func(d *fakeDriver) { d.mute = true },
			want:  []string{"save", "restore", "start", "save", "restore", "start"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &fakeDriver{}
			if tc.setup != nil {
				tc.setup(d)
			}
			s := newStarter(t, d, tc.enabled)
			if tc.enabled {
				// The first start of a shape: the template build.
				if _, err := s.Start(t.Context(), spec(256)); err != nil {
					t.Fatalf("first Start: %v", err)
				}
			}
			for i := 0; i < tc.runs; i++ {
				if tc.between != nil {
					tc.between(d, i)
				}
				vm, err := s.Start(t.Context(), spec(256))
				if err != nil {
					t.Fatalf("Start %d: %v", i, err)
				}
				if vm == nil {
					t.Fatalf("Start %d: nil VM", i)
				}
			}
			want := tc.want
			if !tc.enabled {
				want = want[:tc.runs]
			}
			if got := d.Calls(); !slices.Equal(got, want) {
				t.Errorf("driver calls %q, want %q", got, want)
			}
		})
	}
}

// TestWake: each restored VM gets its own entropy and its NICs' MACs in
// order, and the template's NICs carry the template MACs.
func TestWake(t *testing.T) {
	d := &fakeDriver{}
	s := newStarter(t, d, true)
	macs := []string{"02:42:ac:11:00:02", "02:42:ac:11:00:03"}
	for i := 0; i < 2; i++ {
		if _, err := s.Start(t.Context(), spec(128, macs...)); err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.wakes) != 2 {
		t.Fatalf("%d wakes, want 2", len(d.wakes))
	}
	for _, w := range d.wakes {
		if !slices.Equal(w.BootMACs, macs) {
			t.Errorf("wake MACs %q, want %q", w.BootMACs, macs)
		}
		if len(w.Entropy) != wire.EntropyBytes {
			t.Errorf("wake entropy %d bytes, want %d", len(w.Entropy), wire.EntropyBytes)
		}
		if d := time.Since(time.Unix(0, w.TimeUnixNano)); d < 0 || d > time.Minute {
			t.Errorf("wake clock %v off", d)
		}
	}
	if bytes.Equal(d.wakes[0].Entropy, d.wakes[1].Entropy) {
		t.Error("two wakes carried the same entropy")
	}
	if !s.Enabled() {
		t.Error("Enabled() = false with templates on and a driver that can")
	}
}

// TestEviction: building one template more than MaxTemplates removes the
// least recently used one, and only it.
func TestEviction(t *testing.T) {
	d := &fakeDriver{}
	s := newStarter(t, d, true)
	for i := 0; i < MaxTemplates; i++ {
		if _, err := s.Start(t.Context(), spec(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	// Shape 100 is used again, so 101 is the least recently used.
	if _, err := s.Start(t.Context(), spec(100)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(t.Context(), spec(999)); err != nil {
		t.Fatal(err)
	}
	if n := s.Count(); n != MaxTemplates {
		t.Errorf("%d templates ready, want %d", n, MaxTemplates)
	}
	for mem, want := range map[int]bool{100: true, 101: false, 102: true, 999: true} {
		key, _ := d.TemplateKey(templateSpec(spec(mem)))
		_, err := os.Stat(filepath.Join(s.cfg.Dir, key))
		if got := err == nil; got != want {
			t.Errorf("template of %d MiB present = %v, want %v", mem, got, want)
		}
	}
}
