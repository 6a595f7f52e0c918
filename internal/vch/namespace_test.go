package vch

import (
	"testing"

	"github.com/vchproject/vch/internal/testenv"
)

// The tests' helper that cleans up after a daemon names the same
// namespace the daemon uses.
func TestNamespaceNameMatchesTestenv(t *testing.T) {
	for _, root := range []string{"/var/lib/vch/one", "/tmp/x/root"} {
		if got, want := testenv.NamespaceName(root), NamespaceName(root); got != want {
			t.Errorf("testenv.NamespaceName(%q) = %q, want %q", root, got, want)
		}
	}
}
