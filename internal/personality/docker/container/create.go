package container

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	seccompprofile "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/pkg/namesgenerator"
	units "github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// validName is dockerd's RestrictedNamePattern; a leading "/" is allowed.
var validName = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// ValidateName checks a container name as dockerd does (empty is allowed:
// the port layer picks one). InvalidArgument "Invalid container name (<name>),
// only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed" otherwise.
func ValidateName(name string) error {
	if name == "" || validName.MatchString(name) {
		return nil
	}
	return httputils.InvalidArgument("Invalid container name (%s), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name)
}

// CleanWorkingDir checks a working directory as dockerd's translateWorkingDir
// does: empty stays empty, an absolute path is cleaned ("/a/../b/" -> "/b"),
// and a relative one is InvalidArgument "the working directory '<dir>' is
// invalid, it needs to be an absolute path" (a relative directory would be
// resolved against the guest agent's directory, outside the container).
func CleanWorkingDir(dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	if !path.IsAbs(dir) {
		return "", httputils.InvalidArgument("the working directory '%s' is invalid, it needs to be an absolute path", dir)
	}
	return path.Clean(dir), nil
}

// MergeConfig fills the user's config with the image's defaults, following
// dockerd's merge and mergeAndVerifyConfig (daemon/commit.go, create.go):
//
//   - User, WorkingDir, StopSignal: the user's, else the image's.
//   - Env: the user's entries, then the image's entries whose key the user
//     did not set (Docker's stored order).
//   - Labels: the image's labels under the user's.
//   - Entrypoint/Cmd: if the user gave no Entrypoint (nil or empty), the
//     image's Cmd is used unless the user gave a Cmd, and a nil Entrypoint
//     takes the image's. A user Entrypoint drops the image Cmd unless the
//     user gave a Cmd. An Entrypoint of [""] (`--entrypoint ""`) resets it.
//
// It returns the merged config (user is not modified) and the process argv
// (Entrypoint followed by Cmd). InvalidArgument "no command specified" if
// both end up empty.
func MergeConfig(user container.Config, img ocispec.ImageConfig) (container.Config, []string, error) {
	c := user
	if c.User == "" {
		c.User = img.User
	}
	if c.WorkingDir == "" {
		c.WorkingDir = img.WorkingDir
	}
	if c.StopSignal == "" {
		c.StopSignal = img.StopSignal
	}
	c.Env = mergeEnv(user.Env, img.Env)
	if len(img.Labels) > 0 || c.Labels != nil {
		labels := make(map[string]string, len(img.Labels)+len(user.Labels))
		for k, v := range img.Labels {
			labels[k] = v
		}
		for k, v := range user.Labels {
			labels[k] = v
		}
		c.Labels = labels
	}
	if len(img.ExposedPorts) > 0 {
		ports := make(network.PortSet, len(img.ExposedPorts)+len(user.ExposedPorts))
		for p := range user.ExposedPorts {
			ports[p] = struct{}{}
		}
		for k := range img.ExposedPorts {
			if p, err := network.ParsePort(k); err == nil {
				ports[p] = struct{}{}
			}
		}
		c.ExposedPorts = ports
	}
	if len(img.Volumes) > 0 {
		// The image's VOLUMEs join the user's (-v /path) ones.
		vols := make(map[string]struct{}, len(img.Volumes)+len(user.Volumes))
		for k := range img.Volumes {
			vols[k] = struct{}{}
		}
		for k := range user.Volumes {
			vols[k] = struct{}{}
		}
		c.Volumes = vols
	}
	if len(user.Entrypoint) == 0 {
		if len(user.Cmd) == 0 {
			c.Cmd = img.Cmd
		}
		if user.Entrypoint == nil {
			c.Entrypoint = img.Entrypoint
		}
	}
	if len(c.Entrypoint) == 1 && c.Entrypoint[0] == "" {
		c.Entrypoint = nil
	}
	if len(c.Entrypoint) == 0 && len(c.Cmd) == 0 {
		return c, nil, httputils.InvalidArgument("no command specified")
	}
	args := append(append([]string{}, c.Entrypoint...), c.Cmd...)
	return c, args, nil
}

// mergeEnv returns the user's entries followed by the image entries whose
// key the user did not set.
func mergeEnv(user, img []string) []string {
	if len(user) == 0 {
		return append([]string(nil), img...)
	}
	out := append([]string{}, user...)
	seen := make(map[string]bool, len(user))
	for _, e := range user {
		k, _, _ := strings.Cut(e, "=")
		seen[k] = true
	}
	for _, e := range img {
		k, _, _ := strings.Cut(e, "=")
		if !seen[k] {
			out = append(out, e)
		}
	}
	return out
}

// processEnv orders a merged environment image-first for the port layer
// ("later ones win"): the image-only entries, then the user's.
func processEnv(user, img []string) []string {
	seen := make(map[string]bool, len(user))
	for _, e := range user {
		k, _, _ := strings.Cut(e, "=")
		seen[k] = true
	}
	var out []string
	for _, e := range img {
		k, _, _ := strings.Cut(e, "=")
		if !seen[k] {
			out = append(out, e)
		}
	}
	return append(out, user...)
}

// familiarRef normalises an image reference for messages ("busybox" ->
// "busybox:latest"); it returns s unchanged if s is not a reference.
func familiarRef(s string) string {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return s
	}
	return reference.FamiliarString(reference.TagNameOnly(named))
}

