package container

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	dockervolume "github.com/vchproject/vch/internal/personality/docker/volume"
	"github.com/vchproject/vch/internal/portlayer"
)

// Router serves the container routes.
type Router struct {
	compute  portlayer.Compute
	interact portlayer.Interaction
	images   imageGetter
	volumes  volumeStore                               // nil: no volume store (Mounts show no Source, rm -v keeps volumes)
	networks portlayer.Networks                        // nil: networks are not checked at create
	health   *HealthMonitor                            // nil: no healthchecks run
	runtime  func(ctx context.Context) (string, error) // the one runtime's name; nil: none checked
	// logDefaults are the VCH's default logging driver and options
	// (MergeLogConfig); zero: json-file with vch's own bounds.
	logDefaults container.LogConfig
	log         *slog.Logger
	now         func() time.Time
}

// NewRouter returns the container routes over the port layer.
func NewRouter(compute portlayer.Compute, interact portlayer.Interaction, images portlayer.Images, log *slog.Logger) *Router {
	return &Router{compute: compute, interact: interact, images: images, log: log, now: time.Now}
}

// volumeStore is what the container routes use of portlayer.Volumes:
// Mounts' Source paths and docker rm -v.
type volumeStore interface {
	InspectVolume(ctx context.Context, name string) (portlayer.Volume, error)
	RemoveVolume(ctx context.Context, name string, force bool) error
}

// WithVolumes gives the routes the volume store; it returns rt.
func (rt *Router) WithVolumes(v portlayer.Volumes) *Router {
	if v != nil {
		rt.volumes = v
	}
	return rt
}

// SetRuntime gives create the name of the VCH's one runtime (the name
// `docker info` lists under Runtimes and DefaultRuntime): a container's
// HostConfig.Runtime defaults to it, and any other is refused as dockerd
// refuses a runtime it does not know.
func (rt *Router) SetRuntime(name func(ctx context.Context) (string, error)) { rt.runtime = name }

// SetLogDefaults sets the logging driver and options a container gets
// when it names none (dockerd's --log-driver and --log-opt; see
// MergeLogConfig). Check them with ValidateLogConfig first.
func (rt *Router) SetLogDefaults(lc container.LogConfig) { rt.logDefaults = lc }

// SetHealth gives list and inspect the monitor's health states.
func (rt *Router) SetHealth(m *HealthMonitor) { rt.health = m }

// SetNetworks lets create check that the networks it names exist.
func (rt *Router) SetNetworks(n portlayer.Networks) { rt.networks = n }

// Routes returns the route table (Engine API v1.50 "Container").
func (rt *Router) Routes() []httputils.Route {
	return []httputils.Route{
		httputils.NewRoute(http.MethodPost, "/containers/create", rt.postCreate),
		httputils.NewRoute(http.MethodGet, "/containers/json", rt.getList),
		httputils.NewRoute(http.MethodGet, "/containers/{name}/json", rt.getInspect),
		httputils.NewRoute(http.MethodGet, "/containers/{name}/logs", rt.getLogs),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/start", rt.postStart),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/stop", rt.postStop),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/restart", rt.postRestart),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/kill", rt.postKill),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/wait", rt.postWait),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/rename", rt.postRename),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/resize", rt.postResize),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/attach", rt.postAttach),
		httputils.NewRoute(http.MethodGet, "/containers/{name}/attach/ws", rt.getAttachWS),
		httputils.NewRoute(http.MethodDelete, "/containers/{name}", rt.deleteContainer),
		httputils.NewRoute(http.MethodPost, "/containers/prune", rt.postPrune),
	}
}

// containerErr gives a port-layer error for container name Docker's text:
// NotFound becomes "No such container: <name>"; other classes keep their
// text with op as context.
func containerErr(op, name string, err error) error {
	if errdefs.IsNotFound(err) {
		return httputils.Classify(errdefs.ErrNotFound, err, "No such container: "+name)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

// inspect fetches a container, with Docker's texts: 404 "No such
// container: <name>", and 400 "multiple IDs found with provided prefix:
// <name>" for an ambiguous ID prefix (the port layer's InvalidArgument).
func (rt *Router) inspect(ctx context.Context, name string) (portlayer.Container, error) {
	c, err := rt.compute.Inspect(ctx, name)
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			return c, httputils.Classify(errdefs.ErrInvalidArgument, err, "multiple IDs found with provided prefix: "+name)
		}
		return c, containerErr("inspect", name, err)
	}
	return c, nil
}

