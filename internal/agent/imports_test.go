package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering: the guest agent's protocol and client import nothing of
// the layers that use them (the port layer, the hypervisor drivers, the
// personality), and the driver conformance suite reaches the guest through
// this package, not through the port layer.
func TestLayering(t *testing.T) {
	const mod = "github.com/vchproject/vch/internal/"
	for pkg, banned := range map[string][]string{
		mod + "agent/...":         {mod + "portlayer", mod + "hypervisor", mod + "personality", mod + "tether"},
		mod + "hypervisor/...":    {mod + "portlayer", mod + "personality"},
		mod + "tether/...":        {mod + "portlayer", mod + "hypervisor", mod + "personality"},
		mod + "hypervisor/hvtest": {mod + "portlayer"},
	} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Skipf("go list: %v", err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, b := range banned {
				if dep == b || strings.HasPrefix(dep, b+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
