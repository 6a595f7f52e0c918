package system

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"github.com/moby/moby/api/types/registry"

	"github.com/moby/moby/api/types/swarm"

	"github.com/moby/moby/api/types/system"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// Facts about this daemon that /version and /info report.
const (
	// OperatingSystem is reported as Info.OperatingSystem.
	OperatingSystem = "vch (container VMs)"
	// Driver is the storage driver name reported by /info and inspect.
	Driver = "vch-ext4"
)

// Versions is what /version reports about the server itself.
type Versions struct {
	// Version is vch's version, e.g. "0.1.0".
	Version string
	// GitCommit is vch's commit; may be empty.
	GitCommit string
	// APIVersion and MinAPIVersion are the supported Engine API range.
	APIVersion, MinAPIVersion string
}

// Router serves the system routes.
type Router struct {
	v          Versions
	host       Source
	containers containerLister
	images     imageLister
	volumes    volumeLister // may be nil
	logDriver  string       // the default logging driver; "": json-file
	now        func() time.Time
}

// SetLoggingDriver sets the LoggingDriver GET /info shows: the driver of
// containers that name none ("" is json-file).
func (s *Router) SetLoggingDriver(name string) { s.logDriver = name }

// NewRouter returns the system routes. containers and images are used for
// the counts of GET /info.
func NewRouter(v Versions, host Source, containers portlayer.Compute, images portlayer.Images) *Router {
	return &Router{v: v, host: host, containers: containers, images: images, now: time.Now}
}

// Routes returns the route table.
func (s *Router) Routes() []httputils.Route {
	return []httputils.Route{
		httputils.NewRoute(http.MethodGet, "/_ping", s.ping),
		httputils.NewRoute(http.MethodHead, "/_ping", s.ping),
		httputils.NewRoute(http.MethodGet, "/version", s.version),
		httputils.NewRoute(http.MethodGet, "/info", s.info),
		httputils.NewRoute(http.MethodGet, "/system/df", s.df),
	}
}

// ping answers GET|HEAD /_ping with "OK" (Engine API v1.50 "Ping"); the
// API-Version, OSType, Docker-Experimental and Server headers are set by the
// server's middleware for every response.
func (s *Router) ping(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	w.Header().Add("Cache-Control", "no-cache, no-store, must-revalidate")
	w.Header().Add("Pragma", "no-cache")
	// No BuildKit session support: clients fall back to the classic builder.
	w.Header().Set("Builder-Version", "1")
	w.Header().Set("Swarm", "inactive")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", "0")
		return nil
	}
	_, err := w.Write([]byte("OK"))
	return err
}

func (s *Router) version(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	h, err := s.host.Host(r.Context())
	if err != nil {
		return fmt.Errorf("version: host facts: %w", err)
	}
	details := map[string]string{
		"ApiVersion":    s.v.APIVersion,
		"MinAPIVersion": s.v.MinAPIVersion,
		"GitCommit":     s.v.GitCommit,
		"GoVersion":     runtime.Version(),
		"Os":            "linux",
		"Arch":          "amd64",
		"KernelVersion": h.GuestKernelVersion,
		"Experimental":  "false",
	}
	return httputils.WriteJSON(w, http.StatusOK, system.VersionResponse{
		Platform: system.PlatformInfo{Name: "vch"},
		Components: []system.ComponentVersion{
			{Name: "Engine", Version: s.v.Version, Details: details},
			{Name: "hypervisor", Version: h.Hypervisor, Details: map[string]string{"Accelerator": h.Accelerator}},
		},
		Version:       s.v.Version,
		APIVersion:    s.v.APIVersion,
		MinAPIVersion: s.v.MinAPIVersion,
		GitCommit:     s.v.GitCommit,
		GoVersion:     runtime.Version(),
		Os:            "linux",
		Arch:          "amd64",
		KernelVersion: h.GuestKernelVersion,
	})
}

func (s *Router) info(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	info, err := s.buildInfo(ctx)
	if err != nil {
		return err
	}
	if !httputils.VersionAtLeast(ctx, "1.50") {
		// Fields dockerd dropped in API 1.50 (the bridge's netfilter
		// settings; false here: container traffic is bridged in the
		// VCH's own namespace, not through the host's netfilter).
		legacy, err := httputils.JSONFields(info)
		if err != nil {
			return fmt.Errorf("info: %w", err)
		}
		legacy["BridgeNfIptables"], legacy["BridgeNfIp6tables"] = false, false
		return httputils.WriteJSON(w, http.StatusOK, legacy)
	}
	return httputils.WriteJSON(w, http.StatusOK, info)
}

