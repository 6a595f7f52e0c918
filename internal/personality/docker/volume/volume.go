// Package volume serves the Engine API v1.50 "Volume" group: create, list
// (with the dangling, name, driver and label filters), inspect, remove and
// prune. Handlers apply Docker's semantics (anonymous volumes carry the
// com.docker.volume.anonymous label, prune spares named volumes unless
// asked for all since API 1.42) and render Docker's types; the port
// layer's volume store owns the volumes.
package volume

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/volume"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// The routes use all of portlayer.Volumes, and List of portlayer.Compute
// to tell which volumes containers use.
type containerLister interface {
	List(ctx context.Context) ([]portlayer.Container, error)
}

// AnonymousLabel marks anonymous volumes, as dockerd (23.0 and later)
// labels them.
const AnonymousLabel = "com.docker.volume.anonymous"

// Router serves the volume routes.
type Router struct {
	volumes    portlayer.Volumes
	containers containerLister
	log        *slog.Logger
}

// NewRouter returns the volume routes over the port layer's volume store.
func NewRouter(volumes portlayer.Volumes, containers containerLister, log *slog.Logger) *Router {
	return &Router{volumes: volumes, containers: containers, log: log}
}

// Routes returns the route table (Engine API v1.50 "Volume").
func (rt *Router) Routes() []httputils.Route {
	return []httputils.Route{
		httputils.NewRoute(http.MethodGet, "/volumes", rt.getList),
		httputils.NewRoute(http.MethodPost, "/volumes/create", rt.postCreate),
		httputils.NewRoute(http.MethodPost, "/volumes/prune", rt.postPrune),
		httputils.NewRoute(http.MethodGet, "/volumes/{name:.*}", rt.getInspect),
		httputils.NewRoute(http.MethodDelete, "/volumes/{name:.*}", rt.deleteVolume),
	}
}

// Mountpoint is v's Mountpoint as dockerd's local driver shows it: the
// volume's directory followed by "_data" (ROOT/volumes/NAME/_data). In a
// VCH the volume's files live inside its disk image in that directory, so
// the path names the volume, not a directory of its files.
func Mountpoint(v portlayer.Volume) string {
	return filepath.Join(v.Mountpoint, "_data")
}

// Render builds Docker's volume document for v: CreatedAt in RFC 3339,
// Driver "local", Scope "local", Labels and Options null when empty,
// Mountpoint as Mountpoint gives it.
func Render(v portlayer.Volume) volume.Volume {
	out := volume.Volume{
		CreatedAt:  v.CreatedAt.UTC().Format(time.RFC3339),
		Driver:     v.Driver,
		Labels:     v.Labels,
		Mountpoint: Mountpoint(v),
		Name:       v.Name,
		Options:    v.Options,
		Scope:      "local",
	}
	if v.Anonymous {
		labels := map[string]string{AnonymousLabel: ""}
		for k, val := range v.Labels {
			labels[k] = val
		}
		out.Labels = labels
	}
	if len(out.Labels) == 0 {
		out.Labels = nil
	}
	if len(out.Options) == 0 {
		out.Options = nil
	}
	return out
}

// volumeErr gives a port-layer error Docker's text: the store's own
// ("get x: no such volume", "create a: volume name is too short, …",
// "remove x: volume is in use - [id]") under the same class.
func volumeErr(err error) error {
	for _, c := range []struct {
		is    func(error) bool
		class error
	}{
		{errdefs.IsNotFound, errdefs.ErrNotFound},
		{errdefs.IsInvalidArgument, errdefs.ErrInvalidArgument},
		{errdefs.IsConflict, errdefs.ErrConflict},
	} {
		if c.is(err) {
			return httputils.Classify(c.class, err, httputils.PortLayerText(err))
		}
	}
	return err
}

// postCreate serves POST /volumes/create: 201 with the volume. An
// existing name returns the existing volume. A driver other than "local"
// is dockerd's 404 for a missing plugin.
func (rt *Router) postCreate(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	var req volume.CreateRequest
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	if req.ClusterVolumeSpec != nil {
		return errdefs.ErrNotImplemented.WithMessage("cluster volumes are not supported by vch")
	}
	if req.Driver != "" && req.Driver != "local" {
		return httputils.Classify(errdefs.ErrNotFound, nil, fmt.Sprintf("create %s: error looking up volume plugin %s: plugin %q not found", req.Name, req.Driver, req.Driver))
	}
	labels := req.Labels
	// A volume created without a name is anonymous, as dockerd's volume
	// service makes it (so a plain `docker volume prune` removes it).
	anonymous := req.Name == ""
	if _, ok := labels[AnonymousLabel]; ok {
		anonymous = true
		labels = withoutKey(labels, AnonymousLabel)
	}
	v, err := rt.volumes.CreateVolume(r.Context(), portlayer.VolumeSpec{Name: req.Name, Labels: labels, Options: req.DriverOpts, Anonymous: anonymous})
	if err != nil {
		return volumeErr(err)
	}
	rt.log.InfoContext(r.Context(), "volume created", "volume", v.Name)
	return httputils.WriteJSON(w, http.StatusCreated, Render(v))
}

