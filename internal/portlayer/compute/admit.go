package compute

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// bootGate admits container VM boots at the rate the host can carry. A
// boot under TCG keeps a host core busy for seconds; started all at once,
// N boots each take N times as long, and past the boot timeout all of
// them fail together (24 concurrent container starts on 2 cores did). The
// gate lets at most n boots run at once (Config.MaxConcurrentBoots,
// default the host's CPUs); the others wait, in arrival order (Go's
// channel senders queue FIFO), for as long as their caller's context
// allows. The boot timeout counts from a boot's admission, not from its
// request, so a wait in the queue never fails a boot.
type bootGate struct {
	slots chan struct{}

	mu      sync.Mutex
	waiting int // boots queued, not yet admitted
}

func newBootGate(n int) *bootGate { return &bootGate{slots: make(chan struct{}, max(n, 1))} }

// enter waits for a slot and returns how long it waited and how many
// boots were queued ahead of it; ctx's error (wrapped) if it ends first.
// Each successful enter needs one leave.
func (g *bootGate) enter(ctx context.Context) (time.Duration, int, error) {
	select {
	case g.slots <- struct{}{}:
		return 0, 0, nil
	default:
	}
	g.mu.Lock()
	ahead := g.waiting
	g.waiting++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.waiting--
		g.mu.Unlock()
	}()
	t0 := time.Now()
	select {
	case g.slots <- struct{}{}:
		return time.Since(t0), ahead, nil
	case <-ctx.Done():
		return time.Since(t0), ahead, fmt.Errorf("compute: waiting for a boot slot: %w", ctx.Err())
	}
}

// leave frees the slot enter took.
func (g *bootGate) leave() { <-g.slots }

// queued is the number of boots waiting now.
func (g *bootGate) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}
