package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// StreamLine is one line of a progress stream (application/x-ndjson):
// progress lines, then exactly one line with the result (Image, Images
// or Pushed) or the Error that ended the operation.
type StreamLine struct {
	Progress *portlayer.Progress    `json:"progress,omitempty"`
	Image    *portlayer.Image       `json:"image,omitempty"`
	Images   []portlayer.Image      `json:"images,omitempty"`
	Pushed   []portlayer.PushResult `json:"pushed,omitempty"`
	Error    *portlayer.Error       `json:"error,omitempty"`
}

// progressStream writes a progress stream. Until the first line the
// response is not started, so an operation that fails at once answers
// with the Error body and its status instead.
type progressStream struct {
	w       http.ResponseWriter
	mu      sync.Mutex
	started bool
	enc     *json.Encoder
}

func newProgressStream(w http.ResponseWriter) *progressStream {
	return &progressStream{w: w, enc: json.NewEncoder(w)}
}

// send writes one line, starting the response (200) if needed.
func (p *progressStream) send(l StreamLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		p.w.Header().Set("Content-Type", "application/x-ndjson")
		p.w.WriteHeader(http.StatusOK)
		p.started = true
	}
	_ = p.enc.Encode(l)
	if f, ok := p.w.(http.Flusher); ok {
		f.Flush()
	}
}

// progress is a portlayer.ProgressFunc writing progress lines.
func (p *progressStream) progress(pr portlayer.Progress) { p.send(StreamLine{Progress: &pr}) }

// finish ends the stream with the result, or with err: in the stream
// once started, else returned for the ordinary Error answer.
func (p *progressStream) finish(l StreamLine, err error) error {
	if err != nil {
		p.mu.Lock()
		started := p.started
		p.mu.Unlock()
		if !started {
			return err
		}
		body := ErrorBody(err)
		l = StreamLine{Error: &body}
	}
	p.send(l)
	return nil
}

// registryAuth reads the X-Registry-Auth header: base64url of the JSON of
// portlayer.RegistryAuth; empty is anonymous.
func registryAuth(r *http.Request) (portlayer.RegistryAuth, error) {
	var a portlayer.RegistryAuth
	h := r.Header.Get("X-Registry-Auth")
	if h == "" {
		return a, nil
	}
	b, err := decodeBase64URL(h)
	if err == nil {
		err = json.Unmarshal(b, &a)
	}
	if err != nil {
		return a, invalid("X-Registry-Auth: %v", err)
	}
	return a, nil
}

// requireRef reads the query parameter k, which must be set.
func requireRef(r *http.Request, k string) (string, error) {
	v := r.URL.Query().Get(k)
	if v == "" {
		return "", invalid("query parameter %s is required", k)
	}
	return v, nil
}

func (s *server) imageList(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.b.Images.List(r.Context())
	if err != nil {
		return err
	}
	if imgs == nil {
		imgs = []portlayer.Image{}
	}
	writeJSON(w, http.StatusOK, imgs)
	return nil
}

func (s *server) imageGet(w http.ResponseWriter, r *http.Request) error {
	ref, err := requireRef(r, "ref")
	if err != nil {
		return err
	}
	img, err := s.b.Images.Get(r.Context(), ref)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, img)
	return nil
}

// registryRequest reads a pull's or push's ?ref= and X-Registry-Auth.
func registryRequest(r *http.Request) (string, portlayer.RegistryAuth, error) {
	ref, err := requireRef(r, "ref")
	if err != nil {
		return "", portlayer.RegistryAuth{}, err
	}
	auth, err := registryAuth(r)
	return ref, auth, err
}

func (s *server) imagePull(w http.ResponseWriter, r *http.Request) error {
	ref, auth, err := registryRequest(r)
	if err != nil {
		return err
	}
	ps := newProgressStream(w)
	img, err := s.b.Images.Pull(r.Context(), ref, auth, ps.progress)
	return ps.finish(StreamLine{Image: &img}, err)
}

func (s *server) imagePush(w http.ResponseWriter, r *http.Request) error {
	ref, auth, err := registryRequest(r)
	if err != nil {
		return err
	}
	ps := newProgressStream(w)
	res, err := s.b.Images.Push(r.Context(), ref, auth, ps.progress)
	if res == nil {
		res = []portlayer.PushResult{}
	}
	return ps.finish(StreamLine{Pushed: res}, err)
}

