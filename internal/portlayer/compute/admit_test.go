package compute

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBootGateBound: never more than n boots inside at once, and every
// one of many concurrent boots is admitted in the end.
func TestBootGateBound(t *testing.T) {
	g := newBootGate(2)
	var inside, most, done atomic.Int32
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := g.enter(context.Background()); err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			g.leave()
			done.Add(1)
		}()
	}
	wg.Wait()
	if most.Load() > 2 || done.Load() != 24 {
		t.Errorf("at most %d inside (want ≤ 2), %d of 24 admitted", most.Load(), done.Load())
	}
	if q := g.queued(); q != 0 {
		t.Errorf("%d still queued", q)
	}
}

// TestBootGateCancel: a boot whose caller gives up leaves the queue with
// the context's error and takes no slot.
func TestBootGateCancel(t *testing.T) {
	g := newBootGate(1)
	if _, _, err := g.enter(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	wait, ahead, err := g.enter(ctx)
	// It waited until the deadline (wait counts from inside enter, a
	// little after the deadline was set, so it may be under 20 ms).
	if early := time.Now().Before(deadline); !errors.Is(err, context.DeadlineExceeded) || early || wait <= 0 || ahead != 0 {
		t.Errorf("enter on a full gate: waited %v, returned before the deadline %v, %d ahead, err %v", wait, early, ahead, err)
	}
	g.leave()
	if _, _, err := g.enter(context.Background()); err != nil {
		t.Errorf("enter after leave: %v", err)
	}
	if q := g.queued(); q != 0 {
		t.Errorf("%d still queued", q)
	}
}
