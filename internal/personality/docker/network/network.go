package network

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// Router serves the network routes. Safe for concurrent use.
type Router struct {
	nets portlayer.Networks
	conn portlayer.NetworkConnector
	log  *slog.Logger
	now  func() time.Time
}

// NewRouter returns the network routes over the port layer's networks.
// conn may be nil: connect and disconnect then answer 501. logger may be
// nil.
func NewRouter(nets portlayer.Networks, conn portlayer.NetworkConnector, logger *slog.Logger) *Router {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Router{nets: nets, conn: conn, log: logger, now: time.Now}
}

// Routes returns the route table (Engine API v1.50 "Network"). As with
// dockerd, a network name in a path may contain slashes.
func (rt *Router) Routes() []httputils.Route {
	return []httputils.Route{
		httputils.NewRoute(http.MethodGet, "/networks", rt.getList),
		// dockerd routes the list with a trailing slash too.
		httputils.NewRoute(http.MethodGet, "/networks/", rt.getList),
		httputils.NewRoute(http.MethodPost, "/networks/create", rt.postCreate),
		httputils.NewRoute(http.MethodPost, "/networks/prune", rt.postPrune),
		httputils.NewRoute(http.MethodPost, "/networks/{id:.+}/connect", rt.postConnect),
		httputils.NewRoute(http.MethodPost, "/networks/{id:.+}/disconnect", rt.postDisconnect),
		httputils.NewRoute(http.MethodGet, "/networks/{id:.+}", rt.getInspect),
		httputils.NewRoute(http.MethodDelete, "/networks/{id:.+}", rt.deleteNetwork),
	}
}

// notFound is dockerd's 404 for a network: "network <term> not found".
func notFound(term string, cause error) error {
	return httputils.Classify(errdefs.ErrNotFound, cause, fmt.Sprintf("network %s not found", term))
}

// lookup finds a network by name, ID or unique ID prefix: 404 "network x
// not found" if none matches; 400 with the port layer's text if a prefix is
// ambiguous.
func (rt *Router) lookup(ctx context.Context, idOrName string) (portlayer.Network, error) {
	n, err := rt.nets.InspectNetwork(ctx, idOrName)
	switch {
	case err == nil:
		return n, nil
	case errdefs.IsNotFound(err):
		return n, notFound(idOrName, err)
	case errdefs.IsInvalidArgument(err):
		return n, httputils.Classify(errdefs.ErrInvalidArgument, err, httputils.PortLayerText(err))
	default:
		return n, fmt.Errorf("inspect network %s: %w", idOrName, err)
	}
}

// listFilters are the filters GET /networks accepts (dockerd 28's
// network.ValidateFilters).
var listFilters = []string{"dangling", "driver", "id", "label", "name", "scope", "type"}

// getList serves GET /networks?filters=: every network, predefined ones
// included, in the port layer's order. From API 1.28 on Containers is
// empty ({}), as with dockerd; older versions get the attachments.
func (rt *Router) getList(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), listFilters...)
	if err != nil {
		return err
	}
	match, err := listMatcher(f)
	if err != nil {
		return err
	}
	nets, err := rt.nets.ListNetworks(ctx)
	if err != nil {
		return fmt.Errorf("list networks: %w", err)
	}
	detailed := !httputils.VersionAtLeast(ctx, "1.28")
	out := []inspectJSON{}
	for _, n := range nets {
		if match(n) {
			out = append(out, ordered(InspectResponse(n, detailed)))
		}
	}
	return httputils.WriteJSON(w, http.StatusOK, out)
}

// listMatcher builds the GET /networks filter (Engine API v1.50 "List
// networks"): name and id are regular expressions matched anywhere (or
// exact text); driver and scope exact; every label must match ("key" or
// "key=value"); type is "custom" or "builtin"; dangling=true keeps the
// networks without containers that are not predefined, dangling=false the
// others. Values within one filter are alternatives. InvalidArgument with
// dockerd's text for a bad type or dangling value.
func listMatcher(f httputils.Filters) (func(portlayer.Network) bool, error) {
	for _, v := range f.Values("type") {
		if v != "custom" && v != "builtin" {
			return nil, httputils.InvalidArgument("invalid filter: 'type'='%s'", v)
		}
	}
	dangling := f.Values("dangling")
	if len(dangling) > 1 {
		return nil, httputils.InvalidArgument(`got more than one value for filter key "dangling"`)
	}
	var wantDangling *bool
	if len(dangling) == 1 {
		var d bool
		switch dangling[0] {
		case "1", "true":
			d = true
		case "0", "false":
		default:
			return nil, httputils.InvalidArgument(`invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")`)
		}
		wantDangling = &d
	}
	return func(n portlayer.Network) bool {
		driver := n.Driver
		if driver == "" {
			driver = driverBridge
		}
		if !f.Match("name", func(v string) bool { return matchPattern(v, n.Name) }) ||
			!f.Match("id", func(v string) bool { return matchPattern(v, n.ID) }) ||
			!f.Match("driver", func(v string) bool { return v == driver }) ||
			!f.Match("scope", func(v string) bool { return v == scopeLocal }) ||
			!f.Match("type", func(v string) bool { return (v == "builtin") == n.Predefined }) ||
			!matchLabels(f.Values("label"), n.Labels) {
			return false
		}
		if wantDangling != nil {
			isDangling := !n.Predefined && len(n.Endpoints) == 0
			return isDangling == *wantDangling
		}
		return true
	}, nil
}

// matchPattern is dockerd's filters.Args.Match for one value: the same
// text, or a regular expression found anywhere in s.
func matchPattern(pattern, s string) bool {
	if pattern == s {
		return true
	}
	ok, err := regexp.MatchString(pattern, s)
	return err == nil && ok
}

