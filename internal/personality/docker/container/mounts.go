package container

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	dockervolume "github.com/vchproject/vch/internal/personality/docker/volume"
	"github.com/vchproject/vch/internal/portlayer"
)

// Mounts: Docker's -v (HostConfig.Binds), --mount (HostConfig.Mounts),
// --tmpfs (HostConfig.Tmpfs), -v /path and image VOLUMEs (Config.Volumes)
// and --volumes-from become the port layer's MountSpecs here, with
// dockerd's rules (daemon/volumes.go registerMountPoints and the Linux
// mount parser) and its error texts.

// tmpfsDefaults are the options dockerd puts before a tmpfs mount's own
// (daemon/oci_linux.go).
const tmpfsDefaults = "noexec,nosuid,nodev"

// volumeNamePattern is the local volume driver's name rule.
var volumeNamePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// validVolumeName checks a volume name as Docker's local driver does, with
// its texts. InvalidArgument.
func validVolumeName(name string) error {
	if len(name) == 1 {
		return httputils.InvalidArgument("create %s: volume name is too short, names should be at least two alphanumeric characters", name)
	}
	if !volumeNamePattern.MatchString(name) {
		return httputils.InvalidArgument("create %s: %q includes invalid characters for a local volume name, only %q are allowed. If you intended to pass a host directory, use absolute path", name, name, "[a-zA-Z0-9][a-zA-Z0-9_.-]")
	}
	return nil
}

// checkDriver refuses volume drivers other than "local" with dockerd's
// text for a missing plugin (404).
func checkDriver(volume, driver string) error {
	if driver == "" || driver == "local" {
		return nil
	}
	return httputils.Classify(errdefs.ErrNotFound, nil, fmt.Sprintf("create %s: error looking up volume plugin %s: plugin %q not found", volume, driver, driver))
}

// Mount modes of -v: rw/ro, SELinux labels, propagation, copy and
// consistency modes; at most one of each kind.
var modeKinds = map[string]string{
	"rw": "rw", "ro": "rw",
	"z": "label", "Z": "label",
	"private": "prop", "rprivate": "prop", "shared": "prop", "rshared": "prop", "slave": "prop", "rslave": "prop",
	"nocopy":     "copy",
	"consistent": "consistency", "cached": "consistency", "delegated": "consistency",
}

func validMode(mode string) bool {
	if mode == "" {
		return true
	}
	seen := map[string]bool{}
	for _, o := range strings.Split(mode, ",") {
		kind, ok := modeKinds[o]
		if !ok || seen[kind] {
			return false
		}
		seen[kind] = true
	}
	return true
}

func hasMode(mode, o string) bool {
	for _, m := range strings.Split(mode, ",") {
		if m == o {
			return true
		}
	}
	return false
}

// absTarget checks a mount destination: absolute and not "/".
func absTarget(p string) error {
	if !path.IsAbs(p) {
		return fmt.Errorf("invalid mount path: '%s' mount path must be absolute", p)
	}
	if path.Clean(p) == "/" {
		return fmt.Errorf("invalid specification: destination can't be '/'")
	}
	return nil
}

// parseBind parses one -v value, "[name:]/dest[:mode]", as dockerd's
// ParseMountRaw does. A host path source is NotImplemented.
func parseBind(raw string) (portlayer.MountSpec, error) {
	invalid := func() error { return httputils.InvalidArgument("invalid volume specification: '%s'", raw) }
	arr := strings.SplitN(raw, ":", 4)
	if arr[0] == "" {
		return portlayer.MountSpec{}, invalid()
	}
	var src, dst, mode string
	switch len(arr) {
	case 1:
		dst = arr[0]
	case 2:
		if validMode(arr[1]) {
			return portlayer.MountSpec{}, invalid()
		}
		src, dst = arr[0], arr[1]
	case 3:
		src, dst, mode = arr[0], arr[1], arr[2]
	default:
		return portlayer.MountSpec{}, invalid()
	}
	if !validMode(mode) {
		return portlayer.MountSpec{}, httputils.InvalidArgument("invalid mode: %s", mode)
	}
	if path.IsAbs(src) {
		// A host directory; dockerd makes it when missing.
		if err := absTarget(dst); err != nil {
			return portlayer.MountSpec{}, httputils.InvalidArgument("invalid volume specification: '%s': invalid mount config for type \"bind\": %v", raw, err)
		}
		if hasMode(mode, "nocopy") {
			return portlayer.MountSpec{}, httputils.InvalidArgument("invalid volume specification: '%s': invalid mount config for type \"bind\": field VolumeOptions must not be specified", raw)
		}
		return portlayer.MountSpec{
			Type: portlayer.MountBind, Source: path.Clean(src), Target: path.Clean(dst),
			ReadOnly: hasMode(mode, "ro"), CreateHostDir: true,
		}, nil
	}
	if err := absTarget(dst); err != nil {
		return portlayer.MountSpec{}, httputils.InvalidArgument("invalid volume specification: '%s': invalid mount config for type \"volume\": %v", raw, err)
	}
	if src != "" {
		if err := validVolumeName(src); err != nil {
			return portlayer.MountSpec{}, err
		}
	}
	return portlayer.MountSpec{
		Type: portlayer.MountVolume, Source: src, Target: path.Clean(dst),
		ReadOnly: hasMode(mode, "ro"), NoCopy: hasMode(mode, "nocopy"),
	}, nil
}

