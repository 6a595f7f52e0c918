package qemu

import (
	"bytes"
	"os"
	"testing"
)

// hostAuto is what "auto" must resolve to on this host by the rule in
// DESIGN.md: KVM only with a usable /dev/kvm and vmx or svm in cpuinfo.
func hostAuto(t *testing.T) string {
	t.Helper()
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return AccelTCG
	}
	hw := false
	for _, line := range bytes.Split(cpuinfo, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("flags")) {
			for _, f := range bytes.Fields(line) {
				hw = hw || string(f) == "vmx" || string(f) == "svm"
			}
			break
		}
	}
	if !hw {
		t.Logf("no vmx/svm in /proc/cpuinfo: auto must pick %s", AccelTCG)
		return AccelTCG
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return AccelTCG
	}
	f.Close()
	return AccelKVM
}

func TestChooseAccel(t *testing.T) {
	auto := hostAuto(t)
	for _, tc := range []struct{ want, got string }{
		{AccelKVM, AccelKVM}, // an explicit choice is honoured even without vmx/svm
		{AccelTCG, AccelTCG},
		{AccelAuto, auto},
	} {
		if got := chooseAccel(tc.want); got != tc.got {
			t.Errorf("chooseAccel(%q) = %q, want %q", tc.want, got, tc.got)
		}
	}
}

func TestParseCPUMHz(t *testing.T) {
	tests := []struct {
		name, in string
		want     int
	}{
		{"this host", "processor\t: 0\ncpu MHz\t\t: 2299.998\n", 2299998},
		{"integer", "cpu MHz : 3000\n", 3000000},
		{"missing", "processor\t: 0\n", defaultTSCKHz},
		{"garbage", "cpu MHz : fast\n", defaultTSCKHz},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseCPUMHz([]byte(tt.in)); got != tt.want {
				t.Errorf("parseCPUMHz = %d, want %d", got, tt.want)
			}
		})
	}
}
