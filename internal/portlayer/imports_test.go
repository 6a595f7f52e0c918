package portlayer

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoDockerBelow: no package under internal/portlayer imports Docker's
// or moby's packages, or the Docker personality: the port layer is a
// general container backend, and what is Docker's lives in the
// personality. (go-containerregistry's authn reads the docker CLI's
// credentials file with the CLI's own config package; that is the
// library's dependency, not an import of ours.)
func TestNoDockerBelow(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, "github.com/vchproject/vch/internal/portlayer/...").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, "github.com/docker/"), strings.HasPrefix(dep, "github.com/moby/"):
			t.Errorf("the port layer depends on Docker's %s", dep)
		case strings.HasPrefix(dep, "github.com/vchproject/vch/internal/personality"):
			t.Errorf("the port layer depends on the personality's %s", dep)
		}
	}
}
