package compute

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// Host bind mounts: a bind source is a host directory shared with the
// container's VM over virtio-9p (hypervisor.Share), which only Debian's
// generic guest kernel can mount, so such containers boot
// Config.ShareKernel. A source must lie under one of Config.BindRoots
// (after resolving symbolic links, at create and again at every start):
// the VMM serves the share as root, so a bind mount of / would hand the
// host to whoever may create containers.

// shareTag is the virtio-9p mount tag of a container's i-th bind mount.
func shareTag(i int) string { return "vch-share-" + strconv.Itoa(i) }

// bindsSupported is nil when this service can do bind mounts.
func (s *Service) bindsSupported() error {
	switch {
	case s.cfg.ShareKernel == "" || s.cfg.ShareInitrd == "":
		return portlayer.Errorf(portlayer.ClassNotImplemented, "host bind mounts need Debian's generic guest kernel, which has virtio-9p (make guest unpacks it into bin/guest/kernel-generic)")
	case !s.driver.Capabilities().Shares:
		return portlayer.Errorf(portlayer.ClassNotImplemented, "the hypervisor driver cannot share host directories")
	case len(s.bindRoots) == 0:
		return portlayer.Errorf(portlayer.ClassPermissionDenied, "host bind mounts are not allowed by this VCH (vch daemon --allow-bind-mounts names the host directories containers may mount)")
	}
	return nil
}

// resolveBindRoots resolves the configured roots' symbolic links once.
func resolveBindRoots(roots []string) ([]string, error) {
	var out []string
	for _, r := range roots {
		if !filepath.IsAbs(r) {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "bind mount root %q: want an absolute path", r)
		}
		real, err := filepath.EvalSymlinks(r)
		if err != nil {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "bind mount root %q: %w", r, err)
		}
		out = append(out, real)
	}
	return out, nil
}

// within reports whether path is root or lies beneath it.
func within(path, root string) bool {
	if root == "/" {
		return true
	}
	return path == root || strings.HasPrefix(path, root+string(filepath.Separator))
}

// resolveBind returns the real host directory of a bind mount's source,
// creating it first when allowed. InvalidArgument for a missing source
// (ReasonMissing) or a file; PermissionDenied outside the allowed roots.
func (s *Service) resolveBind(m portlayer.MountSpec) (string, error) {
	src := filepath.Clean(m.Source)
	if !filepath.IsAbs(src) {
		return "", portlayer.Invalid(portlayer.KindMount, "Source", m.Source, portlayer.ReasonNotAbsolute, "compute: bind mount source "+strconv.Quote(m.Source)+" is not an absolute path")
	}
	// Resolve the longest existing ancestor, so a directory to be made is
	// checked where it will really be.
	existing, rest := src, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	base, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", fmt.Errorf("compute: bind source %s: %w", src, err)
	}
	real := filepath.Join(base, rest)
	allowed := false
	for _, root := range s.bindRoots {
		allowed = allowed || within(real, root)
	}
	if !allowed {
		return "", portlayer.Errorf(portlayer.ClassPermissionDenied, "bind mount of %s refused: this VCH allows bind mounts under %s only", src, strings.Join(s.bindRoots, ", "))
	}
	st, err := os.Stat(real)
	switch {
	case errors.Is(err, os.ErrNotExist) && m.CreateHostDir:
		if err := os.MkdirAll(real, 0o755); err != nil {
			return "", fmt.Errorf("compute: create bind source %s: %w", src, err)
		}
		return real, nil
	case errors.Is(err, os.ErrNotExist):
		return "", portlayer.Invalid(portlayer.KindMount, "Source", src, portlayer.ReasonMissing, "compute: bind mount source "+src+" does not exist")
	case err != nil:
		return "", fmt.Errorf("compute: bind source %s: %w", src, err)
	case !st.IsDir():
		return "", portlayer.Errorf(portlayer.ClassInvalidArgument, "bind mount of the file %s refused: a container VM can share host directories only; mount its directory instead", src)
	}
	return real, nil
}

// shares returns the spec's bind mounts as VM shares, in order, resolved
// and checked again (the host may have changed since create).
func (s *Service) shares(spec portlayer.ContainerSpec) ([]hypervisor.Share, error) {
	var out []hypervisor.Share
	for _, m := range spec.Mounts {
		if m.Type != portlayer.MountBind {
			continue
		}
		if err := s.bindsSupported(); err != nil {
			return nil, err
		}
		real, err := s.resolveBind(m)
		if err != nil {
			return nil, err
		}
		out = append(out, hypervisor.Share{Tag: shareTag(len(out)), Path: real, ReadOnly: m.ReadOnly})
	}
	return out, nil
}
