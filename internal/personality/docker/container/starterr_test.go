package container

import (
	"fmt"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// TestStartErr: a process the guest could not start (the port layer's
// StartFailed, also wrapped) gets the OCI runtime's text around the
// guest's, which the CLI reads for its exit code; an error that merely
// says "permission denied" in its text is not taken for one.
func TestStartErr(t *testing.T) {
	const guest = `exec: "nosuch": executable file not found in $PATH`
	for _, err := range []error{
		portlayer.StartFailed(portlayer.KindContainer, "abc", guest, 127),
		fmt.Errorf("budget: %w", portlayer.StartFailed(portlayer.KindContainer, "abc", guest, 127)),
	} {
		got := startErr("web", err)
		want := "failed to create task for container: failed to create shim task: OCI runtime create failed: unable to start container process: " + guest + ": unknown"
		if httputils.Message(got) != want || !errdefs.IsInvalidArgument(got) {
			t.Errorf("startErr(%v) = %q", err, httputils.Message(got))
		}
	}
	plain := fmt.Errorf("open /dev/kvm: permission denied")
	if got := httputils.Message(startErr("web", plain)); got == "" || got[:6] == "failed" {
		t.Errorf("startErr(untyped) = %q, want no OCI runtime text", got)
	}
}
