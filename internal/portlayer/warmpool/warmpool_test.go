package warmpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/hvfake"
	"github.com/vchproject/vch/internal/portlayer"
)

// fakeStarter restores warm VMs as hvfake VMs (their fake tether serves
// sessions at once, as a woken warm guest does); the key is the memory
// size, so specs of another size have another key.
type fakeStarter struct {
	driver *hvfake.Driver
	mu     sync.Mutex
	fail   error
	hold   chan struct{} // when set, StartWarm waits for it
	specs  []hypervisor.Spec
}

func (f *fakeStarter) Key(spec hypervisor.Spec) (string, bool) {
	return fmt.Sprintf("mem%d", spec.MemoryMiB), true
}

func (f *fakeStarter) StartWarm(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	f.mu.Lock()
	fail, hold := f.fail, f.hold
	f.specs = append(f.specs, spec)
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	// Placeholders, as a driver's RestoreWarm makes them.
	spec.Disks = append([]hypervisor.Disk(nil), spec.Disks...)
	for i := range spec.Disks {
		spec.Disks[i].Path, spec.Disks[i].Format = filepath.Join(spec.RuntimeDir, fmt.Sprintf("slot%d.img", i)), "raw"
	}
	return f.driver.Start(ctx, spec)
}

// fakeNICs makes fake taps (a pipe's read end stands in for the device).
type fakeNICs struct {
	mu     sync.Mutex
	n      int
	owners map[string]int
}

func (f *fakeNICs) NewNIC(ctx context.Context, owner string) (portlayer.NIC, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return portlayer.NIC{}, err
	}
	w.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.owners == nil {
		f.owners = map[string]int{}
	}
	f.owners[owner]++
	return portlayer.NIC{Name: fmt.Sprintf("vt%d", f.n), File: r}, nil
}

func (f *fakeNICs) LeaveAll(owner string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.owners, owner)
}

func (f *fakeNICs) ownerCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.owners)
}

func shape() hypervisor.Spec {
	return hypervisor.Spec{MemoryMiB: 256, CPUs: 1, ChannelName: wire.PortName,
		Disks: []hypervisor.Disk{{Serial: wire.RootSerial}, {ReadOnly: true, Serial: wire.BaseSerial}},
		NICs:  make([]hypervisor.NIC, 3)}
}