func (s *server) imageImport(w http.ResponseWriter, r *http.Request) error {
	var opts portlayer.ImportOptions
	if v := r.URL.Query().Get("options"); v != "" {
		if err := decodeJSON(strings.NewReader(v), &opts); err != nil {
			return invalid("query parameter options: %v", err)
		}
	}
	ps := newProgressStream(w)
	img, err := s.b.Images.Import(r.Context(), r.Body, r.URL.Query().Get("ref"), opts, ps.progress)
	return ps.finish(StreamLine{Image: &img}, err)
}

func (s *server) imageLoad(w http.ResponseWriter, r *http.Request) error {
	ps := newProgressStream(w)
	imgs, err := s.b.Images.Load(r.Context(), r.Body, ps.progress)
	if imgs == nil {
		imgs = []portlayer.Image{}
	}
	return ps.finish(StreamLine{Images: imgs}, err)
}

// imageSave streams the archive; the refs are checked first (Save writes
// nothing for a ref that does not resolve), so a bad ref is an Error.
func (s *server) imageSave(w http.ResponseWriter, r *http.Request) error {
	refs := r.URL.Query()["ref"]
	if len(refs) == 0 {
		return invalid("query parameter ref is required")
	}
	for _, ref := range refs {
		if _, err := s.b.Images.Get(r.Context(), ref); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "application/x-tar")
	if err := s.b.Images.Save(r.Context(), refs, w); err != nil {
		s.log.Warn("image save cut", "refs", refs, "err", err)
	}
	return nil
}

func (s *server) imageTag(w http.ResponseWriter, r *http.Request) error {
	src, err := requireRef(r, "source")
	if err != nil {
		return err
	}
	target, err := requireRef(r, "target")
	if err != nil {
		return err
	}
	if err := s.b.Images.Tag(r.Context(), src, target); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) imageRemove(w http.ResponseWriter, r *http.Request) error {
	ref, err := requireRef(r, "ref")
	if err != nil {
		return err
	}
	force, err := queryBool(r, "force")
	if err != nil {
		return err
	}
	dels, err := s.b.Images.Remove(r.Context(), ref, force)
	if err != nil {
		return err
	}
	if dels == nil {
		dels = []portlayer.ImageDelete{}
	}
	writeJSON(w, http.StatusOK, dels)
	return nil
}

// queryBool reads query parameter k as a boolean; absent is false.
func queryBool(r *http.Request, k string) (bool, error) {
	v := r.URL.Query().Get(k)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid("query parameter %s: %q is not a boolean", k, v)
	}
	return b, nil
}

// logs streams the container's log messages as NDJSON (LogMessage, Data
// base64), ending when the log does (or, with follow, the container).
func (s *server) logs(w http.ResponseWriter, r *http.Request) error {
	opts := portlayer.LogOptions{Tail: -1}
	var err error
	if opts.Stdout, err = queryBool(r, "stdout"); err != nil {
		return err
	}
	if opts.Stderr, err = queryBool(r, "stderr"); err != nil {
		return err
	}
	if !opts.Stdout && !opts.Stderr {
		opts.Stdout, opts.Stderr = true, true
	}
	if opts.Follow, err = queryBool(r, "follow"); err != nil {
		return err
	}
	if n, ok, err := queryInt(r, "tail"); err != nil {
		return err
	} else if ok {
		opts.Tail = n
	}
	for k, t := range map[string]*time.Time{"since": &opts.Since, "until": &opts.Until} {
		if v := r.URL.Query().Get(k); v != "" {
			if *t, err = time.Parse(time.RFC3339Nano, v); err != nil {
				return invalid("query parameter %s: %q is not an RFC 3339 time", k, v)
			}
		}
	}
	ch, err := s.b.Interaction.Logs(r.Context(), r.PathValue("ref"), opts)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	if f != nil {
		f.Flush()
	}
	enc := json.NewEncoder(w)
	for m := range ch {
		if err := enc.Encode(m); err != nil {
			break
		}
		if f != nil && len(ch) == 0 {
			f.Flush()
		}
	}
	for range ch { // a client that went away: let the producer end
	}
	return nil
}