// startErr is startErr, and dockerd's texts for a volume subpath its
// start found wrong (safepath's ErrNotAccessible, a 404, and
// ErrEscapesBase, a 400), written with the volume's Mountpoint as
// dockerd's local driver shows it.
func (rt *Router) startErr(ctx context.Context, name string, err error) error {
	if se := mountErr(ctx, rt.volumes, err); se != nil {
		return se
	}
	return startErr(name, err)
}

// mountErr is dockerd's error for a mount the guest could not set up as
// asked (typeMismatchErr, subpathErr); nil when err is not one.
func mountErr(ctx context.Context, volumes volumeStore, err error) error {
	if se := typeMismatchErr(ctx, volumes, err); se != nil {
		return se
	}
	return subpathErr(ctx, volumes, err)
}

// mountSource is where dockerd would mount from for a volume or image
// mount: the volume's Mountpoint (from volumes; nil, or an image's ID:
// the name itself, where dockerd shows its layer's host path) joined
// with sub.
func mountSource(ctx context.Context, volumes volumeStore, name, sub string) string {
	base := name
	if volumes != nil && !strings.HasPrefix(name, "sha256:") {
		if v, err := volumes.InspectVolume(ctx, name); err == nil {
			base = dockervolume.Mountpoint(v)
		}
	}
	return filepath.Join(base, sub)
}

// typeMismatchErr is dockerd's 400 for a mount whose source is a
// directory and its target a file in the container, or the reverse
// (the port layer's ReasonTypeMismatch): runc's ENOTDIR and the hint
// dockerd adds (daemon/start.go); nil when err is not one.
func typeMismatchErr(ctx context.Context, volumes volumeStore, err error) error {
	pe := portlayer.AsError(err)
	if pe == nil || pe.Kind != portlayer.KindMount || pe.Reason != portlayer.ReasonTypeMismatch {
		return nil
	}
	src := mountSource(ctx, volumes, pe.Name, pe.Value)
	return httputils.Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf(
		"failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: "+
			"error mounting %q to rootfs at %q: mount %s:%s (via /proc/self/fd/6), flags: 0x5000: %s: unknown: "+
			"Are you trying to mount a directory onto a file (or vice-versa)? Check if the specified host path exists and is the expected type",
		src, pe.ID, src, pe.ID, cmp.Or(pe.Cause, "not a directory")))
}

// subpathErr is dockerd's error for a volume subpath that a start (or a
// docker cp's maintenance VM) found wrong, with the volume's Mountpoint
// from volumes (nil: the volume's name stands in); nil when err is not
// one.
func subpathErr(ctx context.Context, volumes volumeStore, err error) error {
	pe := portlayer.AsError(err)
	if pe == nil || pe.Kind != portlayer.KindMount || pe.Field != "Subpath" || pe.Reason == portlayer.ReasonTypeMismatch {
		return nil
	}
	base := mountSource(ctx, volumes, pe.Name, "")
	p := filepath.Join(base, pe.Value)
	switch pe.Reason {
	case portlayer.ReasonEscapes:
		return httputils.Classify(errdefs.ErrInvalidArgument, err, "path concatenation escapes the base directory, base: "+base+", subpath: "+pe.Value)
	case portlayer.ReasonUnresolvable:
		// dockerd's evaluatePath, an unclassified 500.
		return httputils.Classify(errdefs.ErrInternal, err, fmt.Sprintf("error while resolving symlinks in combined path %q: lstat %s: %s", p, p, pe.Cause))
	}
	return httputils.Classify(errdefs.ErrNotFound, err, "cannot access path "+p+": lstat "+p+": no such file or directory")
}

// startErr turns a failed start into Docker's form. A process the guest
// could not start (the port layer's StartFailed) is a 400 "failed to
// create task for container: ...: unknown" around the guest's text, the
// text the CLI scans to exit with 127 (not found) or 126 (not
// executable).
func startErr(name string, err error) error {
	if pe, _, ok := portlayer.StartFailure(err); ok {
		return httputils.Classify(errdefs.ErrInvalidArgument, err,
			"failed to create task for container: failed to create shim task: OCI runtime create failed: unable to start container process: "+pe.Message+": unknown")
	}
	if errdefs.IsConflict(err) {
		// A volume another running container's VM holds: the port
		// layer's text says which and why.
		return httputils.Classify(errdefs.ErrConflict, err, httputils.PortLayerText(err))
	}
	return containerErr("start", name, err)
}
