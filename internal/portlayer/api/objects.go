package api

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// decodeBody reads a JSON request body into v, refusing unknown fields.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("request body: %v", err)
	}
	return nil
}

func (s *server) volumeList(w http.ResponseWriter, r *http.Request) error {
	vs, err := s.b.Volumes.ListVolumes(r.Context())
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []portlayer.Volume{}
	}
	writeJSON(w, http.StatusOK, vs)
	return nil
}

func (s *server) volumeCreate(w http.ResponseWriter, r *http.Request) error {
	var spec portlayer.VolumeSpec
	if err := decodeBody(r, &spec); err != nil {
		return err
	}
	v, err := s.b.Volumes.CreateVolume(r.Context(), spec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (s *server) volumeInspect(w http.ResponseWriter, r *http.Request) error {
	v, err := s.b.Volumes.InspectVolume(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *server) volumeRemove(w http.ResponseWriter, r *http.Request) error {
	force, err := queryBool(r, "force")
	if err != nil {
		return err
	}
	if err := s.b.Volumes.RemoveVolume(r.Context(), r.PathValue("name"), force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) networkList(w http.ResponseWriter, r *http.Request) error {
	ns, err := s.b.Networks.ListNetworks(r.Context())
	if err != nil {
		return err
	}
	if ns == nil {
		ns = []portlayer.Network{}
	}
	writeJSON(w, http.StatusOK, ns)
	return nil
}

func (s *server) networkCreate(w http.ResponseWriter, r *http.Request) error {
	var spec portlayer.NetworkSpec
	if err := decodeBody(r, &spec); err != nil {
		return err
	}
	n, err := s.b.Networks.CreateNetwork(r.Context(), spec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, n)
	return nil
}

func (s *server) networkInspect(w http.ResponseWriter, r *http.Request) error {
	n, err := s.b.Networks.InspectNetwork(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, n)
	return nil
}

func (s *server) networkRemove(w http.ResponseWriter, r *http.Request) error {
	if err := s.b.Networks.RemoveNetwork(r.Context(), r.PathValue("ref")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// EventLine is one line of the events stream: a logged or live event,
// or the marker (Live true, no event) between the events logged before
// the request and the live ones.
type EventLine struct {
	Event *portlayer.Event `json:"event,omitempty"`
	Live  bool             `json:"live,omitempty"`
}

// events streams the logged events since ?since= (RFC 3339; absent:
// none), then, with ?live=true, the marker and live events until the
// client goes.
func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		var err error
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return invalid("query parameter since: %q is not an RFC 3339 time", v)
		}
	}
	live, err := queryBool(r, "live")
	if err != nil {
		return err
	}
	logged, ch := s.b.Events.Subscribe(r.Context(), since, live)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	f, _ := w.(http.Flusher)
	for i := range logged {
		_ = enc.Encode(EventLine{Event: &logged[i]})
	}
	if !live {
		return nil
	}
	_ = enc.Encode(EventLine{Live: true})
	if f != nil {
		f.Flush()
	}
	for e := range ch {
		if err := enc.Encode(EventLine{Event: &e}); err != nil {
			break
		}
		if f != nil {
			f.Flush()
		}
	}
	for range ch {
	}
	return nil
}
