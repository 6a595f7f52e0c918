// Package budget enforces a VCH's resource budget on its container VMs: how
// many containers may exist, and how much guest RAM and how many vCPUs its
// running VMs may hold together (`vch create --containers --memory --cpu`).
//
// It owns the accounting only. It wraps a [portlayer.Compute] and checks
// before Create (the count, and a VM that could never fit) and before
// Start (the running total); everything else passes through. A VM counts
// against the budget from the moment its start is admitted until it stops:
// running, paused and restarting containers hold their memory and vCPUs.
// A container that sets no size is counted at the VCH's defaults, as
// compute sizes it.
//
// It does not size VMs (compute does) and cannot see starts that bypass
// it: restarts done inside the port layer itself are not checked — a
// restart by policy needs no more than the restarting container already
// holds, and the starts by policy when the VCH itself starts (after a
// host reboot) take back what those containers held before.
package budget

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// Limits is a VCH's budget. Zero in any field means no limit there.
type Limits struct {
	// Containers caps the number of containers that exist, in any state.
	Containers int `toml:"containers" json:"containers"`
	// MemoryMiB caps the sum of guest RAM of running container VMs, in MiB.
	MemoryMiB int `toml:"memory_mib" json:"memory_mib"`
	// CPUs caps the sum of vCPUs of running container VMs.
	CPUs int `toml:"cpus" json:"cpus"`
	// DefaultMemoryMiB and DefaultCPUs are what a container that sets no
	// size gets (compute's defaults); required when MemoryMiB or CPUs is
	// set, so such containers are counted.
	DefaultMemoryMiB int `toml:"default_memory_mib" json:"default_memory_mib"`
	DefaultCPUs      int `toml:"default_cpus" json:"default_cpus"`
}

// Usage is what the VCH's containers hold now.
type Usage struct {
	// Containers counts all containers; Running those holding a VM
	// (running, paused or restarting).
	Containers, Running int
	// MemoryMiB and CPUs sum the sizes of the VMs held, plus starts
	// admitted but not finished.
	MemoryMiB, CPUs int
}

// Compute is a portlayer.Compute whose Create and Start respect Limits.
// Safe for concurrent use: admissions are serialised, so two starts can
// never both take the last MiB.
type Compute struct {
	portlayer.Compute
	limits Limits

	mu sync.Mutex
	// starting holds the sizes of starts admitted but not yet returned,
	// by container ID; they count against the budget before List shows
	// them running.
	starting map[string]size
	// creating counts creates admitted but not yet returned.
	creating int
}

type size struct{ memMiB, cpus int }

// New wraps c. InvalidArgument if a limit is negative, or a memory or CPU
// limit is set without the default it needs.
func New(c portlayer.Compute, l Limits) (*Compute, error) {
	if l.Containers < 0 || l.MemoryMiB < 0 || l.CPUs < 0 {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "limits must not be negative (containers %d, memory %d MiB, cpus %d)", l.Containers, l.MemoryMiB, l.CPUs)
	}
	if (l.MemoryMiB > 0 && l.DefaultMemoryMiB <= 0) || (l.CPUs > 0 && l.DefaultCPUs <= 0) {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "a memory or CPU limit needs the default container size")
	}
	return &Compute{Compute: c, limits: l, starting: map[string]size{}}, nil
}

// Limits returns the budget.
func (b *Compute) Limits() Limits { return b.limits }

// Create refuses with ResourceExhausted when the VCH already holds
// Limits.Containers containers, and with InvalidArgument when the spec's
// VM alone exceeds the memory or CPU budget (it could never start);
// otherwise it calls the wrapped Create.
func (b *Compute) Create(ctx context.Context, spec portlayer.ContainerSpec) (portlayer.Container, error) {
	need := b.sizeOf(spec)
	if err := b.fitsAlone(need); err != nil {
		return portlayer.Container{}, err
	}
	if b.limits.Containers > 0 {
		b.mu.Lock()
		all, err := b.Compute.List(ctx)
		if err != nil {
			b.mu.Unlock()
			return portlayer.Container{}, err
		}
		if n := len(all) + b.creating; n >= b.limits.Containers {
			b.mu.Unlock()
			return portlayer.Container{}, portlayer.Errorf(portlayer.ClassResourceExhausted, "this VCH is limited to %d containers and has %d; remove one first", b.limits.Containers, n)
		}
		b.creating++
		b.mu.Unlock()
		defer func() { b.mu.Lock(); b.creating--; b.mu.Unlock() }()
	}
	return b.Compute.Create(ctx, spec)
}

