package tether

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHandlesSignal(t *testing.T) {
	tests := []struct {
		script string
		want   bool
	}{
		{"exec sleep 10", false},
		{"trap 'exit 3' TERM; while :; do sleep 0.05; done", true},
		{"trap '' TERM; exec sleep 10", true},
	}
	for _, tt := range tests {
		cmd := exec.Command("sh", "-c", tt.script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Give the shell time to run its first command.
		time.Sleep(300 * time.Millisecond)
		got, err := handlesSignal(cmd.Process.Pid, int(unix.SIGTERM))
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil || got != tt.want {
			t.Errorf("%q: handlesSignal(TERM) = %v, %v; want %v", tt.script, got, err, tt.want)
		}
	}
	if _, err := handlesSignal(1<<22, 15); err == nil {
		t.Error("handlesSignal of no process: no error")
	}
}

// A held signal waits for the handler the program installs late, so the
// program's own handler runs (without the hold SIGTERM would end the
// shell before its trap).
func TestSignalQueueWaitsForHandler(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 0.4; trap 'exit 7' TERM; while :; do sleep 0.02; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	gone := make(chan struct{})
	var q signalQueue
	q.send(cmd.Process.Pid, int(unix.SIGTERM), time.Now(), gone)
	if q.empty() {
		t.Error("queue empty right after send")
	}
	err := cmd.Wait()
	close(gone)
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 7 {
		t.Fatalf("exit = %v; want code 7 from the trap", err)
	}
	deadline := time.Now().Add(time.Second)
	for !q.empty() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !q.empty() {
		t.Error("queue still running after delivery")
	}
}

// A program that never handles the signal gets it when the hold ends.
func TestSignalQueueDeliversAtDeadline(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	gone := make(chan struct{})
	var q signalQueue
	start := time.Now()
	q.send(cmd.Process.Pid, int(unix.SIGTERM), start.Add(-signalHold+300*time.Millisecond), gone)
	err := cmd.Wait()
	close(gone)
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("exit = %v; want killed by SIGTERM", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("delivered after %v; want at the hold's end (~300ms)", d)
	}
}
