package budget_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/budget"
)

// fakeCompute keeps records in memory and records the calls that reached
// it. Methods the budget does not use are left to the nil interface.
type fakeCompute struct {
	portlayer.Compute
	mu      sync.Mutex
	recs    []portlayer.Container
	started []string
	created int
	// startGate, when set, is waited on inside Start (to hold a start open).
	startGate chan struct{}
}

func (f *fakeCompute) Create(ctx context.Context, spec portlayer.ContainerSpec) (portlayer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created++
	c := portlayer.Container{ID: fmt.Sprintf("%064d", len(f.recs)+1), Spec: spec, State: portlayer.State{Status: portlayer.StatusCreated}}
	f.recs = append(f.recs, c)
	return c, nil
}

func (f *fakeCompute) find(idOrName string) int {
	for i, c := range f.recs {
		if c.ID == idOrName || c.Spec.Name == idOrName {
			return i
		}
	}
	return -1
}

func (f *fakeCompute) Inspect(ctx context.Context, idOrName string) (portlayer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(idOrName)
	if i < 0 {
		return portlayer.Container{}, fmt.Errorf("no such container %s: %w", idOrName, errdefs.ErrNotFound)
	}
	return f.recs[i], nil
}

func (f *fakeCompute) List(ctx context.Context) ([]portlayer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]portlayer.Container(nil), f.recs...), nil
}

func (f *fakeCompute) Start(ctx context.Context, idOrName string) error {
	if f.startGate != nil {
		<-f.startGate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(idOrName)
	if i < 0 {
		return errdefs.ErrNotFound
	}
	f.recs[i].State.Status = portlayer.StatusRunning
	f.started = append(f.started, f.recs[i].Spec.Name)
	return nil
}

func (f *fakeCompute) set(name string, st portlayer.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[f.find(name)].State.Status = st
}

func newBudget(t *testing.T, f *fakeCompute, l budget.Limits) *budget.Compute {
	t.Helper()
	l.DefaultMemoryMiB, l.DefaultCPUs = 256, 1
	b, err := budget.New(f, l)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		l    budget.Limits
	}{
		{name: "negative containers", l: budget.Limits{Containers: -1}},
		{name: "negative memory", l: budget.Limits{MemoryMiB: -1, DefaultMemoryMiB: 256}},
		{name: "memory without default", l: budget.Limits{MemoryMiB: 1024}},
		{name: "cpus without default", l: budget.Limits{CPUs: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := budget.New(&fakeCompute{}, tc.l); !errdefs.IsInvalidArgument(err) {
				t.Errorf("New: %v, want InvalidArgument", err)
			}
		})
	}
}

func TestContainerCount(t *testing.T) {
	f := &fakeCompute{}
	b := newBudget(t, f, budget.Limits{Containers: 2})
	ctx := t.Context()
	for _, n := range []string{"a", "b"} {
		if _, err := b.Create(ctx, portlayer.ContainerSpec{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.Create(ctx, portlayer.ContainerSpec{Name: "c"})
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "limited to 2 containers") {
		t.Fatalf("third create: %v, want ResourceExhausted naming the limit", err)
	}
	if f.created != 2 {
		t.Errorf("%d creates reached compute, want 2", f.created)
	}
}

func TestStartBudget(t *testing.T) {
	tests := []struct {
		name    string
		limits  budget.Limits
		specs   []portlayer.ContainerSpec // created, then started in order
		wantErr []bool
		errText string
	}{
		{
			name:   "memory fits exactly",
			limits: budget.Limits{MemoryMiB: 768},
			specs:  []portlayer.ContainerSpec{{Name: "a"}, {Name: "b", MemoryMiB: 512}},
		},
		{
			name:    "memory exhausted by defaults",
			limits:  budget.Limits{MemoryMiB: 600},
			specs:   []portlayer.ContainerSpec{{Name: "a"}, {Name: "b"}, {Name: "c"}},
			wantErr: []bool{false, false, true},
			errText: "needs 256 MiB of memory (budget 600 MiB, 88 MiB free)",
		},
		{
			name:    "cpus exhausted",
			limits:  budget.Limits{CPUs: 3},
			specs:   []portlayer.ContainerSpec{{Name: "a", CPUs: 2}, {Name: "b", CPUs: 2}},
			wantErr: []bool{false, true},
			errText: "needs 2 CPUs (budget 3, 1 free)",
		},
		{
			name:   "no limits",
			limits: budget.Limits{},
			specs:  []portlayer.ContainerSpec{{Name: "a", MemoryMiB: 1 << 20}, {Name: "b", CPUs: 64}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCompute{}
			b := newBudget(t, f, tc.limits)
			ctx := t.Context()
			for i, spec := range tc.specs {
				if _, err := b.Create(ctx, spec); err != nil {
					t.Fatal(err)
				}
				err := b.Start(ctx, spec.Name)
				want := i < len(tc.wantErr) && tc.wantErr[i]
				if (err != nil) != want {
					t.Fatalf("start %s: %v, want error %v", spec.Name, err, want)
				}
				if err != nil {
					if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), tc.errText) {
						t.Errorf("start %s: %v, want ResourceExhausted with %q", spec.Name, err, tc.errText)
					}
				}
			}
		})
	}
}

