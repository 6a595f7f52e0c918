package container

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// zeroTime is how Docker shows a time that has not happened.
const zeroTime = "0001-01-01T00:00:00Z"

// StatusText renders a container's state for `docker ps` as dockerd's
// State.String does: "Up 3 seconds", "Exited (3) 2 seconds ago", "Created",
// "Restarting (1) 5 seconds ago", "Up 1 minute (Paused)", "Dead",
// "Removal In Progress". Durations use go-units HumanDuration.
func StatusText(s portlayer.State, now time.Time) string {
	switch s.Status {
	case portlayer.StatusRunning:
		return "Up " + units.HumanDuration(now.Sub(s.StartedAt))
	case portlayer.StatusPaused:
		return fmt.Sprintf("Up %s (Paused)", units.HumanDuration(now.Sub(s.StartedAt)))
	case portlayer.StatusRestarting:
		return fmt.Sprintf("Restarting (%d) %s ago", s.ExitCode, units.HumanDuration(now.Sub(s.FinishedAt)))
	case portlayer.StatusRemoving:
		return "Removal In Progress"
	case portlayer.StatusDead:
		return "Dead"
	}
	if s.StartedAt.IsZero() {
		return "Created"
	}
	if s.FinishedAt.IsZero() {
		return ""
	}
	return fmt.Sprintf("Exited (%d) %s ago", s.ExitCode, units.HumanDuration(now.Sub(s.FinishedAt)))
}

// storedConfig returns the Docker Config and HostConfig kept in the
// container's annotations, or ones rebuilt from the spec for containers
// created by other front ends.
func storedConfig(c portlayer.Container) (*container.Config, *container.HostConfig) {
	cfg := &container.Config{}
	if b, ok := c.Spec.Annotations[AnnotationConfig]; !ok || json.Unmarshal(b, cfg) != nil {
		cfg = &container.Config{
			Image: c.Spec.ImageRef, Env: c.Spec.Env, WorkingDir: c.Spec.WorkingDir, User: c.Spec.User,
			Tty: c.Spec.Tty, OpenStdin: c.Spec.OpenStdin, StdinOnce: c.Spec.StdinOnce,
		}
		if len(c.Spec.Args) > 0 {
			cfg.Cmd = c.Spec.Args
		}
	}
	if cfg.Hostname == "" {
		cfg.Hostname = c.Spec.Hostname
		if cfg.Hostname == "" && len(c.ID) >= 12 {
			cfg.Hostname = c.ID[:12]
		}
	}
	hc := &container.HostConfig{}
	if b, ok := c.Spec.Annotations[AnnotationHostConfig]; !ok || json.Unmarshal(b, hc) != nil {
		hc = &container.HostConfig{AutoRemove: c.Spec.AutoRemove}
	}
	if hc.NetworkMode == "" {
		hc.NetworkMode = "default"
	}
	if hc.LogConfig.Type == "" {
		hc.LogConfig.Type = "json-file"
	}
	return cfg, hc
}

// logPath is inspect's LogPath as dockerd fills it: the json-file log's
// path once the container has started (dockerd sets it when the logger
// first starts), else "" (never shown for the local driver, whose file
// is not API, nor for none, which keeps none).
func logPath(c portlayer.Container, driver string) string {
	if driver != "json-file" || c.State.StartedAt.IsZero() {
		return ""
	}
	return c.LogPath
}

// command is the Summary.Command: the argv joined by spaces.
func command(args []string) string { return strings.Join(args, " ") }

