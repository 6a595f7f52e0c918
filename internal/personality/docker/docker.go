// Package docker is vch's Docker personality: an HTTP server that speaks the
// Docker Engine API (v1.24 to v1.50) so the unmodified docker CLI, Compose
// and SDKs work, translating each call to the port layer.
//
// It owns Docker semantics only: API version negotiation, routes with and
// without the "/v1.NN" prefix, names, ENTRYPOINT/CMD rules, Docker's status
// codes and error texts, stdcopy framing and progress JSON. It does not own
// container state or images (the port layer does) and knows nothing about
// VMs. The API groups live in sub-packages (container, image, system), each
// with a backend.go naming the port-layer methods it uses; this package
// wires them, strips the version prefix, and maps error classes to status
// codes in one table ([StatusCode]).
package docker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/vchproject/vch/internal/personality/docker/events"
	"github.com/vchproject/vch/internal/personality/docker/exec"

	"github.com/containerd/errdefs"
	dockercontainer "github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/build"
	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/personality/docker/image"
	"github.com/vchproject/vch/internal/personality/docker/network"
	"github.com/vchproject/vch/internal/personality/docker/system"
	"github.com/vchproject/vch/internal/personality/docker/volume"
	"github.com/vchproject/vch/internal/portlayer"
)

// API versions this server speaks.
const (
	// MaxAPIVersion is the newest Engine API version served, the one docker
	// CLI 28.2 speaks; also the version of unprefixed requests.
	MaxAPIVersion = "1.50"
	// MinAPIVersion is the oldest version accepted, as dockerd 28 does.
	MinAPIVersion = "1.24"
)

// SystemInfo reports the VCH's host facts (name, hypervisor and accelerator,
// guest kernel version, CPUs, memory, root directory) for /info and
// /version. See [system.Source].
type SystemInfo = system.Source

// HostInfo is what a SystemInfo returns. See [system.Host].
type HostInfo = system.Host

// Backend is everything the personality calls. It is a struct rather than
// one interface because portlayer.Compute and portlayer.Images both have
// List and Remove methods with different signatures.
type Backend struct {
	Compute     portlayer.Compute
	Interaction portlayer.Interaction
	Images      portlayer.Images
	// Execs serves docker exec and TTY resize; nil leaves those routes
	// unimplemented (501).
	Execs portlayer.Execs
	// Pauser serves pause/unpause; nil leaves them unimplemented (501).
	Pauser portlayer.Pauser
	// Monitor serves top and stats; nil leaves them unimplemented (501).
	Monitor portlayer.Monitor
	// Events serves GET /events; nil leaves it unimplemented (501).
	Events portlayer.Events
	// Publish, with Events and Execs, runs healthchecks and receives their
	// health_status events; nil runs no healthchecks.
	Publish func(portlayer.Event)
	// Volumes serves the volume routes, volume Mounts in container
	// inspect and docker rm -v; nil leaves the routes unimplemented (501).
	Volumes portlayer.Volumes
	// Networks and NetworkConnector serve the network routes and the
	// network checks of container create; nil leaves them unimplemented.
	Networks         portlayer.Networks
	NetworkConnector portlayer.NetworkConnector
	System           SystemInfo
	// Archives serves docker cp, export and diff, and with Committer
	// docker commit; nil leaves them unimplemented (501).
	Archives  portlayer.Archives
	Committer portlayer.Committer
	// Updater serves docker update; nil leaves it unimplemented (501).
	Updater portlayer.Updater
	// Login serves POST /auth (docker login); nil leaves it
	// unimplemented (501).
	Login portlayer.RegistryLogin
	// Trees, with Archives, Committer and Config.BuildRoot, serves docker
	// build (the classic builder); nil leaves POST /build unimplemented.
	Trees portlayer.ImageTrees
}