// postCreate serves POST /containers/create?name= (Engine API v1.50
// "Create a container"): 201 {"Id":..., "Warnings":[]}. 404 "No such image:
// <ref>" lets the CLI pull and retry; 409 on a name conflict.
func (rt *Router) postCreate(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	name := r.Form.Get("name")
	if err := ValidateName(name); err != nil {
		return err
	}
	name = strings.TrimPrefix(name, "/")
	var req container.CreateRequest
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	if req.Config == nil {
		return httputils.InvalidArgument("config cannot be empty in order to create a container")
	}
	hc := req.HostConfig
	if hc == nil {
		hc = &container.HostConfig{}
	}
	if req.Config.Image == "" {
		return httputils.InvalidArgument("no image specified")
	}
	// dockerd checks the host config before it looks the image up.
	if err := ValidateRestartPolicy(hc.RestartPolicy, hc.AutoRemove); err != nil {
		return err
	}
	if err := ValidateHostModes(hc); err != nil {
		return err
	}
	sec, err := ParseSecurityOpts(hc.SecurityOpt)
	if err != nil {
		return err
	}
	wd, err := CleanWorkingDir(req.Config.WorkingDir)
	if err != nil {
		return err
	}
	req.Config.WorkingDir = wd
	if err := ValidateEnv(req.Config.Env); err != nil {
		return err
	}
	var platform *ocispec.Platform
	if v := r.Form.Get("platform"); v != "" && httputils.VersionAtLeast(ctx, "1.41") {
		p, err := httputils.ParsePlatform(v)
		if err != nil {
			return err
		}
		platform = &p
	}
	img, err := rt.images.Get(ctx, req.Config.Image)
	if err == nil && platform != nil {
		imgPlat := ocispec.Platform{OS: img.Config.OS, Architecture: img.Config.Architecture, Variant: img.Config.Variant}
		if !httputils.PlatformMatches(*platform, imgPlat) {
			// dockerd's answer: the image is there, but not for that
			// platform (daemon/images GetImage).
			return httputils.PlatformMismatch(req.Config.Image, imgPlat, *platform)
		}
	}
	if err != nil {
		switch {
		case errdefs.IsNotFound(err):
			return httputils.Classify(errdefs.ErrNotFound, err, "No such image: "+familiarRef(req.Config.Image))
		case errdefs.IsInvalidArgument(err):
			// The only refusal of a lookup: a reference that does not
			// parse ("busybox:sha256:…"), in dockerd's words.
			return httputils.Classify(errdefs.ErrInvalidArgument, err, "invalid reference format")
		}
		return fmt.Errorf("create: image %s: %w", req.Config.Image, err)
	}
	merged, args, err := MergeConfig(*req.Config, img.Config.Config)
	if err != nil {
		return err
	}
	merged.Healthcheck = mergeHealthcheck(req.Config.Healthcheck, DockerExt(img).Healthcheck)
	if err := validateHealthcheck(merged.Healthcheck); err != nil {
		return err
	}
	spec := portlayer.ContainerSpec{
		Name:          name,
		Image:         img.ID,
		ImageRef:      req.Config.Image,
		Args:          args,
		Env:           processEnv(req.Config.Env, img.Config.Config.Env),
		WorkingDir:    merged.WorkingDir,
		User:          merged.User,
		GroupAdd:      hc.GroupAdd,
		Hostname:      merged.Hostname,
		Domainname:    merged.Domainname,
		Tty:           merged.Tty,
		OpenStdin:     merged.OpenStdin,
		StdinOnce:     merged.StdinOnce,
		AutoRemove:    hc.AutoRemove,
		RestartPolicy: portlayer.RestartPolicy{Name: string(hc.RestartPolicy.Name), MaximumRetryCount: hc.RestartPolicy.MaximumRetryCount},
	}
	if merged.StopSignal != "" {
		sig, err := ParseSignal(merged.StopSignal)
		if err != nil {
			return err
		}
		spec.StopSignal = sig
	}
	if merged.StopTimeout != nil {
		d := time.Duration(*merged.StopTimeout) * time.Second
		spec.StopTimeout = &d
	}
	if spec.Limits, err = ResourceLimits(hc.Resources, false); err != nil {
		return err
	}
	MergeLogConfig(&hc.LogConfig, rt.logDefaults)
	if err := applyLogConfig(&spec, hc.LogConfig); err != nil {
		return err
	}
	if hc.ShmSize < 0 {
		return httputils.InvalidArgument("SHM size can not be less than 0")
	}
	spec.ShmSizeBytes = hc.ShmSize
	spec.Sysctls = containerSysctls(hc.Sysctls)
	spec.NoNewPrivileges, spec.WritableCgroup, spec.Seccomp = sec.NoNewPrivileges, sec.WritableCgroups, sec.Seccomp
	if !hc.Privileged {
		// dockerd's defaults when the client sets none (daemon
		// create_unix.go); [] means none, and --privileged has none.
		if hc.MaskedPaths == nil {
			hc.MaskedPaths = defaultMaskedPaths()
		}
		if hc.ReadonlyPaths == nil {
			hc.ReadonlyPaths = slices.Clone(defaultReadonlyPaths)
		}
	}
	spec.MaskedPaths, spec.ReadonlyPaths = hc.MaskedPaths, hc.ReadonlyPaths
	if merged.Tty && httputils.VersionAtLeast(ctx, "1.42") {
		// HostConfig.ConsoleSize is [height, width]; dockerd ignores it
		// before API 1.42.
		spec.ConsoleRows, spec.ConsoleCols = hc.ConsoleSize[0], hc.ConsoleSize[1]
	}
	spec.ReadOnlyRootfs = hc.ReadonlyRootfs
	// Namespaces of another container: each container has a VM (and so
	// a kernel) of its own, so nothing is shared, but the container named
	// must exist, as dockerd checks at create.
	// As dockerd (adaptSharedNamespaceContainer), the mode then names the
	// container by ID, so a rename does not break it.
	for _, mode := range []*string{(*string)(&hc.PidMode), (*string)(&hc.IpcMode)} {
		other, ok := strings.CutPrefix(*mode, "container:")
		if !ok || other == "" {
			continue
		}
		oc, err := rt.compute.Inspect(ctx, other)
		if errdefs.IsNotFound(err) {
			return httputils.Classify(errdefs.ErrInvalidArgument, err, "No such container: "+other)
		}
		if err == nil {
			*mode = "container:" + oc.ID
		}
	}
	if spec.Mounts, err = parseMounts(ctx, &merged, hc, rt.compute.Inspect); err != nil {
		return err
	}
	warnings := []string{}
	for i, m := range spec.Mounts {
		if m.Type != portlayer.MountImage {
			continue
		}
		if !httputils.VersionAtLeast(ctx, "1.48") {
			// dockerd's router (postContainersCreate).
			return httputils.InvalidArgument(`Mount type "Image" needs API v1.48 or newer`)
		}
		// dockerd resolves an image mount's reference at create
		// (daemon registerMountPoints) and warns of the feature.
		mimg, err := rt.images.Get(ctx, m.Source)
		if err != nil {
			switch {
			case errdefs.IsNotFound(err):
				return httputils.Classify(errdefs.ErrNotFound, err, "No such image: "+familiarRef(m.Source))
			case errdefs.IsInvalidArgument(err):
				return httputils.Classify(errdefs.ErrInvalidArgument, err, "invalid reference format")
			}
			return fmt.Errorf("create: image mount %s: %w", m.Source, err)
		}
		spec.Mounts[i].Source = mimg.ID
		warnings = append(warnings, "Image mount is an experimental feature")
	}
	spec.Init = hc.Init != nil && *hc.Init
	if err := rt.applyNetworkConfig(ctx, &spec, merged.ExposedPorts, hc, req.NetworkingConfig); err != nil {
		return err
	}
	cfgJSON, err := json.Marshal(merged)
	if err != nil {
		return fmt.Errorf("create: encode config: %w", err)
	}
	// Defaults dockerd fills in, so inspect shows them (daemon
	// create.go, adaptContainerSettings): /dev/shm's 64 MiB, swap as much
	// as memory, the private cgroup namespace of cgroup v2; and the
	// "unset" forms it stores as null.
	if hc.ShmSize == 0 {
		hc.ShmSize = defaultShmBytes
	}
	if hc.Memory > 0 && hc.MemorySwap == 0 {
		hc.MemorySwap = 2 * hc.Memory
	}
	if hc.CgroupnsMode == "" {
		hc.CgroupnsMode = container.CgroupnsModePrivate
	}
	if hc.PidsLimit != nil && *hc.PidsLimit <= 0 {
		hc.PidsLimit = nil
	}
	if hc.MemorySwappiness != nil && *hc.MemorySwappiness == -1 {
		hc.MemorySwappiness = nil
	}
	if rt.runtime != nil {
		// dockerd: the default runtime when none is named, else one it
		// knows (daemon verifyPlatformContainerSettings).
		name, err := rt.runtime(ctx)
		if err != nil {
			return err
		}
		switch hc.Runtime {
		case "":
			hc.Runtime = name
		case name:
		default:
			return httputils.InvalidArgument("unknown or invalid runtime name: %s", hc.Runtime)
		}
	}
	if hc.IpcMode == "" {
		// dockerd's default IPC mode, "shareable" for clients before API
		// 1.40 (daemon adaptContainerSettings); the container's IPC
		// namespace is its VM's either way.
		hc.IpcMode = "private"
		if !httputils.VersionAtLeast(ctx, "1.40") {
			hc.IpcMode = "shareable"
		}
	}
	hcJSON, err := json.Marshal(hc)
	if err != nil {
		return fmt.Errorf("create: encode host config: %w", err)
	}
	spec.Annotations = map[string][]byte{AnnotationConfig: cfgJSON, AnnotationHostConfig: hcJSON}

	c, err := rt.createNamed(ctx, spec)
	if err != nil {
		if errdefs.IsAlreadyExists(err) && name != "" {
			return rt.nameConflict(r, name, err)
		}
		if errdefs.IsNotFound(err) {
			return httputils.Classify(errdefs.ErrNotFound, err, "No such image: "+familiarRef(req.Config.Image))
		}
		// The port layer's refusals of a spec (a bind source that does
		// not exist, a volume name, a mount outside the allowed host
		// directories) keep their own text, as dockerd's do.
		for _, c := range []struct {
			is    func(error) bool
			class error
		}{
			{errdefs.IsInvalidArgument, errdefs.ErrInvalidArgument},
			{errdefs.IsPermissionDenied, errdefs.ErrPermissionDenied},
			{errdefs.IsNotImplemented, errdefs.ErrNotImplemented},
		} {
			if c.is(err) {
				return httputils.Classify(c.class, err, httputils.PortLayerText(err))
			}
		}
		return fmt.Errorf("create: %w", err)
	}
	rt.log.InfoContext(ctx, "container created", "container", c.ID, "name", c.Spec.Name)
	return httputils.WriteJSON(w, http.StatusCreated, container.CreateResponse{ID: c.ID, Warnings: warnings})
}

