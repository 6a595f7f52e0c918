package tether

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		ws   unix.WaitStatus
		want int
	}{
		{"exit 0", unix.WaitStatus(0), 0},
		{"exit 3", unix.WaitStatus(3 << 8), 3},
		{"killed by SIGKILL", unix.WaitStatus(9), 137},
		{"killed by SIGTERM", unix.WaitStatus(15), 143},
		{"killed by SIGINT", unix.WaitStatus(2), 130},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.ws); got != tt.want {
				t.Errorf("exitCode(%#x) = %d, want %d", uint32(tt.ws), got, tt.want)
			}
		})
	}
}

func TestBuildEnv(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		home string
		want []string
	}{
		{"adds PATH and HOME", []string{"A=1"}, "/root", []string{"A=1", "PATH=" + defaultPath, "HOME=/root"}},
		{"keeps the image's PATH", []string{"PATH=/bin"}, "/home/u", []string{"PATH=/bin", "HOME=/home/u"}},
		{"keeps an explicit HOME", []string{"HOME=/x", "PATH=/bin"}, "/root", []string{"HOME=/x", "PATH=/bin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := buildEnv(tt.env, tt.home); !slices.Equal(got, tt.want) {
				t.Errorf("buildEnv = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTTYName(t *testing.T) {
	tests := []struct {
		nr   int
		want string
	}{
		{0, "?"},
		{136<<8 | 0, "pts/0"},
		{136<<8 | 5, "pts/5"},
		{4<<8 | 1, "?"}, // tty1: not a pseudo-terminal
	}
	for _, tt := range tests {
		if got := ttyName(tt.nr); got != tt.want {
			t.Errorf("ttyName(%#x) = %q, want %q", tt.nr, got, tt.want)
		}
	}
}

func TestReaperHandsOutEarlyStatuses(t *testing.T) {
	r := &reaper{waiters: map[int]chan unix.WaitStatus{}, statuses: map[int]unix.WaitStatus{}}
	// A status reaped before anyone waited is kept for the waiter.
	r.statuses[42] = unix.WaitStatus(7 << 8)
	if ws := <-r.wait(42); ws.ExitStatus() != 7 {
		t.Errorf("early status = %d, want 7", ws.ExitStatus())
	}
	if _, ok := r.statuses[42]; ok {
		t.Error("status kept after it was handed out")
	}
}

func TestNetStats(t *testing.T) {
	dir := t.TempDir()
	for _, l := range []string{"lo", "eth0", "spare1"} {
		st := filepath.Join(dir, l, "statistics")
		if err := os.MkdirAll(st, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"rx_bytes", "tx_bytes", "rx_packets"} {
			if err := os.WriteFile(filepath.Join(st, f), []byte("42\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := netStats(dir)
	if len(got) != 1 || got["eth0"].RxBytes != 42 || got["eth0"].TxBytes != 42 || got["eth0"].RxPackets != 42 || got["eth0"].TxDropped != 0 {
		t.Errorf("netStats = %+v, want eth0 only with 42s", got)
	}
}
