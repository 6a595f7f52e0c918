package container

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// postPrune serves POST /containers/prune?filters= (Engine API v1.50
// "Delete stopped containers", dockerd's ContainersPrune): every
// container that is not running, paused or restarting is removed,
// narrowed by until (created before a time or duration) and label /
// label! filters; their volumes stay. SpaceReclaimed is 0: a container's
// writable layer is a sparse qcow2 whose size is not tracked (as
// docker system df reports it).
func (rt *Router) postPrune(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), "until", "label", "label!")
	if err != nil {
		return err
	}
	var until time.Time
	for _, v := range f.Values("until") {
		t, err := ParseUntil(v, rt.now())
		if err != nil {
			return err
		}
		if until.IsZero() || t.Before(until) {
			until = t
		}
	}
	cs, err := rt.compute.List(ctx)
	if err != nil {
		return fmt.Errorf("prune containers: %w", err)
	}
	report := container.PruneReport{ContainersDeleted: []string{}}
	for _, c := range cs {
		switch c.State.Status {
		case portlayer.StatusRunning, portlayer.StatusPaused, portlayer.StatusRestarting, portlayer.StatusRemoving:
			continue
		}
		if !until.IsZero() && !c.Created.Before(until) {
			continue
		}
		cfg, _ := storedConfig(c)
		if !f.MatchAll("label", func(v string) bool { return HasLabel(cfg.Labels, v) }) {
			continue
		}
		if len(f.Values("label!")) > 0 && !f.MatchAll("label!", func(v string) bool { return !HasLabel(cfg.Labels, v) }) {
			continue
		}
		if err := rt.compute.Remove(ctx, c.ID, false); err != nil {
			if errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
				rt.log.DebugContext(ctx, "prune skips container", "container", c.ID, "err", err)
				continue
			}
			return fmt.Errorf("prune containers: %w", err)
		}
		report.ContainersDeleted = append(report.ContainersDeleted, c.ID)
	}
	return httputils.WriteJSON(w, http.StatusOK, report)
}

// hasLabel matches a label filter value, "key" or "key=value".
func HasLabel(labels map[string]string, v string) bool {
	k, val, hasVal := strings.Cut(v, "=")
	got, ok := labels[k]
	return ok && (!hasVal || got == val)
}

// ParseUntil parses an until filter value as dockerd's timetypes does: a
// Go duration before now ("10m", "1h30m"), an RFC 3339 time or date
// ("2024-01-02T15:04:05Z", "2024-01-02"), or Unix seconds with an optional
// fraction. InvalidArgument otherwise.
func ParseUntil(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	if t, err := ParseTimestamp(v); err == nil && v != "" {
		return t, nil
	}
	return time.Time{}, httputils.InvalidArgument("failed to parse value as time or duration: %q", v)
}
