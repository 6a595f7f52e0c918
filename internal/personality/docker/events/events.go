// Package events serves the Engine API v1.50 "System events" endpoint,
// GET /events?since=&until=&filters=: the port layer's event log rendered
// as Docker's JSON event messages, past events first, then live ones until
// `until` or the client leaves.
package events

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/moby/moby/api/types/events"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// Router serves /events.
type Router struct {
	events portlayer.Events
	log    *slog.Logger
	now    func() time.Time
}

// NewRouter returns the events route over the port layer's event log.
func NewRouter(ev portlayer.Events, log *slog.Logger) *Router {
	return &Router{events: ev, log: log, now: time.Now}
}

// Routes returns the route table.
func (rt *Router) Routes() []httputils.Route {
	return []httputils.Route{httputils.NewRoute(http.MethodGet, "/events", rt.getEvents)}
}

// acceptedFilters are the `docker events --filter` names served.
var acceptedFilters = []string{"type", "event", "container", "image", "label", "volume"}

// LegacyMessage is Docker's event message with the deprecated fields
// dockerd still sends (moby 28, API 1.50) for container and image
// events: status (the action), id (the actor's ID) and, for a
// container, from (its image attribute). Old clients read only these.
type LegacyMessage struct {
	Status string `json:"status,omitempty"`
	ID     string `json:"id,omitempty"`
	From   string `json:"from,omitempty"`
	events.Message
}

// Message renders a port-layer event as Docker's event message.
func Message(e portlayer.Event) LegacyMessage {
	m := LegacyMessage{Message: events.Message{
		Type: events.Type(e.Type), Action: events.Action(e.Action),
		Actor: events.Actor{ID: e.ID, Attributes: e.Attributes},
		Scope: "local", Time: e.Time.Unix(), TimeNano: e.Time.UnixNano(),
	}}
	switch e.Type {
	case string(events.ContainerEventType):
		m.Status, m.ID, m.From = e.Action, e.ID, e.Attributes["image"]
	case string(events.ImageEventType):
		m.Status, m.ID = e.Action, e.ID
	}
	return m
}

// Match applies `docker events` filters: type, event (the action, or its
// part before ": " for exec events), container (ID, ID prefix or name),
// image (image attribute or image event ID/name), volume (a volume event's
// name), label (key or key=value).
func Match(f httputils.Filters, e portlayer.Event) bool {
	action, _, _ := strings.Cut(e.Action, ": ")
	return f.Match("type", func(v string) bool { return v == e.Type }) &&
		f.Match("event", func(v string) bool { return v == e.Action || v == action }) &&
		f.Match("container", func(v string) bool {
			return e.Type == "container" && (v == e.Attributes["name"] || strings.HasPrefix(e.ID, v))
		}) &&
		f.Match("image", func(v string) bool {
			if e.Type == "image" {
				return v == e.ID || v == e.Attributes["name"] || strings.HasPrefix(strings.TrimPrefix(e.ID, "sha256:"), v)
			}
			return v == e.Attributes["image"]
		}) &&
		f.Match("volume", func(v string) bool { return e.Type == "volume" && v == e.ID }) &&
		f.MatchAll("label", func(v string) bool {
			k, val, hasVal := strings.Cut(v, "=")
			got, ok := e.Attributes[k]
			return ok && (!hasVal || got == val)
		})
}

func (rt *Router) getEvents(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), acceptedFilters...)
	if err != nil {
		return err
	}
	var since, until time.Time
	if v := r.Form.Get("since"); v != "" {
		if since, err = container.ParseTimestamp(v); err != nil {
			return err
		}
	}
	if v := r.Form.Get("until"); v != "" {
		if until, err = container.ParseTimestamp(v); err != nil {
			return err
		}
	}
	live := until.IsZero() || until.After(rt.now())
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !until.IsZero() && live {
		var c2 context.CancelFunc
		subCtx, c2 = context.WithDeadline(subCtx, until)
		defer c2()
	}
	past, ch := rt.events.Subscribe(subCtx, since, live)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	httputils.Flush(w)
	enc := json.NewEncoder(w)
	send := func(e portlayer.Event) bool {
		if !until.IsZero() && e.Time.After(until) {
			return true
		}
		if !Match(f, e) {
			return true
		}
		if err := enc.Encode(Message(e)); err != nil {
			return false
		}
		httputils.Flush(w)
		return true
	}
	for _, e := range past {
		if !send(e) {
			return nil
		}
	}
	if ch == nil {
		return nil
	}
	for e := range ch {
		if !send(e) {
			return nil
		}
	}
	return nil
}