// SecurityOpts are the --security-opt settings a container VM acts on.
// seccomp, apparmor and label profiles are accepted and have no effect:
// the container's kernel is its own VM's, the isolation boundary.
type SecurityOpts struct {
	// NoNewPrivileges: "no-new-privileges[=true]".
	NoNewPrivileges bool
	// WritableCgroups: "writable-cgroups[=true]".
	WritableCgroups bool
	// Seccomp is a "seccomp=PROFILE" JSON profile (the CLI sends the
	// file's content) as the OCI runtime-spec linux.seccomp object it
	// becomes (moby/profiles/seccomp LoadProfile, for Docker's default
	// capabilities); nil for none, "unconfined" or "builtin" (dockerd's
	// default profile is not applied: the VM is the boundary).
	Seccomp []byte
}

// ParseSecurityOpts reads HostConfig.SecurityOpt as dockerd does
// (daemon/daemon_unix.go parseSecurityOpt): "no-new-privileges",
// "writable-cgroups" and "disable" alone; else KEY=VALUE (or the
// deprecated KEY:VALUE) with KEY label, apparmor, seccomp,
// no-new-privileges or writable-cgroups, the last two boolean.
// InvalidArgument with dockerd's texts: `invalid --security-opt 1: "X"`
// for an option without a value, `invalid --security-opt 2: "X"` for an
// unknown key or a bad boolean.
func ParseSecurityOpts(opts []string) (SecurityOpts, error) {
	var o SecurityOpts
	for _, opt := range opts {
		switch opt {
		case "no-new-privileges":
			o.NoNewPrivileges = true
			continue
		case "writable-cgroups":
			o.WritableCgroups = true
			continue
		case "disable":
			continue
		}
		k, v, ok := strings.Cut(opt, "=")
		if !ok {
			k, v, ok = strings.Cut(opt, ":")
		}
		if !ok {
			return o, httputils.InvalidArgument("invalid --security-opt 1: %q", opt)
		}
		switch k {
		case "label", "apparmor":
		case "seccomp":
			if v == "unconfined" || v == "builtin" || v == "" {
				o.Seccomp = nil
				continue
			}
			prof, err := seccompprofile.LoadProfile(v, &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: defaultCapabilities}}})
			if err != nil {
				return o, httputils.InvalidArgument("%v", err)
			}
			if o.Seccomp, err = json.Marshal(prof); err != nil {
				return o, fmt.Errorf("create: encode seccomp profile: %w", err)
			}
		case "no-new-privileges", "writable-cgroups":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, httputils.InvalidArgument("invalid --security-opt 2: %q", opt)
			}
			if k == "no-new-privileges" {
				o.NoNewPrivileges = b
			} else {
				o.WritableCgroups = b
			}
		default:
			return o, httputils.InvalidArgument("invalid --security-opt 2: %q", opt)
		}
	}
	return o, nil
}

