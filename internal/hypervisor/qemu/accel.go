package qemu

import (
	"bytes"
	"os"
	"strconv"
)

// Accelerator names accepted by [Config].Accel.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// chooseAccel resolves "auto": KVM only when /dev/kvm opens and the CPU
// advertises hardware virtualisation (vmx or svm). A paravirtual KVM without
// them (kvm_pvm) hangs stock guest kernels, so it gets TCG (DESIGN.md).
func chooseAccel(want string) string {
	if want == AccelKVM || want == AccelTCG {
		return want
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return AccelTCG
	}
	f.Close()
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return AccelTCG
	}
	for _, line := range bytes.Split(cpuinfo, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("flags")) {
			continue
		}
		for _, f := range bytes.Fields(line) {
			if string(f) == "vmx" || string(f) == "svm" {
				return AccelKVM
			}
		}
		break
	}
	return AccelTCG
}

// hostTSCKHz reads the host CPU's rate from /proc/cpuinfo ("cpu MHz", which
// on x86 with a constant TSC is the TSC rate) in kHz; defaultTSCKHz if it
// cannot.
func hostTSCKHz() int {
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return defaultTSCKHz
	}
	return parseCPUMHz(cpuinfo)
}

func parseCPUMHz(cpuinfo []byte) int {
	for _, line := range bytes.Split(cpuinfo, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(bytes.TrimSpace(k)) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64)
		if err != nil || mhz <= 0 {
			break
		}
		return int(mhz*1000 + 0.5)
	}
	return defaultTSCKHz
}
