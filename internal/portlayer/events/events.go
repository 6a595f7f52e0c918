// Package events is the port layer's event log: one ordered stream of
// everything that happens to containers and images, kept in memory (a
// bounded ring of the most recent events) and fanned out to live
// subscribers. It implements portlayer.Events; compute and storage publish
// into it.
package events

import (
	"context"
	"sync"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// DefaultCapacity is how many recent events a Log keeps for subscribers
// asking since a past time: 1024, not 256, because VMs make runs longer.
const DefaultCapacity = 1024

// subscriberBuffer is each live subscriber's buffer, in events; a
// subscriber further behind loses events instead of blocking publishers.
const subscriberBuffer = 256

// Log is an in-memory event log. The zero value is not usable; use New.
type Log struct {
	mu   sync.Mutex
	ring []portlayer.Event
	next int // index of the oldest event once the ring is full
	full bool
	subs map[chan portlayer.Event]struct{}
}

// New returns a log keeping the last capacity events (DefaultCapacity if
// capacity <= 0).
func New(capacity int) *Log {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &Log{ring: make([]portlayer.Event, 0, capacity), subs: map[chan portlayer.Event]struct{}{}}
}

// Publish appends an event (its Time is set to now if zero) and delivers
// it to live subscribers. Never blocks on a subscriber. A nil Log ignores
// the call, so publishers need no nil checks in tests.
func (l *Log) Publish(e portlayer.Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full && len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, e)
	} else {
		l.full = true
		l.ring[l.next] = e
		l.next = (l.next + 1) % len(l.ring)
	}
	for ch := range l.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Subscribe implements portlayer.Events.
func (l *Log) Subscribe(ctx context.Context, since time.Time, live bool) ([]portlayer.Event, <-chan portlayer.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var past []portlayer.Event
	if !since.IsZero() {
		n := len(l.ring)
		for i := 0; i < n; i++ {
			e := l.ring[(l.next+i)%n]
			if !e.Time.Before(since) {
				past = append(past, e)
			}
		}
	}
	if !live {
		return past, nil
	}
	ch := make(chan portlayer.Event, subscriberBuffer)
	l.subs[ch] = struct{}{}
	go func() {
		<-ctx.Done()
		l.mu.Lock()
		delete(l.subs, ch)
		close(ch)
		l.mu.Unlock()
	}()
	return past, ch
}