// matchLabels reports whether every filter ("key" or "key=value") matches
// labels, as dockerd's MatchKVList: no filters match everything, and no
// labels match no filter.
func matchLabels(filters []string, labels map[string]string) bool {
	for _, v := range filters {
		k, val, hasVal := strings.Cut(v, "=")
		got, ok := labels[k]
		if !ok || hasVal && got != val {
			return false
		}
	}
	return true
}

// getInspect serves GET /networks/{id}?verbose=&scope=. verbose must be a
// boolean and changes nothing (no swarm services); a scope other than
// "local" finds nothing, as with dockerd.
func (rt *Router) getInspect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	id := vars["id"]
	q := r.URL.Query()
	if v := q.Get("verbose"); v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			return httputils.Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("invalid value for verbose: %s: %s", v, err.Error()))
		}
	}
	if s := q.Get("scope"); s != "" && s != scopeLocal {
		return notFound(id, nil)
	}
	n, err := rt.lookup(r.Context(), id)
	if err != nil {
		return err
	}
	return httputils.WriteJSON(w, http.StatusOK, ordered(InspectResponse(n, true)))
}

// errPredefined is dockerd's 403 for removing "bridge" or "none".
func errPredefined(name string) error {
	return httputils.Classify(errdefs.ErrPermissionDenied, nil, fmt.Sprintf("%s is a pre-defined network and cannot be removed", name))
}

// errActiveEndpoints is dockerd 28's 403 for removing a network in use:
// `error while removing network: network n has active endpoints
// (name:"c1" id:"0123456789ab", ...)`.
func errActiveEndpoints(n portlayer.Network, cause error) error {
	eps := make([]string, 0, len(n.Endpoints))
	for _, ep := range n.Endpoints {
		eps = append(eps, fmt.Sprintf(`name:"%s" id:"%s"`, endpointName(ep), shortID(ep.ID)))
	}
	return httputils.Classify(errdefs.ErrPermissionDenied, cause,
		fmt.Sprintf("error while removing network: network %s has active endpoints (%s)", n.Name, strings.Join(eps, ", ")))
}

// deleteNetwork serves DELETE /networks/{id}: 204, or 404 "network x not
// found", 403 for a predefined network or one with containers attached.
func (rt *Router) deleteNetwork(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	n, err := rt.lookup(ctx, vars["id"])
	if err != nil {
		return err
	}
	if err := rt.remove(ctx, n); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// remove deletes n with dockerd's texts for what forbids it.
func (rt *Router) remove(ctx context.Context, n portlayer.Network) error {
	if n.Predefined {
		return errPredefined(n.Name)
	}
	if len(n.Endpoints) > 0 {
		return errActiveEndpoints(n, nil)
	}
	err := rt.nets.RemoveNetwork(ctx, n.ID)
	switch {
	case err == nil:
		rt.log.InfoContext(ctx, "network removed", slog.String("network", n.Name), slog.String("id", n.ID))
		return nil
	case errdefs.IsNotFound(err):
		return notFound(n.Name, err)
	case errdefs.IsConflict(err):
		// A container joined since the lookup: name it if we can.
		if cur, ierr := rt.nets.InspectNetwork(ctx, n.ID); ierr == nil && len(cur.Endpoints) > 0 {
			return errActiveEndpoints(cur, err)
		}
		return httputils.Classify(errdefs.ErrPermissionDenied, err, "error while removing network: "+httputils.PortLayerText(err))
	default:
		return fmt.Errorf("remove network %s: %w", n.Name, err)
	}
}

// pruneFilters are the filters POST /networks/prune accepts (dockerd 28).
var pruneFilters = []string{"until", "label", "label!"}

// postPrune serves POST /networks/prune?filters= (until, label, label!):
// removes every network that is not predefined and has no containers,
// created before until when given. The report lists the removed names;
// null when there are none, as with dockerd. A network that cannot be
// removed (a container joined meanwhile) is skipped and logged.
func (rt *Router) postPrune(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), pruneFilters...)
	if err != nil {
		return err
	}
	var until time.Time
	if vs := f.Values("until"); len(vs) > 1 {
		return httputils.InvalidArgument("more than one until filter specified")
	} else if len(vs) == 1 {
		if until, err = container.ParseUntil(vs[0], rt.now()); err != nil {
			return err
		}
	}
	nets, err := rt.nets.ListNetworks(ctx)
	if err != nil {
		return fmt.Errorf("prune networks: %w", err)
	}
	var report network.PruneReport
	for _, n := range nets {
		if n.Predefined || len(n.Endpoints) > 0 {
			continue
		}
		if !until.IsZero() && n.Created.After(until) {
			continue
		}
		if !matchLabels(f.Values("label"), n.Labels) {
			continue
		}
		// label! excludes a network only when every one of its terms
		// matches, as dockerd's prune does.
		if nots := f.Values("label!"); len(nots) > 0 && len(n.Labels) > 0 && matchLabels(nots, n.Labels) {
			continue
		}
		if err := rt.nets.RemoveNetwork(ctx, n.ID); err != nil {
			if !errdefs.IsNotFound(err) {
				rt.log.WarnContext(ctx, "prune: network not removed", slog.String("network", n.Name), slog.String("error", err.Error()))
			}
			continue
		}
		rt.log.InfoContext(ctx, "network removed", slog.String("network", n.Name), slog.String("id", n.ID))
		report.NetworksDeleted = append(report.NetworksDeleted, n.Name)
	}
	return httputils.WriteJSON(w, http.StatusOK, report)
}
