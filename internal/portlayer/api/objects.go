package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// decodeBody reads a JSON request body of at most maxBodyBytes into v:
// one JSON value, unknown fields refused, nothing but white space after
// it. Any failure is invalid_argument ("request body: …"); a body over
// the limit says so (the server then closes the connection rather than
// read the rest).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if err := decodeJSON(http.MaxBytesReader(w, r.Body, maxBodyBytes), v); err != nil {
		return invalid("request body: %v", err)
	}
	return nil
}

// errTooLarge is decodeJSON's error for a body over maxBodyBytes.
var errTooLarge = fmt.Errorf("more than %d MiB (%d bytes), the most a request body may have", maxBodyBytes>>20, maxBodyBytes)

// decodeJSON decodes the one JSON value src holds into v, refusing
// unknown fields and anything but white space after the value; a read
// that fails with *http.MaxBytesError is errTooLarge.
func decodeJSON(src io.Reader, v any) error {
	dec := json.NewDecoder(src)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr == nil {
			err = errors.New("more than one JSON value")
		} else if terr != io.EOF {
			err = fmt.Errorf("after the JSON value: %w", terr)
		}
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errTooLarge
	}
	return err
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
	if err := decodeBody(w, r, &spec); err != nil {
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
	if err := decodeBody(w, r, &spec); err != nil {
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
