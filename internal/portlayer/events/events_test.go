package events

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

func TestRingKeepsNewestInOrder(t *testing.T) {
	l := New(3)
	base := time.Unix(1000, 0)
	for i := 0; i < 5; i++ {
		l.Publish(portlayer.Event{Time: base.Add(time.Duration(i) * time.Second), Action: fmt.Sprint(i)})
	}
	past, live := l.Subscribe(t.Context(), base, false)
	if live != nil {
		t.Error("live channel without live")
	}
	var got []string
	for _, e := range past {
		got = append(got, e.Action)
	}
	if fmt.Sprint(got) != "[2 3 4]" {
		t.Errorf("past = %v, want [2 3 4]", got)
	}
	past, _ = l.Subscribe(t.Context(), base.Add(4*time.Second), false)
	if len(past) != 1 || past[0].Action != "4" {
		t.Errorf("since filter: %v", past)
	}
	if past, _ := l.Subscribe(t.Context(), time.Time{}, false); past != nil {
		t.Errorf("zero since must return no past events: %v", past)
	}
}

func TestLiveSubscriberAndCancel(t *testing.T) {
	l := New(0)
	ctx, cancel := context.WithCancel(t.Context())
	_, live := l.Subscribe(ctx, time.Time{}, true)
	l.Publish(portlayer.Event{Type: "container", Action: "start", ID: "x"})
	select {
	case e := <-live:
		if e.Action != "start" || e.Time.IsZero() {
			t.Errorf("event %+v", e)
		}
	case <-time.After(time.Second):
		t.Fatal("no live event")
	}
	cancel()
	deadline := time.After(time.Second)
	for {
		select {
		case _, ok := <-live:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed after cancel")
		}
	}
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	l := New(0)
	_, _ = l.Subscribe(t.Context(), time.Time{}, true) // never read
	done := make(chan struct{})
	go func() {
		for i := 0; i < subscriberBuffer*4; i++ {
			l.Publish(portlayer.Event{Action: "x"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a slow subscriber")
	}
	var nilLog *Log
	nilLog.Publish(portlayer.Event{}) // must not panic
}