func waitReady(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().Ready < n {
		if time.Now().After(deadline) {
			t.Fatalf("pool has %+v, want %d ready", p.Stats(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newPool(t *testing.T, size int, st *fakeStarter, nics *fakeNICs) *Pool {
	t.Helper()
	p, err := New(Config{Size: size, Dir: filepath.Join(t.TempDir(), "warm"), Shape: shape()}, st, nics, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestTakeAndRefill(t *testing.T) {
	st, nics := &fakeStarter{driver: hvfake.New()}, &fakeNICs{}
	p := newPool(t, 2, st, nics)
	waitReady(t, p, 2)
	if nics.ownerCount() != 2 {
		t.Errorf("taps held by %d warm owners, want 2", nics.ownerCount())
	}
	other := shape()
	other.MemoryMiB = 512
	if _, ok := p.Take(context.Background(), other); ok {
		t.Error("Take handed out a VM for another shape (memory)")
	}
	slots := shape()
	slots.Disks[1].ReadOnly = false
	if _, ok := p.Take(context.Background(), slots); ok {
		t.Error("Take handed out a VM for other disk slots")
	}
	v, ok := p.Take(context.Background(), shape())
	if !ok {
		t.Fatalf("no warm VM: %+v", p.Stats())
	}
	if len(v.Taps) != 3 || v.Guest == nil || v.VM == nil {
		t.Errorf("warm VM %+v: want 3 taps, a VM and a guest session", v)
	}
	if _, err := os.Stat(v.Dir); err != nil {
		t.Errorf("warm VM's directory: %v", err)
	}
	if _, err := v.Guest.Processes(context.Background()); err != nil {
		t.Errorf("warm VM's guest session: %v", err)
	}
	nics.mu.Lock()
	if nics.owners[v.Name] != 0 {
		t.Errorf("the taken VM's taps still count as warm")
	}
	nics.mu.Unlock()
	// The pool refills to its size once told the start is done.
	time.Sleep(100 * time.Millisecond)
	if s := p.Stats(); s.Ready != 1 || s.Filling != 1 {
		t.Errorf("stats %+v before Started, want 1 ready and 1 waiting to fill", s)
	}
	p.Started()
	waitReady(t, p, 2)
	if s := p.Stats(); s.Taken != 1 || s.Misses != 0 {
		t.Errorf("stats %+v, want 1 taken, 0 misses", s)
	}
	// A taken VM is the caller's: Close leaves it running.
	p.Close()
	select {
	case <-v.VM.Done():
		t.Error("Close ended a VM that was taken")
	default:
	}
	if got := len(st.driver.Running()); got != 1 {
		t.Errorf("%d fake VMs run after Close, want only the taken one", got)
	}
	_ = v.VM.Kill()
}

func TestTakeWaitsForFill(t *testing.T) {
	st := &fakeStarter{driver: hvfake.New(), hold: make(chan struct{})}
	p := newPool(t, 1, st, &fakeNICs{})
	got := make(chan bool, 1)
	go func() {
		_, ok := p.Take(context.Background(), shape())
		got <- ok
	}()
	select {
	case <-got:
		t.Fatal("Take returned while the fill was in progress")
	case <-time.After(100 * time.Millisecond):
	}
	close(st.hold)
	select {
	case ok := <-got:
		if !ok {
			t.Errorf("Take got no VM after the fill ended: %+v", p.Stats())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Take did not return after the fill ended")
	}
	if s := p.Stats(); s.Waits != 1 {
		t.Errorf("stats %+v, want 1 wait", s)
	}
	// A Take bounded by its context gives up: the pool's one VM taken,
	// its refill held.
	waitReady(t, p, 1)
	st.mu.Lock()
	st.hold = make(chan struct{})
	st.mu.Unlock()
	if _, ok := p.Take(context.Background(), shape()); !ok {
		t.Fatal("no warm VM")
	}
	waitFilling(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, ok := p.Take(ctx, shape()); ok {
		t.Error("Take handed out a VM whose fill is held")
	}
	close(st.hold)
}

func waitFilling(t *testing.T, p *Pool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); p.Stats().Filling == 0 && p.Stats().Ready == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no fill started")
		}
	}
}

func TestFailedFill(t *testing.T) {
	st, nics := &fakeStarter{driver: hvfake.New(), fail: fmt.Errorf("no template: %w", errdefs.ErrFailedPrecondition)}, &fakeNICs{}
	p := newPool(t, 1, st, nics)
	if _, ok := p.Take(context.Background(), shape()); ok {
		t.Fatal("Take handed out a VM that failed to restore")
	}
	if s := p.Stats(); s.Misses != 1 || s.Ready != 0 {
		t.Errorf("stats %+v, want 1 miss", s)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Stats().Filling > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("fill never ended")
		}
	}
	if nics.ownerCount() != 0 {
		t.Errorf("a failed fill left taps with %d owners", nics.ownerCount())
	}
	es, _ := os.ReadDir(p.cfg.Dir)
	if len(es) != 0 {
		t.Errorf("a failed fill left %d directories", len(es))
	}
	// The next Take asks for a fill again, which now works.
	st.mu.Lock()
	st.fail = nil
	st.mu.Unlock()
	if _, ok := p.Take(context.Background(), shape()); !ok {
		waitReady(t, p, 1)
	}
}

func TestWarmVMEnds(t *testing.T) {
	st := &fakeStarter{driver: hvfake.New()}
	p := newPool(t, 1, st, &fakeNICs{})
	waitReady(t, p, 1)
	st.driver.CrashAll(errors.New("killed"))
	// The dead VM is dropped; the next Take waits for (or finds) another.
	v, ok := p.Take(context.Background(), shape())
	if ok {
		select {
		case <-v.VM.Done():
			t.Error("Take handed out a VM that had ended")
		default:
		}
	}
}

func TestSweep(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"w0123456789a", "w0123456789b", "notwarm"} {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	keep := filepath.Join(dir, "w0123456789b")
	Sweep(context.Background(), dir, nil, func(d string) bool { return d == keep }, slog.New(slog.DiscardHandler))
	for n, want := range map[string]bool{"w0123456789a": false, "w0123456789b": true, "notwarm": true} {
		_, err := os.Stat(filepath.Join(dir, n))
		if (err == nil) != want {
			t.Errorf("%s: exists %t, want %t", n, err == nil, want)
		}
	}
}

func TestOff(t *testing.T) {
	st := &fakeStarter{driver: hvfake.New()}
	p, err := New(Config{Size: 0}, st, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Take(context.Background(), shape()); ok || len(st.specs) != 0 {
		t.Errorf("a pool of size 0 restored %d VMs", len(st.specs))
	}
	var nilPool *Pool
	if _, ok := nilPool.Take(context.Background(), shape()); ok {
		t.Error("a nil pool handed out a VM")
	}
	nilPool.Close()
	if _, err := New(Config{Size: 1, Dir: t.TempDir(), Shape: shape()}, st, nil, slog.New(slog.DiscardHandler)); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a shape with NICs and no NIC maker: %v, want InvalidArgument", err)
	}
}