// summary builds a `docker ps` entry.
func summary(c portlayer.Container, now time.Time) container.Summary {
	cfg, hc := storedConfig(c)
	s := container.Summary{
		ID:      c.ID,
		Names:   []string{"/" + c.Spec.Name},
		Image:   c.Spec.ImageRef,
		ImageID: c.Spec.Image,
		Command: command(c.Spec.Args),
		Created: c.Created.Unix(),
		Ports:   portSummaries(c, cfg.ExposedPorts),
		Labels:  cfg.Labels,
		State:   container.ContainerState(c.State.Status),
		Status:  StatusText(c.State, now),
		NetworkSettings: &container.NetworkSettingsSummary{
			Networks: endpointSettings(c),
		},
		Mounts: []container.MountPoint{},
	}
	if s.Image == "" {
		s.Image = c.Spec.Image
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.HostConfig.NetworkMode = string(hc.NetworkMode)
	return s
}

var psFilters = []string{"ancestor", "exited", "id", "label", "name", "status", "before", "since"}

// getList serves GET /containers/json?all=&limit=&size=&filters= (Engine API
// v1.50 "List containers"): newest first; only running ones unless all.
func (rt *Router) getList(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), psFilters...)
	if err != nil {
		return err
	}
	for _, st := range f.Values("status") {
		if container.ValidateContainerState(container.ContainerState(st)) != nil {
			return httputils.InvalidArgument("invalid filter 'status=%s'", st)
		}
	}
	all := httputils.BoolValue(r, "all") || len(f["status"]) > 0 || len(f["exited"]) > 0
	limit := 0
	if s := r.Form.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil {
			return httputils.InvalidArgument("invalid value for limit: %q", s)
		}
	}
	cs, err := rt.compute.List(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	if limit > 0 {
		all = true
	}
	// before/since: by position in the newest-first list. Like dockerd,
	// a container they name must exist.
	before, since := -1, -1
	for _, k := range []string{"before", "since"} {
		for _, v := range f.Values(k) {
			found := false
			for i, c := range cs {
				if !matchIDOrName(c, v) {
					continue
				}
				found = true
				if k == "before" {
					before = i
				} else {
					since = i
				}
			}
			if !found {
				return httputils.Classify(errdefs.ErrNotFound, nil, "No such container: "+v)
			}
		}
	}
	now := rt.now()
	linked := linkNames(cs)
	out := []container.Summary{}
	for i, c := range cs {
		// As dockerd, a container waiting for its restart counts as running.
		if !all && c.State.Status != portlayer.StatusRunning && c.State.Status != portlayer.StatusPaused && c.State.Status != portlayer.StatusRestarting {
			continue
		}
		if before >= 0 && i <= before || since >= 0 && i >= since {
			continue
		}
		if !matchFilters(c, f) {
			continue
		}
		sum := summary(c, now)
		sum.Names = append(sum.Names, linked[c.ID]...)
		if c.State.Status == portlayer.StatusRunning {
			sum.Status += healthText(rt.health.HealthOf(c))
		}
		_, hc := storedConfig(c)
		sum.Mounts = mountPoints(ctx, c, hc, rt.volumes)
		if httputils.VersionAtLeast(ctx, "1.46") {
			sum.HostConfig.Annotations = hc.Annotations // shown from API 1.46 on, as dockerd
		}
		out = append(out, sum)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return httputils.WriteJSON(w, http.StatusOK, out)
}

// linkNames gives each container the names other containers' legacy
// links give it, "/LINKER/ALIAS", sorted, by container ID, as dockerd
// lists them in `docker ps` Names after the container's own.
func linkNames(cs []portlayer.Container) map[string][]string {
	out := map[string][]string{}
	for _, linker := range cs {
		_, hc := storedConfig(linker)
		for _, l := range hc.Links {
			target, alias := splitLink(l)
			for _, t := range cs {
				if matchIDOrName(t, target) {
					out[t.ID] = append(out[t.ID], "/"+linker.Spec.Name+"/"+alias)
					break
				}
			}
		}
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}

// splitLink reads a --link value "NAME[:ALIAS]" (either part may carry
// dockerd's leading slash); the alias defaults to the name.
func splitLink(l string) (target, alias string) {
	target, alias, ok := strings.Cut(l, ":")
	target = strings.TrimPrefix(target, "/")
	if !ok || alias == "" {
		alias = target
	}
	return target, path.Base(alias)
}

// renderLinks is HostConfig.Links as dockerd shows it: "/NAME:/LINKER/ALIAS".
func renderLinks(links []string, linker string) []string {
	if len(links) == 0 {
		return links
	}
	out := make([]string, 0, len(links))
	for _, l := range links {
		target, alias := splitLink(l)
		out = append(out, "/"+target+":/"+linker+"/"+alias)
	}
	return out
}

func matchIDOrName(c portlayer.Container, v string) bool {
	return strings.TrimPrefix(v, "/") == c.Spec.Name || strings.HasPrefix(c.ID, v)
}

// matchFilters applies the `docker ps` filters other than before/since.
func matchFilters(c portlayer.Container, f httputils.Filters) bool {
	cfg, _ := storedConfig(c)
	return f.Match("id", func(v string) bool { return strings.HasPrefix(c.ID, v) }) &&
		// As dockerd, the pattern may match the name with or without its
		// leading slash (name=^web$ and name=^/web$ both work).
		f.Match("name", func(v string) bool {
			re, err := regexp.Compile(v)
			if err != nil {
				return strings.Contains("/"+c.Spec.Name, v)
			}
			return re.MatchString("/"+c.Spec.Name) || re.MatchString(c.Spec.Name)
		}) &&
		f.Match("status", func(v string) bool { return v == string(c.State.Status) }) &&
		f.Match("exited", func(v string) bool {
			n, err := strconv.Atoi(v)
			return err == nil && c.State.Status == portlayer.StatusExited && c.State.ExitCode == n
		}) &&
		f.MatchAll("label", func(v string) bool {
			k, val, hasVal := strings.Cut(v, "=")
			got, ok := cfg.Labels[k]
			return ok && (!hasVal || got == val)
		}) &&
		f.Match("ancestor", func(v string) bool {
			return v == c.Spec.ImageRef || familiarRef(v) == familiarRef(c.Spec.ImageRef) ||
				v == c.Spec.Image || strings.HasPrefix(strings.TrimPrefix(c.Spec.Image, "sha256:"), strings.TrimPrefix(v, "sha256:"))
		})
}

// timeString renders t as RFC 3339 with nanoseconds, or Docker's zero time.
func timeString(t time.Time) string {
	if t.IsZero() {
		return zeroTime
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// InspectResponse builds Docker's inspect document for c (Engine API v1.50
// "Inspect a container").
func InspectResponse(c portlayer.Container) container.InspectResponse {
	cfg, hc := storedConfig(c)
	hc.Links = renderLinks(hc.Links, c.Spec.Name)
	st := c.State
	resp := container.InspectResponse{
		ID:      c.ID,
		Created: timeString(c.Created),
		Args:    []string{},
		State: &container.State{
			Status:     container.ContainerState(st.Status),
			Running:    st.Status == portlayer.StatusRunning || st.Status == portlayer.StatusPaused || st.Status == portlayer.StatusRestarting,
			Paused:     st.Status == portlayer.StatusPaused,
			Restarting: st.Status == portlayer.StatusRestarting,
			OOMKilled:  st.OOMKilled,
			Dead:       st.Status == portlayer.StatusDead,
			Pid:        st.Pid,
			ExitCode:   st.ExitCode,
			Error:      st.Error,
			StartedAt:  timeString(st.StartedAt),
			FinishedAt: timeString(st.FinishedAt),
		},
		Image:        c.Spec.Image,
		LogPath:      logPath(c, hc.LogConfig.Type),
		Name:         "/" + c.Spec.Name,
		RestartCount: c.RestartCount,
		Driver:       "vch-ext4",
		Platform:     "linux",
		HostConfig:   hc,
		Mounts:       []container.MountPoint{},
		Config:       cfg,
		NetworkSettings: &container.NetworkSettings{
			Ports:    portMap(c, cfg.ExposedPorts),
			Networks: endpointSettings(c),
		},
	}
	if len(c.Spec.Args) > 0 {
		resp.Path = c.Spec.Args[0]
		resp.Args = append(resp.Args, c.Spec.Args[1:]...)
	}
	return resp
}

// getInspect serves GET /containers/{id}/json; 404 "No such container: x".
func (rt *Router) getInspect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	c, err := rt.inspect(r.Context(), vars["name"])
	if err != nil {
		return err
	}
	resp := InspectResponse(c)
	resp.State.Health = rt.health.HealthOf(c)
	resp.Mounts = mountPoints(r.Context(), c, resp.HostConfig, rt.volumes)
	return httputils.WriteJSON(w, http.StatusOK, inspectJSON{InspectResponse: resp, NetworkSettings: legacySettings(resp.NetworkSettings), Node: nodeOf(c)})
}

// SummaryOf builds the `docker ps` entry for c (also used by GET
// /system/df).
func SummaryOf(c portlayer.Container, now time.Time) container.Summary { return summary(c, now) }