// defaultShmBytes is /dev/shm's size when the client sets none: 64 MiB,
// dockerd's default (its --default-shm-size).
const defaultShmBytes = 64 << 20

// defaultCapabilities are the capabilities dockerd gives a container that
// is not privileged (moby oci caps.DefaultCapabilities); a seccomp
// profile's rules may include or exclude syscalls by them.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// defaultReadonlyPaths are the paths dockerd makes read-only in every
// container that is not privileged (moby oci.DefaultSpec).
var defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// defaultMaskedPaths are the paths dockerd hides in every container that
// is not privileged (moby oci.DefaultSpec): kernel interfaces that leak
// the host's state or let a container disturb it, and the host's CPU
// thermal throttle counters (the CPUs it has, as dockerd lists them).
func defaultMaskedPaths() []string {
	paths := []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle")
	slices.SortFunc(cpus, func(a, b string) int {
		return cmp.Compare(cpuNumber(a), cpuNumber(b))
	})
	return append(paths, cpus...)
}

// cpuNumber is N of /sys/devices/system/cpu/cpuN/….
func cpuNumber(p string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(filepath.Dir(p)), "cpu"))
	return n
}

// defaultSysctls are the kernel parameters dockerd sets in every
// container not on the host's network (daemon/oci_linux.go WithSysctls):
// any user may bind ports below 1024 and open ICMP echo sockets (ping
// without privileges).
var defaultSysctls = map[string]string{
	"net.ipv4.ip_unprivileged_port_start": "0",
	"net.ipv4.ping_group_range":           "0 2147483647",
}

