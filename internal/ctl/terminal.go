package ctl

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/term"
)

// terminal is the local terminal of a -t command: put in raw mode while
// the container's terminal is in use, its size sent along.
type terminal struct {
	rows, cols uint
	once       sync.Once
	state      *term.State
}

// openTerminal puts stdin's terminal in raw mode when want is set and
// stdin is a terminal; otherwise it does nothing (sizes stay 0).
func openTerminal(want bool) *terminal {
	t := &terminal{}
	fd := int(os.Stdin.Fd())
	if !want || !term.IsTerminal(fd) {
		return t
	}
	if w, h, err := term.GetSize(fd); err == nil {
		t.rows, t.cols = uint(h), uint(w)
	}
	if st, err := term.MakeRaw(fd); err == nil {
		t.state = st
	}
	return t
}

// restore gives the terminal its mode back. Idempotent.
func (t *terminal) restore() {
	t.once.Do(func() {
		if t.state != nil {
			_ = term.Restore(int(os.Stdin.Fd()), t.state)
		}
	})
}

// onResize calls resize with the new size on every SIGWINCH until the
// returned stop is called; nothing for a terminal not in use.
func (t *terminal) onResize(resize func(rows, cols uint)) (stop func()) {
	if t.state == nil {
		return func() {}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if w, h, err := term.GetSize(int(os.Stdin.Fd())); err == nil {
					resize(uint(h), uint(w))
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