// Config configures the server.
type Config struct {
	// Version is vch's version, reported as the Docker server version and in
	// the Server header ("Docker/<Version> (linux)"). Default "dev".
	Version string `toml:"version" json:"version"`
	// GitCommit is vch's commit, shown by `docker version`; may be empty.
	GitCommit string `toml:"git_commit" json:"git_commit"`
	// ShutdownTimeout bounds how long Serve waits for requests in flight
	// after ctx ends (hijacked attach connections are not waited for).
	// Default 5 s.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout" json:"shutdown_timeout"`
	// BuildRoot is the directory of the builder's cache index and of the
	// contexts of builds in progress; empty leaves docker build
	// unimplemented.
	BuildRoot string `toml:"build_root" json:"build_root"`
	// LogDriver and LogOpts are the logging driver and options of the
	// containers that name none, as dockerd's --log-driver and
	// --log-opt: "json-file" (empty: the default), "local" or "none";
	// a container of the default driver gets each option it does not
	// set (container.MergeLogConfig). docker info shows the driver.
	// Check with CheckLogDefaults.
	LogDriver string            `toml:"log_driver" json:"log_driver"`
	LogOpts   map[string]string `toml:"log_opts" json:"log_opts"`
}

// CheckLogDefaults refuses a LogDriver or LogOpts that create would
// refuse in a container (an unknown driver or option, a bad max-size),
// in dockerd's words for its own --log-opt ("failed to set log opts:
// …"); InvalidArgument.
func (c Config) CheckLogDefaults() error {
	if err := container.ValidateLogConfig(dockercontainer.LogConfig{Type: c.LogDriver, Config: c.LogOpts}); err != nil {
		return httputils.Classify(errdefs.ErrInvalidArgument, err, "failed to set log opts: "+httputils.Message(err))
	}
	return nil
}

// Server is the Engine API HTTP server. Safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	routes []httputils.Route
	// health and events run healthchecks while Serve runs; nil: none.
	health     *container.HealthMonitor
	events     portlayer.Events
	healthOnce sync.Once
}

