package hvtest

import (
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor"
)

// NoGuest describes a driver to [RunWithoutGuest]: what a spec it would
// accept looks like, and how its disks and boot files are named, since
// these differ between drivers (host paths for qemu, datastore paths for
// vsphere).
type NoGuest struct {
	// Spec returns a spec the driver would accept, with a Name unique to
	// the test. The suite only ever starts it spoiled, so nothing need
	// boot it.
	Spec func(t *testing.T) hypervisor.Spec
	// BadDisk is a disk Start must refuse as InvalidArgument (a format
	// the driver does not take); its zero value skips that case.
	BadDisk hypervisor.Disk
	// MissingKernel is a Spec.Kernel of the driver's form that names no
	// file: Start must say Unavailable. Empty skips that case.
	MissingKernel string
	// Leftovers lists what a refused Start of spec left behind (VMs,
	// processes), nothing when it left nothing; nil means the host
	// processes whose command line mentions spec's RuntimeDir or Name.
	Leftovers func(t *testing.T, spec hypervisor.Spec) []string
}

// RunWithoutGuest runs the parts of the conformance suite that need no
// booted guest: Capabilities names the accelerator, and Start refuses bad
// specs with the documented class (the cases [Run] checks, plus Shares on
// a driver whose Capabilities report none), leaving nothing behind. It
// is for drivers whose VMs cannot boot in the test's environment (a
// simulated vSphere); [Run] checks the same and more with a guest.
// newDriver is called once per subtest.
func RunWithoutGuest(t *testing.T, newDriver func(t *testing.T) hypervisor.Driver, ng NoGuest) {
	t.Run("Capabilities", func(t *testing.T) { testCapabilities(t, newDriver(t)) })
	t.Run("StartInvalidSpec", func(t *testing.T) {
		d := newDriver(t)
		cases := commonInvalidSpecs()
		if ng.BadDisk != (hypervisor.Disk{}) {
			bad := ng.BadDisk
			cases = append(cases, invalidSpec{"bad_disk_format", func(s *hypervisor.Spec) { s.Disks = []hypervisor.Disk{bad} }, errdefs.IsInvalidArgument, "InvalidArgument"})
		}
		if ng.MissingKernel != "" {
			cases = append(cases, invalidSpec{"missing_kernel", func(s *hypervisor.Spec) { s.Kernel = ng.MissingKernel }, errdefs.IsUnavailable, "Unavailable"})
		}
		if !d.Capabilities().Shares {
			cases = append(cases, invalidSpec{"shares_unsupported", func(s *hypervisor.Spec) {
				s.Shares = []hypervisor.Share{{Tag: "share0", Path: t.TempDir()}}
			}, errdefs.IsInvalidArgument, "InvalidArgument"})
		}
		startInvalidSpecs(t, d, ng.Spec, cases, ng.Leftovers)
	})
}