func (s *Router) buildInfo(ctx context.Context) (system.Info, error) {
	h, err := s.host.Host(ctx)
	if err != nil {
		return system.Info{}, fmt.Errorf("info: host facts: %w", err)
	}
	cs, err := s.containers.List(ctx)
	if err != nil {
		return system.Info{}, fmt.Errorf("info: list containers: %w", err)
	}
	imgs, err := s.images.List(ctx)
	if err != nil {
		return system.Info{}, fmt.Errorf("info: list images: %w", err)
	}
	info := system.Info{
		ID:            h.ID,
		Containers:    len(cs),
		Images:        len(imgs),
		Driver:        Driver,
		DriverStatus:  append([][2]string{{"Backing Filesystem", "ext4 disk images"}, {"Hypervisor", h.Hypervisor}, {"Accelerator", h.Accelerator}}, h.DriverStatus...),
		SystemTime:    s.now().Format(time.RFC3339Nano),
		LoggingDriver: cmp.Or(s.logDriver, "json-file"),
		// Each container VM's guest runs its processes in a cgroup v2
		// of their own (written directly, as runc's cgroupfs driver
		// does), which enforces these limits.
		CgroupDriver:       "cgroupfs",
		CgroupVersion:      "2",
		MemoryLimit:        true,
		SwapLimit:          true,
		CPUCfsQuota:        true,
		CPUCfsPeriod:       true,
		PidsLimit:          true,
		KernelVersion:      h.GuestKernelVersion,
		OperatingSystem:    OperatingSystem,
		OSVersion:          "",
		OSType:             "linux",
		Architecture:       "x86_64",
		IndexServerAddress: "https://index.docker.io/v1/",
		NCPU:               h.NCPU,
		MemTotal:           h.MemTotalBytes,
		DockerRootDir:      h.RootDir,
		Name:               h.Name,
		Labels:             append([]string{}, h.Labels...),
		ServerVersion:      s.v.Version,
		Runtimes: map[string]system.RuntimeWithStatus{
			RuntimeName(h): {Runtime: system.Runtime{Path: h.Hypervisor, Type: "io.vch.vm." + h.Accelerator}},
		},
		DefaultRuntime:  RuntimeName(h),
		Isolation:       "",
		SecurityOptions: []string{"name=vm,hypervisor=" + h.Hypervisor + ",accelerator=" + h.Accelerator},
		CDISpecDirs:     []string{},
		Warnings:        append([]string{}, h.Warnings...),
	}
	info.Swarm.LocalNodeState = swarm.LocalNodeStateInactive
	// The drivers a VCH has: its networks' and volumes' (local).
	info.Plugins.Volume = []string{"local"}
	info.Plugins.Network = []string{"bridge", "null"}
	info.Plugins.Log = []string{"json-file", "local"} // dockerd lists no "none": it is not a logger
	// Containers' traffic is forwarded (and NATed) in the VCH's own
	// network namespace.
	info.IPv4Forwarding = true
	info.RegistryConfig = registryConfig()
	for _, c := range cs {
		switch c.State.Status {
		case portlayer.StatusRunning, portlayer.StatusRestarting:
			info.ContainersRunning++
		case portlayer.StatusPaused:
			info.ContainersPaused++
		default:
			info.ContainersStopped++
		}
	}
	return info, nil
}

// RuntimeName is the name of the VCH's one runtime as `docker info`
// lists it: the hypervisor and its accelerator ("qemu-tcg", "qemu-kvm"),
// "vm" when the host does not say.
func RuntimeName(h Host) string {
	name := h.Hypervisor
	if name == "" {
		name = "vm"
	}
	if h.Accelerator != "" {
		name += "-" + h.Accelerator
	}
	return name
}

// registryConfig is info's RegistryConfig as dockerd shows it with no
// options: docker.io the official, secure index, 127.0.0.0/8 insecure,
// no mirrors. (The VCH's --insecure-registry hosts are not listed.)
func registryConfig() *registry.ServiceConfig {
	rc := &registry.ServiceConfig{
		InsecureRegistryCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		IndexConfigs: map[string]*registry.IndexInfo{
			"docker.io": {Name: "docker.io", Mirrors: []string{}, Secure: true, Official: true},
		},
		Mirrors: []string{},
	}
	return rc
}