// New returns a server calling backend. logger gets component=docker. If
// the builder's directory (Config.BuildRoot) cannot be prepared, the error
// is logged and docker build stays unimplemented (501).
func New(cfg Config, backend Backend, logger *slog.Logger) *Server {
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: logger.With(slog.String("component", "docker"))}
	sys := system.NewRouter(system.Versions{
		Version: cfg.Version, GitCommit: cfg.GitCommit,
		APIVersion: MaxAPIVersion, MinAPIVersion: MinAPIVersion,
	}, backend.System, backend.Compute, backend.Images)
	if backend.Volumes != nil {
		sys.WithVolumes(backend.Volumes)
	}
	ctr := container.NewRouter(backend.Compute, backend.Interaction, backend.Images, s.log).WithVolumes(backend.Volumes)
	ctr.SetLogDefaults(dockercontainer.LogConfig{Type: cfg.LogDriver, Config: cfg.LogOpts})
	sys.SetLoggingDriver(cfg.LogDriver)
	if backend.System != nil {
		ctr.SetRuntime(func(ctx context.Context) (string, error) {
			h, err := backend.System.Host(ctx)
			return system.RuntimeName(h), err
		})
	}
	img := image.NewRouter(backend.Images, s.log).WithContainers(backend.Compute)
	if backend.Publish != nil && backend.Events != nil && backend.Execs != nil {
		s.health = container.NewHealthMonitor(backend.Execs, backend.Compute, backend.Publish, s.log)
		s.events = backend.Events
		ctr.SetHealth(s.health)
	}
	s.routes = append(s.routes, sys.Routes()...)
	if backend.Pauser != nil {
		s.routes = append(s.routes, container.PauseRoutes(backend.Pauser)...)
	}
	if backend.Monitor != nil {
		s.routes = append(s.routes, container.MonitorRoutes(backend.Monitor, backend.Compute)...)
	}
	if backend.Events != nil {
		s.routes = append(s.routes, events.NewRouter(backend.Events, s.log).Routes()...)
	}
	if backend.Execs != nil {
		s.routes = append(s.routes, exec.NewRouter(backend.Execs, backend.Compute, s.log).Routes()...)
	}
	if backend.Volumes != nil {
		s.routes = append(s.routes, volume.NewRouter(backend.Volumes, backend.Compute, s.log).Routes()...)
	}
	if backend.Networks != nil && backend.NetworkConnector != nil {
		ctr.SetNetworks(backend.Networks)
		s.routes = append(s.routes, network.NewRouter(backend.Networks, backend.NetworkConnector, s.log).Routes()...)
	} else {
		// Lookups answer 404 so `docker inspect <name>` tries the next type.
		s.routes = append(s.routes, httputils.NewRoute(http.MethodGet, "/networks/{name:.*}", func(_ http.ResponseWriter, _ *http.Request, vars map[string]string) error {
			return errdefs.ErrNotFound.WithMessage(fmt.Sprintf("network %s not found", vars["name"]))
		}))
		s.routes = append(s.routes, notImplemented("networks", "/networks", "/networks/{name:.*}")...)
	}
	if backend.Archives != nil {
		s.routes = append(s.routes, container.ArchiveRoutes(backend.Archives, backend.Compute, backend.Volumes)...)
		if backend.Committer != nil {
			s.routes = append(s.routes, image.CommitRoutes(backend.Archives, backend.Committer)...)
		}
	}
	if cfg.BuildRoot != "" && backend.Trees != nil && backend.Archives != nil && backend.Committer != nil {
		br, err := build.NewRouter(build.Backend{
			Images: backend.Images, Committer: backend.Committer, Trees: backend.Trees,
			Compute: backend.Compute, Interaction: backend.Interaction, Archives: backend.Archives,
			Execs: backend.Execs,
		}, cfg.BuildRoot, s.log)
		if err != nil {
			s.log.Error("docker build unavailable", "build_root", cfg.BuildRoot, "err", err)
		} else {
			s.routes = append(s.routes, br.Routes()...)
		}
	}
	if backend.Updater != nil {
		s.routes = append(s.routes, container.UpdateRoutes(backend.Updater, backend.Compute)...)
	}
	if backend.Login != nil {
		s.routes = append(s.routes, image.AuthRoutes(backend.Login)...)
	}
	s.routes = append(s.routes, ctr.Routes()...)
	s.routes = append(s.routes, img.Routes()...)
	s.routes = append(s.routes, unimplementedRoutes()...)
	return s
}

// notImplemented answers 501 "<what> is not implemented by vch yet" on
// every method of the given paths.
func notImplemented(what string, paths ...string) []httputils.Route {
	var out []httputils.Route
	for _, p := range paths {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			out = append(out, httputils.NewRoute(m, p, func(http.ResponseWriter, *http.Request, map[string]string) error {
				return errdefs.ErrNotImplemented.WithMessage(what + " is not implemented by vch yet")
			}))
		}
	}
	return out
}

// Handler returns the HTTP handler serving every route, with and without
// the "/v1.NN" prefix.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve serves l until ctx ends, then shuts down gracefully within
// Config.ShutdownTimeout. It returns nil after a shutdown caused by ctx and
// the listener's error otherwise.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	if s.health != nil {
		s.healthOnce.Do(func() { go s.health.Run(ctx, s.events) })
	}
	select {
	case err := <-errc:
		return fmt.Errorf("docker: serve %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("docker: shutdown: %w", err)
	}
	return nil
}

var versionPrefix = regexp.MustCompile(`^/v([0-9]+\.[0-9]+)(/.*)$`)

