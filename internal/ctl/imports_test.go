package ctl

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyThePortLayerClient: ctl is a front end with no Docker
// code: of this module it imports only the port layer's types and its
// API client, and nothing of Docker's or moby's.
func TestImportsOnlyThePortLayerClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/vchproject/vch/internal/ctl").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	allowed := map[string]bool{
		"github.com/vchproject/vch/internal/ctl":              true,
		"github.com/vchproject/vch/internal/portlayer":        true,
		"github.com/vchproject/vch/internal/portlayer/api":    true,
		"github.com/vchproject/vch/internal/portlayer/client": true,
		"github.com/vchproject/vch/internal/tlsfiles":         true,
	}
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(p, "github.com/vchproject/vch/") && !allowed[p]:
			t.Errorf("ctl depends on %s", p)
		case strings.Contains(p, "github.com/docker/") || strings.Contains(p, "github.com/moby/"):
			t.Errorf("ctl depends on Docker's %s", p)
		}
	}
}
