package tether

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A container's main process is PID 1 of its PID namespace, and the
// kernel drops a signal sent to such a process from outside when the
// process has no handler for it (signal(7), pid_namespaces(7)): SIGTERM
// to `sh -c 'trap … TERM; …'` before the shell has run its trap is lost.
// On dockerd that window is a few milliseconds; in a container VM under
// emulation it is hundreds. So tether holds such a signal while the
// process is young: it is delivered as soon as the process catches or
// ignores it, or when the hold ends (and is dropped by the kernel then,
// as dockerd's would have been). SIGKILL and SIGSTOP are never held.

const (
	// signalHold is how long after its start a main process may still
	// be setting up its handlers.
	signalHold = 2 * time.Second
	// signalPoll is how often a held signal looks at the process's
	// handlers.
	signalPoll = 5 * time.Millisecond
)

// signalQueue delivers the held signals of one process in the order they
// were sent, from one goroutine.
type signalQueue struct {
	mu      sync.Mutex
	pending []int
	running bool
}

// holds reports whether signal n to a namespace init started at started
// is worth holding now.
func holds(n int, started time.Time) bool {
	return n != int(unix.SIGKILL) && n != int(unix.SIGSTOP) && time.Since(started) < signalHold
}

// send queues n for pid and starts the delivering goroutine if none runs.
// A signal queued behind others is delivered after them, so the order of
// signals is kept.
func (q *signalQueue) send(pid, n int, started time.Time, exited <-chan struct{}) {
	q.mu.Lock()
	q.pending = append(q.pending, n)
	if q.running {
		q.mu.Unlock()
		return
	}
	q.running = true
	q.mu.Unlock()
	go func() {
		for {
			q.mu.Lock()
			if len(q.pending) == 0 {
				q.running = false
				q.mu.Unlock()
				return
			}
			n := q.pending[0]
			q.pending = q.pending[1:]
			q.mu.Unlock()
			if n != int(unix.SIGSTOP) {
				awaitHandler(pid, n, started.Add(signalHold), exited)
			}
			select {
			case <-exited:
				// Its PID may be another process's by now.
			default:
				_ = unix.Kill(pid, unix.Signal(n))
			}
		}
	}()
}

// empty reports whether no signal is held.
func (q *signalQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.running
}

// awaitHandler returns once pid catches or ignores signal n, at deadline,
// or once the process has exited.
func awaitHandler(pid, n int, deadline time.Time, exited <-chan struct{}) {
	t := time.NewTicker(signalPoll)
	defer t.Stop()
	for time.Now().Before(deadline) {
		caught, err := handlesSignal(pid, n)
		if err != nil || caught {
			return
		}
		select {
		case <-exited:
			return
		case <-t.C:
		}
	}
}

// handlesSignal reads /proc/<pid>/status: true when signal n (1..64) is
// in SigCgt (caught) or SigIgn (ignored), the masks proc(5) gives as hex.
func handlesSignal(pid, n int) (bool, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	defer f.Close()
	bit := uint64(1) << uint(n-1)
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, key := range []string{"SigIgn:", "SigCgt:"} {
			v, ok := strings.CutPrefix(line, key)
			if !ok {
				continue
			}
			found++
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("tether: %s of %d: %w", key, pid, err)
			}
			if mask&bit != 0 {
				return true, nil
			}
		}
	}
	if found < 2 {
		return false, fmt.Errorf("tether: no signal masks for %d", pid)
	}
	return false, sc.Err()
}