// containerSysctls is the container's --sysctl settings over dockerd's
// defaults.
func containerSysctls(user map[string]string) map[string]string {
	out := maps.Clone(defaultSysctls)
	maps.Copy(out, user)
	return out
}

// ValidateHostModes checks the namespace modes and annotations of a host
// config as dockerd does before a create (daemon verifyContainerSettings,
// validateHostConfig), with its texts, all InvalidArgument: "invalid IPC
// mode: X", "invalid PID mode: X", "invalid UTS mode: X", and "invalid
// Annotations: the empty string is not permitted as an annotation key".
// A valid mode is accepted whether or not a container VM can honour it.
func ValidateHostModes(hc *container.HostConfig) error {
	switch {
	case !hc.IpcMode.Valid():
		return httputils.InvalidArgument("invalid IPC mode: %v", hc.IpcMode)
	case !hc.PidMode.Valid():
		return httputils.InvalidArgument("invalid PID mode: %v", hc.PidMode)
	case !hc.UTSMode.Valid():
		return httputils.InvalidArgument("invalid UTS mode: %v", hc.UTSMode)
	}
	if _, ok := hc.Annotations[""]; ok {
		return httputils.InvalidArgument("invalid Annotations: the empty string is not permitted as an annotation key")
	}
	return nil
}

