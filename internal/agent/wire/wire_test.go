package wire

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestRoundTrip: every message survives Encode and a JSON decode, so both
// sides of the channel agree on the field names.
func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   any
		out  any
	}{
		{"setup", Setup{Hostname: "h", Hosts: "127.0.0.1 localhost\n", TimeUnixNano: 1, ShmSizeBytes: 64 << 20}, &Setup{}},
		{"process", Process{Args: []string{"sh", "-c", "x"}, Env: []string{"A=1"}, Dir: "/tmp", User: "1:2", Tty: true, Rows: 24, Cols: 80, Stdin: true, Exec: true, Init: true}, &Process{}},
		{"start error", StartError{Message: `exec: "x": executable file not found in $PATH`, ExitCode: 127}, &StartError{}},
		{"stats", Stats{CPUBusyNanos: 1, CPUTotalNanos: 2, OnlineCPUs: 1, MemTotalBytes: 3, MemUsedBytes: 2, Pids: 4}, &Stats{}},
		{"top", Top{Processes: []ProcessInfo{{PID: 1, Cmd: "sleep 1", TTY: "?"}}, TicksPerSecond: 100}, &Top{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := json.Unmarshal(Encode(tt.in), tt.out); err != nil {
				t.Fatal(err)
			}
			if got := reflect.ValueOf(tt.out).Elem().Interface(); !reflect.DeepEqual(got, tt.in) {
				t.Errorf("round trip = %+v, want %+v", got, tt.in)
			}
		})
	}
}