func TestStoppedContainersFreeTheBudget(t *testing.T) {
	f := &fakeCompute{}
	b := newBudget(t, f, budget.Limits{MemoryMiB: 512})
	ctx := t.Context()
	for _, n := range []string{"a", "b", "c"} {
		if _, err := b.Create(ctx, portlayer.ContainerSpec{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	must(t, b.Start(ctx, "a"))
	must(t, b.Start(ctx, "b"))
	if err := b.Start(ctx, "c"); !errdefs.IsResourceExhausted(err) {
		t.Fatalf("start c: %v", err)
	}
	// Starting a running container is passed through, not refused.
	must(t, b.Start(ctx, "a"))
	f.set("a", portlayer.StatusPaused)
	if err := b.Start(ctx, "c"); !errdefs.IsResourceExhausted(err) {
		t.Fatalf("a paused VM still holds its memory; start c: %v", err)
	}
	f.set("a", portlayer.StatusExited)
	must(t, b.Start(ctx, "c"))
	u, err := b.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u != (budget.Usage{Containers: 3, Running: 2, MemoryMiB: 512, CPUs: 2}) {
		t.Errorf("usage %+v", u)
	}
}

func TestCreateRefusesWhatCanNeverFit(t *testing.T) {
	f := &fakeCompute{}
	b := newBudget(t, f, budget.Limits{MemoryMiB: 1024, CPUs: 2})
	for _, spec := range []portlayer.ContainerSpec{{Name: "big", MemoryMiB: 2048}, {Name: "wide", CPUs: 4}} {
		if _, err := b.Create(t.Context(), spec); !errdefs.IsInvalidArgument(err) {
			t.Errorf("create %s: %v, want InvalidArgument", spec.Name, err)
		}
	}
	if f.created != 0 {
		t.Errorf("%d creates reached compute", f.created)
	}
}

// TestConcurrentStarts: two starts racing for the last slot; exactly one
// is admitted even while the first has not yet shown up as running.
func TestConcurrentStarts(t *testing.T) {
	f := &fakeCompute{startGate: make(chan struct{})}
	b := newBudget(t, f, budget.Limits{MemoryMiB: 256})
	ctx := t.Context()
	for _, n := range []string{"a", "b"} {
		if _, err := b.Create(ctx, portlayer.ContainerSpec{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 2)
	go func() { errs <- b.Start(ctx, "a") }()
	// Wait until a's admission is recorded, then race b against it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if u, _ := b.Usage(ctx); u.Running == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a's start was never admitted")
		}
	}
	go func() { errs <- b.Start(ctx, "b") }()
	first := <-errs
	if !errdefs.IsResourceExhausted(first) {
		t.Fatalf("b started while a held the budget: %v", first)
	}
	close(f.startGate)
	must(t, <-errs)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
