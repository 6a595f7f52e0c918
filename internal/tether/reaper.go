package tether

import (
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper is PID 1's child reaper: it collects every exited child (including
// orphans re-parented to PID 1) and hands the status of the processes tether
// started to whoever waits for them. Safe for concurrent use.
type reaper struct {
	mu       sync.Mutex
	waiters  map[int]chan unix.WaitStatus
	statuses map[int]unix.WaitStatus // reaped before anyone waited
}

func startReaper() *reaper {
	r := &reaper{waiters: map[int]chan unix.WaitStatus{}, statuses: map[int]unix.WaitStatus{}}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			r.reapAll()
		}
	}()
	return r
}

func (r *reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- ws
		} else {
			r.statuses[pid] = ws
		}
		r.mu.Unlock()
	}
}

// wait returns a channel that receives pid's wait status once it exits.
// Call it once per pid, right after the process starts.
func (r *reaper) wait(pid int) <-chan unix.WaitStatus {
	ch := make(chan unix.WaitStatus, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ws, ok := r.statuses[pid]; ok {
		delete(r.statuses, pid)
		ch <- ws
		return ch
	}
	r.waiters[pid] = ch
	return ch
}

// exitCode converts a wait status to Docker's exit code: the status for a
// normal exit, 128+N for death by signal N.
func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return 255
	}
}
