package vsphere

import (
	"strings"
	"testing"

	"github.com/vmware/govmomi/session"
)

// TestRelogin: when the driver's session is terminated (as by an
// administrator, or lost with a vCenter restart), its next calls log in
// again once and succeed; the host view (a session's object) is made
// anew, so the hosts are read and a VM placed by free memory (no DRS)
// starts on the new session.
func TestRelogin(t *testing.T) {
	e := newSim(t)
	e.setDRS(false)
	d := e.vch()
	ctx := t.Context()
	us, err := d.sessions.UserSession(ctx)
	if err != nil || us == nil {
		t.Fatalf("driver's session: %v, %v", us, err)
	}
	if err := session.NewManager(e.c).TerminateSession(ctx, []string{us.Key}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := d.CoreMHz(ctx); err != nil {
			t.Fatalf("a call after the session was terminated: %v", err)
		}
	}
	us2, err := d.sessions.UserSession(ctx)
	if err != nil || us2 == nil || us2.Key == us.Key {
		t.Fatalf("session after the relogin: %v, %v (was %s)", us2, err, us.Key)
	}
	if n := strings.Count(e.logs.String(), "logged in again"); n != 1 {
		t.Errorf("%d relogins logged, want 1:\n%s", n, e.logs.String())
	}
	for range 2 {
		if err := d.refreshHosts(ctx); err != nil {
			t.Fatalf("reading the hosts after the relogin: %v", err)
		}
	}
	s := e.start(d, spec("after-relogin"))
	if err := s.vm.Kill(); err != nil {
		t.Fatal(err)
	}
}