// ValidateEnv refuses an entry of Config.Env whose name is empty ("",
// "=", "=foo"), as dockerd's container config validation does (moby
// opts.ValidateEnv): 400 "invalid environment variable: ENTRY". Names are
// not otherwise checked.
func ValidateEnv(env []string) error {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == "" {
			return httputils.InvalidArgument("invalid environment variable: %s", e)
		}
	}
	return nil
}

// ValidateRestartPolicy checks HostConfig.RestartPolicy as dockerd 25+
// does (daemon/container.go validateRestartPolicy and the AutoRemove
// check of its host config validation), with its texts; all are
// InvalidArgument (400). An empty name is accepted with any count, for
// clients from before v25.
func ValidateRestartPolicy(p container.RestartPolicy, autoRemove bool) error {
	if autoRemove && p.Name != "" && p.Name != container.RestartPolicyDisabled {
		return httputils.InvalidArgument("can't create 'AutoRemove' container with restart policy")
	}
	switch p.Name {
	case container.RestartPolicyAlways, container.RestartPolicyUnlessStopped, container.RestartPolicyDisabled:
		if p.MaximumRetryCount != 0 {
			msg := "invalid restart policy: maximum retry count can only be used with 'on-failure'"
			if p.MaximumRetryCount < 0 {
				msg += " and cannot be negative"
			}
			return httputils.InvalidArgument("%s", msg)
		}
	case container.RestartPolicyOnFailure:
		if p.MaximumRetryCount < 0 {
			return httputils.InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
		}
	case "":
	default:
		return httputils.InvalidArgument("invalid restart policy: unknown policy '%s'; use one of '%s', '%s', '%s', or '%s'", p.Name,
			container.RestartPolicyDisabled, container.RestartPolicyAlways, container.RestartPolicyOnFailure, container.RestartPolicyUnlessStopped)
	}
	return nil
}

// maxNameTries bounds the generated names tried for one unnamed container.
const maxNameTries = 20