// errPageNotFound is what unknown routes answer, as dockerd does.
var errPageNotFound = errdefs.ErrNotFound.WithMessage("page not found")

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	h := w.Header()
	h.Set("Server", "Docker/"+s.cfg.Version+" (linux)")
	h.Set("Api-Version", MaxAPIVersion)
	h.Set("Ostype", "linux")
	h.Set("Docker-Experimental", "false")

	path := r.URL.Path
	version := MaxAPIVersion
	if m := versionPrefix.FindStringSubmatch(path); m != nil {
		version, path = m[1], m[2]
	}
	var route *httputils.Route
	var vars map[string]string
	for i := range s.routes {
		rt := &s.routes[i]
		if rt.Method != r.Method {
			continue
		}
		if v, ok := rt.Match(path); ok {
			route, vars = rt, v
			break
		}
	}
	if route == nil {
		s.writeError(ctx, w, r, errPageNotFound)
		return
	}
	if httputils.CompareVersions(version, MinAPIVersion) < 0 {
		s.writeError(ctx, w, r, httputils.InvalidArgument("client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version", version, MinAPIVersion))
		return
	}
	if httputils.CompareVersions(version, MaxAPIVersion) > 0 {
		s.writeError(ctx, w, r, httputils.InvalidArgument("client version %s is too new. Maximum supported API version is %s", version, MaxAPIVersion))
		return
	}
	r = r.WithContext(httputils.WithVersion(ctx, version))
	if err := httputils.ParseForm(r); err != nil {
		s.writeError(ctx, w, r, err)
		return
	}
	if err := route.Handler(w, r, vars); err != nil {
		s.writeError(r.Context(), w, r, err)
	}
}

// unimplementedRoutes answers known Engine API v1.50 endpoints that vch does
// not serve yet with 501 and a clear message, rather than "page not found".
func unimplementedRoutes() []httputils.Route {
	type ep struct{ method, path, what string }
	eps := []ep{
		{"GET", "/system/df", "disk usage"},
		{"POST", "/auth", "registry login"},
		{"POST", "/build", "image build"},
		{"POST", "/build/prune", "build cache prune"},
		{"POST", "/session", "BuildKit sessions"},
		{"GET", "/containers/{name}/top", "top"},
		{"GET", "/containers/{name}/stats", "stats"},
		{"POST", "/images/prune", "image prune"},
		{"GET", "/images/search", "image search"},
		{"GET", "/images/get", "image save"},
		{"GET", "/images/{name:.*}/get", "image save"},
		{"GET", "/images/{name:.*}/history", "image history"},
		{"POST", "/images/{name:.*}/push", "image push"},
		{"GET", "/distribution/{name:.*}/json", "distribution inspect"},
		{"GET", "/volumes", "volumes"},
		{"POST", "/volumes/create", "volumes"},
		{"POST", "/volumes/prune", "volumes"},
		{"DELETE", "/volumes/{name:.*}", "volumes"},
		{"GET", "/plugins", "plugins"},
		{"GET", "/swarm", "swarm"},
		{"GET", "/nodes", "swarm"},
		{"GET", "/services", "swarm"},
		{"GET", "/tasks", "swarm"},
		{"GET", "/secrets", "swarm"},
		{"GET", "/configs", "swarm"},
	}
	routes := make([]httputils.Route, 0, len(eps))
	for _, e := range eps {
		msg := fmt.Sprintf("%s is not implemented by vch yet", e.what)
		routes = append(routes, httputils.NewRoute(e.method, e.path, func(http.ResponseWriter, *http.Request, map[string]string) error {
			return errdefs.ErrNotImplemented.WithMessage(msg)
		}))
	}
	// Lookups of objects vch does not have yet answer 404 with dockerd's
	// texts, so `docker inspect <name>` can try every object type.
	notFound := func(format string) httputils.HandlerFunc {
		return func(_ http.ResponseWriter, _ *http.Request, vars map[string]string) error {
			return errdefs.ErrNotFound.WithMessage(fmt.Sprintf(format, vars["name"]))
		}
	}
	routes = append(routes,
		httputils.NewRoute("GET", "/volumes/{name:.*}", notFound("get %s: no such volume")),
		httputils.NewRoute("GET", "/plugins/{name:.*}/json", notFound("plugin %q not found")),
	)
	return routes
}