// mountConfigErr is dockerd's text for a bad --mount.
func mountConfigErr(t mount.Type, format string, a ...any) error {
	return httputils.InvalidArgument("invalid mount config for type %q: %s", t, fmt.Sprintf(format, a...))
}

// tmpfsOptions renders --mount type=tmpfs options as dockerd's
// ConvertTmpfsOptions does (size with the largest exact unit, mode in
// octal, then the extra options, of which only exec and noexec exist).
func tmpfsOptions(opt *mount.TmpfsOptions, readOnly bool) (string, error) {
	var raw []string
	if readOnly {
		raw = append(raw, "ro")
	}
	if opt != nil && opt.Mode != 0 {
		raw = append(raw, fmt.Sprintf("mode=%o", opt.Mode))
	}
	if opt != nil && opt.SizeBytes != 0 {
		size, suffix := opt.SizeBytes, ""
		for _, u := range []struct {
			suffix string
			div    int64
		}{{"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
			if size%u.div == 0 {
				size, suffix = size/u.div, u.suffix
				break
			}
		}
		raw = append(raw, fmt.Sprintf("size=%d%s", size, suffix))
	}
	if opt != nil {
		for _, o := range opt.Options {
			if len(o) < 1 || len(o) > 2 {
				return "", fmt.Errorf("invalid option array length")
			}
			if o[0] != "exec" && o[0] != "noexec" {
				return "", fmt.Errorf("invalid option: %s", o[0])
			}
			if len(o) == 1 {
				raw = append(raw, o[0])
			} else {
				raw = append(raw, o[0]+"="+o[1])
			}
		}
	}
	return strings.Join(raw, ","), nil
}

// parseMount converts one --mount (HostConfig.Mounts entry).
func parseMount(m mount.Mount) (portlayer.MountSpec, error) {
	if m.Target == "" {
		return portlayer.MountSpec{}, mountConfigErr(m.Type, "field Target must not be empty")
	}
	if err := absTarget(m.Target); err != nil {
		return portlayer.MountSpec{}, mountConfigErr(m.Type, "%v", err)
	}
	spec := portlayer.MountSpec{Target: path.Clean(m.Target), ReadOnly: m.ReadOnly}
	if m.ImageOptions != nil && m.Type != mount.TypeImage && m.Type != "" {
		// dockerd's validateMountConfig, for every other type.
		return spec, mountConfigErr(m.Type, "field ImageOptions must not be specified")
	}
	switch m.Type {
	case mount.TypeVolume:
		if m.BindOptions != nil {
			return spec, mountConfigErr(m.Type, "field BindOptions must not be specified")
		}
		if m.TmpfsOptions != nil {
			return spec, mountConfigErr(m.Type, "field TmpfsOptions must not be specified")
		}
		spec.Type, spec.Source = portlayer.MountVolume, m.Source
		if m.Source != "" {
			if err := validVolumeName(m.Source); err != nil {
				return spec, err
			}
		}
		if o := m.VolumeOptions; o != nil {
			if o.Subpath != "" {
				// dockerd's validateMountConfig.
				if m.Source == "" {
					return spec, mountConfigErr(m.Type, "must not set Subpath when using anonymous volumes")
				}
				if !filepath.IsLocal(o.Subpath) {
					return spec, mountConfigErr(m.Type, "subpath must be a relative path within the volume")
				}
				spec.Subpath = o.Subpath
			}
			spec.NoCopy = o.NoCopy
			spec.VolumeLabels = o.Labels
			if o.DriverConfig != nil {
				name := m.Source
				if name == "" {
					name = "anonymous volume"
				}
				if err := checkDriver(name, o.DriverConfig.Name); err != nil {
					return spec, err
				}
				spec.VolumeOptions = o.DriverConfig.Options
			}
		}
	case mount.TypeTmpfs:
		if m.Source != "" {
			return spec, mountConfigErr(m.Type, "field Source must not be specified")
		}
		if m.BindOptions != nil {
			return spec, mountConfigErr(m.Type, "field BindOptions must not be specified")
		}
		if m.VolumeOptions != nil {
			return spec, mountConfigErr(m.Type, "field VolumeOptions must not be specified")
		}
		opts, err := tmpfsOptions(m.TmpfsOptions, m.ReadOnly)
		if err != nil {
			return spec, mountConfigErr(m.Type, "%v", err)
		}
		spec.Type, spec.Options = portlayer.MountTmpfs, joinOptions(tmpfsDefaults, opts)
	case mount.TypeBind:
		if m.Source == "" {
			return spec, mountConfigErr(m.Type, "field Source must not be empty")
		}
		if m.VolumeOptions != nil {
			return spec, mountConfigErr(m.Type, "field VolumeOptions must not be specified")
		}
		if m.TmpfsOptions != nil {
			return spec, mountConfigErr(m.Type, "field TmpfsOptions must not be specified")
		}
		if !path.IsAbs(m.Source) {
			return spec, mountConfigErr(m.Type, "invalid mount path: '%s' mount path must be absolute", m.Source)
		}
		if o := m.BindOptions; o != nil && o.Propagation != "" && modeKinds[string(o.Propagation)] != "prop" {
			return spec, mountConfigErr(m.Type, "invalid propagation mode: %s", o.Propagation)
		}
		spec.Type, spec.Source = portlayer.MountBind, path.Clean(m.Source)
		spec.CreateHostDir = m.BindOptions != nil && m.BindOptions.CreateMountpoint
	case mount.TypeImage:
		// dockerd's checks, in its order (volume/mounts linux_parser);
		// the reference is resolved to an image ID by the create.
		if m.BindOptions != nil {
			return spec, mountConfigErr(m.Type, "field BindOptions must not be specified")
		}
		if m.VolumeOptions != nil {
			return spec, mountConfigErr(m.Type, "field VolumeOptions must not be specified")
		}
		if m.Source == "" {
			return spec, mountConfigErr(m.Type, "field Source must not be empty")
		}
		if o := m.ImageOptions; o != nil && o.Subpath != "" {
			if !filepath.IsLocal(o.Subpath) {
				return spec, mountConfigErr(m.Type, "subpath must be a relative path within the volume")
			}
			spec.Subpath = o.Subpath
		}
		spec.Type, spec.Source, spec.ReadOnly, spec.NoCopy = portlayer.MountImage, m.Source, true, true
	case "":
		return spec, mountConfigErr(m.Type, "mount type unknown")
	default:
		return spec, errdefs.ErrNotImplemented.WithMessage(fmt.Sprintf("mounts of type %q are not supported by vch", m.Type))
	}
	return spec, nil
}

func joinOptions(a, b string) string {
	if b == "" {
		return a
	}
	return a + "," + b
}

// containerLookup finds a container for --volumes-from.
type containerLookup func(ctx context.Context, idOrName string) (portlayer.Container, error)

// parseMounts gathers a create request's mounts with dockerd's precedence:
// Config.Volumes (image VOLUMEs and -v /path: anonymous volumes) unless
// something else is mounted there, --volumes-from, then -v and --mount (a
// destination used twice among those is "Duplicate mount point"), then
// --tmpfs. The result is sorted by destination.
func parseMounts(ctx context.Context, cfg *container.Config, hc *container.HostConfig, lookup containerLookup) ([]portlayer.MountSpec, error) {
	byDest := map[string]portlayer.MountSpec{}
	explicit := map[string]bool{} // destinations of -v and --mount
	for _, from := range hc.VolumesFrom {
		id, mode, _ := strings.Cut(from, ":")
		if from == "" {
			return nil, httputils.InvalidArgument("volumes-from specification cannot be an empty string")
		}
		// As dockerd: no propagation or copy modes on volumes-from.
		if mode != "" && (!validMode(mode) || hasMode(mode, "nocopy") || hasPropagation(mode)) {
			return nil, httputils.InvalidArgument("invalid mode: %s", mode)
		}
		// A missing source is a bad parameter to dockerd (400), not 404.
		src, err := lookup(ctx, id)
		if err != nil {
			if errdefs.IsNotFound(err) {
				return nil, httputils.InvalidArgument("No such container: %s", id)
			}
			return nil, err
		}
		for _, m := range src.Spec.Mounts {
			if m.Type != portlayer.MountVolume && m.Type != portlayer.MountBind && m.Type != portlayer.MountImage {
				continue // tmpfs mounts are the container's own
			}
			if mode != "" {
				m.ReadOnly = hasMode(mode, "ro")
			}
			m.VolumeLabels, m.VolumeOptions = nil, nil
			byDest[m.Target] = m
		}
	}
	for _, raw := range hc.Binds {
		m, err := parseBind(raw)
		if err != nil {
			return nil, err
		}
		if hc.VolumeDriver != "" && m.Source != "" {
			if err := checkDriver(m.Source, hc.VolumeDriver); err != nil {
				return nil, err
			}
		}
		if explicit[m.Target] {
			return nil, httputils.InvalidArgument("Duplicate mount point: %s", m.Target)
		}
		explicit[m.Target] = true
		byDest[m.Target] = m
	}
	for _, hm := range hc.Mounts {
		m, err := parseMount(hm)
		if err != nil {
			return nil, err
		}
		if explicit[m.Target] {
			return nil, httputils.InvalidArgument("Duplicate mount point: %s", m.Target)
		}
		explicit[m.Target] = true
		byDest[m.Target] = m
	}
	for dest, data := range hc.Tmpfs {
		if err := absTarget(dest); err != nil {
			return nil, httputils.InvalidArgument("%v", err)
		}
		dest = path.Clean(dest)
		if prev, ok := byDest[dest]; ok {
			if prev.Type == portlayer.MountTmpfs && explicit[dest] {
				continue // --mount type=tmpfs at the same place: dockerd keeps both; one is enough
			}
			if explicit[dest] {
				return nil, httputils.InvalidArgument("Duplicate mount point: %s", dest)
			}
		}
		byDest[dest] = portlayer.MountSpec{Type: portlayer.MountTmpfs, Target: dest, Options: joinOptions(tmpfsDefaults, data)}
	}
	for dest := range cfg.Volumes {
		if err := absTarget(dest); err != nil {
			return nil, httputils.InvalidArgument("%v", err)
		}
		dest = path.Clean(dest)
		if _, ok := byDest[dest]; ok {
			continue
		}
		m := portlayer.MountSpec{Type: portlayer.MountVolume, Target: dest}
		if hc.VolumeDriver != "" {
			if err := checkDriver("anonymous volume", hc.VolumeDriver); err != nil {
				return nil, err
			}
		}
		byDest[dest] = m
	}
	out := make([]portlayer.MountSpec, 0, len(byDest))
	for _, m := range byDest {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out, nil
}

func hasPropagation(mode string) bool {
	for _, m := range strings.Split(mode, ",") {
		if modeKinds[m] == "prop" {
			return true
		}
	}
	return false
}

// volumeSources looks up volumes' host paths for Docker's Mounts.Source.
type volumeSources interface {
	InspectVolume(ctx context.Context, name string) (portlayer.Volume, error)
}

// mountPoints renders a container's mounts as Docker's inspect and ps show
// them (MountPoint), sorted by destination. A --tmpfs mount is not listed
// (dockerd shows it only under HostConfig.Tmpfs); a volume given with -v
// shows its mode ("z" when none, as dockerd's default relabel mode).
func mountPoints(ctx context.Context, c portlayer.Container, hc *container.HostConfig, vols volumeSources) []container.MountPoint {
	modes := map[string]string{}
	for _, raw := range hc.Binds {
		if m, err := parseBind(raw); err == nil {
			arr := strings.SplitN(raw, ":", 4)
			mode := ""
			if len(arr) == 3 {
				mode = arr[2]
			}
			if mode == "" && m.Type == portlayer.MountVolume && m.Source != "" {
				mode = "z"
			}
			modes[m.Target] = mode
		}
	}
	fromMount := map[string]bool{}
	imageNames := map[string]string{} // target → the image reference given
	for _, m := range hc.Mounts {
		fromMount[path.Clean(m.Target)] = true
		if m.Type == mount.TypeImage {
			imageNames[path.Clean(m.Target)] = m.Source
		}
	}
	out := []container.MountPoint{}
	for _, m := range c.Spec.Mounts {
		mp := container.MountPoint{Destination: m.Target, RW: !m.ReadOnly, Mode: modes[m.Target]}
		switch m.Type {
		case portlayer.MountVolume:
			mp.Type, mp.Name, mp.Driver = mount.TypeVolume, m.Source, "local"
			if vols != nil {
				if v, err := vols.InspectVolume(ctx, m.Source); err == nil {
					mp.Source = dockervolume.Mountpoint(v)
				}
			}
		case portlayer.MountTmpfs:
			if !fromMount[m.Target] {
				continue
			}
			mp.Type = mount.TypeTmpfs
		case portlayer.MountBind:
			mp.Type, mp.Source, mp.Propagation = mount.TypeBind, m.Source, mount.PropagationRPrivate
		case portlayer.MountImage:
			// dockerd names the mount by the reference given and
			// shows the image's layer mounted on its host as Source;
			// here the image's disk is the VM's, with no host path.
			// One from --volumes-from has no reference here: its
			// image's ID stands in.
			mp.Type, mp.Name, mp.Propagation = mount.TypeImage, cmp.Or(imageNames[m.Target], m.Source), mount.PropagationRPrivate
		default:
			continue
		}
		out = append(out, mp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Destination < out[j].Destination })
	return out
}