// Start admits the start only if the container's VM fits in what the
// running VMs leave of the memory and CPU budgets; ResourceExhausted
// otherwise, saying what is needed and what is free. Starting a container
// that already holds a VM is passed through (the wrapped Start answers
// NotModified for a running one).
func (b *Compute) Start(ctx context.Context, idOrName string) error {
	if b.limits.MemoryMiB == 0 && b.limits.CPUs == 0 {
		return b.Compute.Start(ctx, idOrName)
	}
	c, err := b.Compute.Inspect(ctx, idOrName)
	if err != nil {
		return err
	}
	if holdsVM(c.State.Status) {
		return b.Compute.Start(ctx, idOrName)
	}
	need := b.sizeOf(c.Spec)
	b.mu.Lock()
	if _, busy := b.starting[c.ID]; busy {
		// A concurrent start of the same container holds its admission.
		b.mu.Unlock()
		return b.Compute.Start(ctx, idOrName)
	}
	u, err := b.usageLocked(ctx, c.ID)
	if err != nil {
		b.mu.Unlock()
		return err
	}
	var short []string
	if b.limits.MemoryMiB > 0 && u.MemoryMiB+need.memMiB > b.limits.MemoryMiB {
		short = append(short, fmt.Sprintf("%d MiB of memory (budget %d MiB, %d MiB free)", need.memMiB, b.limits.MemoryMiB, max(0, b.limits.MemoryMiB-u.MemoryMiB)))
	}
	if b.limits.CPUs > 0 && u.CPUs+need.cpus > b.limits.CPUs {
		short = append(short, fmt.Sprintf("%d CPUs (budget %d, %d free)", need.cpus, b.limits.CPUs, max(0, b.limits.CPUs-u.CPUs)))
	}
	if len(short) > 0 {
		b.mu.Unlock()
		return portlayer.Errorf(portlayer.ClassResourceExhausted, "cannot start container %s: it needs %s; %d running containers hold the rest", c.Spec.Name, strings.Join(short, " and "), u.Running)
	}
	b.starting[c.ID] = need
	b.mu.Unlock()
	defer func() { b.mu.Lock(); delete(b.starting, c.ID); b.mu.Unlock() }()
	return b.Compute.Start(ctx, idOrName)
}

var _ portlayer.Restarter = (*Compute)(nil)

// Restart implements portlayer.Restarter over the wrapped compute: a
// container that holds a VM is restarted as it is (it needs no more than
// it holds); one that holds none is started, admitted as Start admits.
// NotImplemented if the wrapped compute cannot restart.
func (b *Compute) Restart(ctx context.Context, idOrName string, signal int, timeout *time.Duration) error {
	rs, ok := b.Compute.(portlayer.Restarter)
	if !ok {
		return portlayer.Errorf(portlayer.ClassNotImplemented, "this port layer cannot restart containers").WithOp("restart")
	}
	c, err := b.Compute.Inspect(ctx, idOrName)
	if err != nil {
		return err
	}
	if !holdsVM(c.State.Status) {
		return b.Start(ctx, idOrName)
	}
	return rs.Restart(ctx, idOrName, signal, timeout)
}

// Usage reports what the containers hold now, including admitted starts.
func (b *Compute) Usage(ctx context.Context) (Usage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.usageLocked(ctx, "")
}

// usageLocked sums the VMs held, counting admitted starts (except
// exclude's) once whether or not List already shows them running.
func (b *Compute) usageLocked(ctx context.Context, exclude string) (Usage, error) {
	all, err := b.Compute.List(ctx)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Containers: len(all)}
	for _, c := range all {
		if c.ID == exclude {
			continue
		}
		if _, admitted := b.starting[c.ID]; admitted || !holdsVM(c.State.Status) {
			continue
		}
		s := b.sizeOf(c.Spec)
		u.Running++
		u.MemoryMiB += s.memMiB
		u.CPUs += s.cpus
	}
	for id, s := range b.starting {
		if id == exclude {
			continue
		}
		u.Running++
		u.MemoryMiB += s.memMiB
		u.CPUs += s.cpus
	}
	return u, nil
}

func (b *Compute) fitsAlone(need size) error {
	if b.limits.MemoryMiB > 0 && need.memMiB > b.limits.MemoryMiB {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "a container VM of %d MiB exceeds this VCH's memory budget of %d MiB", need.memMiB, b.limits.MemoryMiB)
	}
	if b.limits.CPUs > 0 && need.cpus > b.limits.CPUs {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "a container VM with %d CPUs exceeds this VCH's CPU budget of %d", need.cpus, b.limits.CPUs)
	}
	return nil
}

func (b *Compute) sizeOf(spec portlayer.ContainerSpec) size {
	return size{memMiB: spec.VMMemoryMiB(b.limits.DefaultMemoryMiB), cpus: spec.VMCPUs(b.limits.DefaultCPUs)}
}

// holdsVM reports whether a container in status st has a VM.
func holdsVM(st portlayer.Status) bool {
	return st == portlayer.StatusRunning || st == portlayer.StatusPaused || st == portlayer.StatusRestarting
}