// createNamed creates spec's container; one without a name gets Docker's
// generated kind ("adjective_surname", moby's namesgenerator; a digit is
// added after the first try), another tried while the port layer answers
// that the name is in use.
func (rt *Router) createNamed(ctx context.Context, spec portlayer.ContainerSpec) (portlayer.Container, error) {
	if spec.Name != "" {
		return rt.compute.Create(ctx, spec)
	}
	for i := 0; ; i++ {
		spec.Name = namesgenerator.GetRandomName(i)
		c, err := rt.compute.Create(ctx, spec)
		if pe := portlayer.AsError(err); pe == nil || pe.Reason != portlayer.ReasonNameInUse || i == maxNameTries-1 {
			return c, err
		}
	}
}

// nameConflict builds dockerd's 409 text for a taken name from the port
// layer's name_in_use error cause, which names the container that has it.
func (rt *Router) nameConflict(r *http.Request, name string, cause error) error {
	id := ""
	if pe := portlayer.AsError(cause); pe != nil && pe.Reason == portlayer.ReasonNameInUse {
		id = pe.ID
	} else if other, err := rt.compute.Inspect(r.Context(), name); err == nil {
		id = other.ID
	}
	return httputils.Classify(errdefs.ErrConflict, cause, fmt.Sprintf(
		"Conflict. The container name %q is already in use by container %q. You have to remove (or rename) that container to be able to reuse that name.",
		"/"+name, id))
}

// logOptKeys are the --log-opt keys dockerd's json-file and local drivers
// accept (their ValidateLogOpt); vch honours max-size and max-file and
// accepts the others without effect.
var logOptKeys = map[string]bool{
	"max-file": true, "max-size": true, "compress": true,
	"env": true, "env-regex": true, "labels": true, "labels-regex": true, "tag": true,
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// MergeLogConfig completes a container's logging config from the VCH's
// defaults (its daemon's --log-driver and --log-opt), as dockerd's
// mergeAndVerifyLogConfig: no driver named takes the default driver, and
// a container of the default driver gets each default option it does
// not set itself. lc.Config is never nil after it.
func MergeLogConfig(lc *container.LogConfig, defaults container.LogConfig) {
	driver := defaults.Type
	if driver == "" {
		driver = "json-file"
	}
	if lc.Type == "" {
		lc.Type = driver
	}
	if lc.Config == nil {
		lc.Config = map[string]string{}
	}
	if lc.Type == driver {
		for k, v := range defaults.Config {
			if _, ok := lc.Config[k]; !ok {
				lc.Config[k] = v
			}
		}
	}
}

// ValidateLogConfig checks a logging config as create does (the drivers
// vch keeps, json-file, local and none, and their options), with
// dockerd's texts; for a VCH's defaults before it serves.
func ValidateLogConfig(lc container.LogConfig) error {
	var spec portlayer.ContainerSpec
	return applyLogConfig(&spec, lc)
}

// applyLogConfig reads the json-file options max-size and max-file of
// `--log-opt` (Docker's json-file logging driver). "none" keeps no log
// and, as dockerd's ValidateLogOpts, takes any options unchecked; other
// drivers are refused, as vch keeps logs itself.
func applyLogConfig(spec *portlayer.ContainerSpec, lc container.LogConfig) error {
	if lc.Type == "none" {
		spec.NoLog = true
		return nil
	}
	if lc.Type != "" && lc.Type != "json-file" && lc.Type != "local" {
		return httputils.InvalidArgument("logging driver %q is not supported by vch: use json-file, local or none", lc.Type)
	}
	driver := lc.Type
	if driver == "" {
		driver = "json-file"
	}
	for _, k := range sortedKeys(lc.Config) {
		if !logOptKeys[k] {
			if driver == "local" {
				return httputils.InvalidArgument("unknown log opt '%s' for log driver local", k)
			}
			return httputils.InvalidArgument("unknown log opt '%s' for json-file log driver", k)
		}
	}
	if v, ok := lc.Config["max-size"]; ok && v != "" && v != "-1" {
		n, err := units.RAMInBytes(v)
		if err != nil || n <= 0 {
			return httputils.InvalidArgument("invalid value for max-size: %s", v)
		}
		spec.LogMaxSizeBytes = n
	}
	if v, ok := lc.Config["max-file"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return httputils.InvalidArgument("max-file cannot be less than 1")
		}
		spec.LogMaxFiles = n
	}
	return nil
}