func withoutKey(m map[string]string, key string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

// getInspect serves GET /volumes/{name}; 404 "get x: no such volume".
func (rt *Router) getInspect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	v, err := rt.volumes.InspectVolume(r.Context(), vars["name"])
	if err != nil {
		return volumeErr(err)
	}
	return httputils.WriteJSON(w, http.StatusOK, Render(v))
}

// deleteVolume serves DELETE /volumes/{name}?force=: 204; 404 "get x: no
// such volume" (204 with force); 409 "remove x: volume is in use - [id]".
func (rt *Router) deleteVolume(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	if err := rt.volumes.RemoveVolume(r.Context(), vars["name"], httputils.BoolValue(r, "force")); err != nil {
		return volumeErr(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// users returns, for every volume name a container mounts, the number of
// containers that do.
func (rt *Router) users(ctx context.Context) (map[string]int, error) {
	cs, err := rt.containers.List(ctx)
	if err != nil {
		return nil, err
	}
	n := map[string]int{}
	for _, c := range cs {
		for _, m := range c.Spec.Mounts {
			if m.Type == portlayer.MountVolume {
				n[m.Source]++
			}
		}
	}
	return n, nil
}

// matchLabels applies "label" filters (key or key=value) to labels.
func matchLabels(f httputils.Filters, key string, labels map[string]string) bool {
	for _, want := range f.Values(key) {
		k, v, hasValue := strings.Cut(want, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return true
}

// matchName applies a "name" filter as dockerd does: a regular
// expression matched anywhere in the name (a plain substring, usually).
func matchName(pattern, name string) bool {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return strings.Contains(name, pattern)
	}
	return re.MatchString(name)
}

// getList serves GET /volumes?filters= (dangling, name, driver, label):
// {"Volumes": [...], "Warnings": null}, by name.
func (rt *Router) getList(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), "dangling", "name", "driver", "label")
	if err != nil {
		return err
	}
	var dangling *bool
	for _, v := range f.Values("dangling") {
		var b bool
		switch strings.ToLower(v) {
		case "true", "1":
			b = true
		case "false", "0":
		default:
			return httputils.InvalidArgument("invalid filter 'dangling=%s'", v)
		}
		dangling = &b
	}
	vols, err := rt.volumes.ListVolumes(ctx)
	if err != nil {
		return err
	}
	users, err := rt.users(ctx)
	if err != nil {
		return err
	}
	out := []volume.Volume{}
	for _, v := range vols {
		d := Render(v)
		switch {
		case dangling != nil && *dangling != (users[v.Name] == 0):
		case !f.Match("name", func(p string) bool { return matchName(p, v.Name) }):
		case !f.Match("driver", func(p string) bool { return p == v.Driver }):
		case !matchLabels(f, "label", d.Labels):
		default:
			out = append(out, d)
		}
	}
	return httputils.WriteJSON(w, http.StatusOK, volume.ListResponse{Volumes: out})
}

// postPrune serves POST /volumes/prune?filters= (label, label!, all): it
// removes the volumes no container uses — only anonymous ones unless
// all=true, since API 1.42 (before, all unused ones) — and reports them
// with the space their disks took on the host.
func (rt *Router) postPrune(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	accepted := []string{"label", "label!"}
	newAPI := httputils.VersionAtLeast(ctx, "1.42")
	if newAPI {
		accepted = append(accepted, "all")
	}
	f, err := httputils.ParseFilters(r.Form.Get("filters"), accepted...)
	if err != nil {
		return err
	}
	all := !newAPI
	for _, v := range f.Values("all") {
		switch strings.ToLower(v) {
		case "true", "1":
			all = true
		case "false", "0":
		default:
			return httputils.InvalidArgument("invalid filter 'all=%s': invalid value", v)
		}
	}
	vols, err := rt.volumes.ListVolumes(ctx)
	if err != nil {
		return err
	}
	users, err := rt.users(ctx)
	if err != nil {
		return err
	}
	report := volume.PruneReport{VolumesDeleted: []string{}}
	for _, v := range vols {
		labels := Render(v).Labels
		if users[v.Name] > 0 || (!all && !v.Anonymous) || !matchLabels(f, "label", labels) {
			continue
		}
		if unwanted(f, labels) {
			continue
		}
		if err := rt.volumes.RemoveVolume(ctx, v.Name, false); err != nil {
			if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
				continue // became used, or went, meanwhile
			}
			return volumeErr(err)
		}
		report.VolumesDeleted = append(report.VolumesDeleted, v.Name)
		report.SpaceReclaimed += uint64(v.DiskUsageBytes)
	}
	return httputils.WriteJSON(w, http.StatusOK, report)
}

// unwanted applies "label!" filters: true if labels match any of them.
func unwanted(f httputils.Filters, labels map[string]string) bool {
	for _, want := range f.Values("label!") {
		k, v, hasValue := strings.Cut(want, "=")
		if got, ok := labels[k]; ok && (!hasValue || got == v) {
			return true
		}
	}
	return false
}
