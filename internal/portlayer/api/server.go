package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// Backend is what the server serves: the port layer's interfaces.
type Backend struct {
	Compute portlayer.Compute
	// Pauser serves pause and unpause; nil answers not_implemented.
	Pauser portlayer.Pauser
	// Images serves /v1/images…; nil answers not_implemented.
	Images portlayer.Images
	// Interaction serves logs; nil answers not_implemented.
	Interaction portlayer.Interaction
	// Volumes, Networks and Events serve their areas; nil answers
	// not_implemented.
	Volumes  portlayer.Volumes
	Networks portlayer.Networks
	Events   portlayer.Events
	// Execs serves execs and TTY resizes; attach needs Interaction.
	Execs portlayer.Execs
	// The rest serve their routes; nil answers not_implemented.
	Host             func(ctx context.Context) (portlayer.HostInfo, error)
	Monitor          portlayer.Monitor
	NetworkConnector portlayer.NetworkConnector
	Updater          portlayer.Updater
	Archives         portlayer.Archives
	Committer        portlayer.Committer
	Login            portlayer.RegistryLogin
	// Publish adds an event a front end reports (a healthcheck's) to the
	// log.
	Publish func(portlayer.Event)
}

// maxBodyBytes bounds a request body (a container spec).
const maxBodyBytes = 4 << 20

// Handler serves API version 1 over b under Prefix. Errors answer with
// the Error body and the status StatusOf gives its class; a path that
// is no route (another version's, /v2/…, included) is not_found, a
// method a route does not take invalid_argument (400, with an Allow
// header listing the methods it takes).
func Handler(b Backend, logger *slog.Logger) (http.Handler, error) {
	doc, err := Document()
	if err != nil {
		return nil, err
	}
	docJSON, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("api: encode the document: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &server{b: b, log: logger.With("component", "portlayer-api")}
	mux := &routes{mux: http.NewServeMux(), paths: http.NewServeMux(), methods: map[string][]string{}}
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(docJSON)
	})
	mux.HandleFunc("GET /v1/containers", s.wrap(s.list))
	mux.HandleFunc("POST /v1/containers", s.wrap(s.create))
	mux.HandleFunc("GET /v1/containers/{ref}", s.wrap(s.inspect))
	mux.HandleFunc("DELETE /v1/containers/{ref}", s.wrap(s.remove))
	mux.HandleFunc("POST /v1/containers/{ref}/start", s.wrap(s.start))
	mux.HandleFunc("POST /v1/containers/{ref}/stop", s.wrap(s.stop))
	mux.HandleFunc("POST /v1/containers/{ref}/kill", s.wrap(s.kill))
	mux.HandleFunc("POST /v1/containers/{ref}/wait", s.wrap(s.wait))
	mux.HandleFunc("POST /v1/containers/{ref}/rename", s.wrap(s.rename))
	mux.HandleFunc("POST /v1/containers/{ref}/pause", s.wrap(s.pause))
	mux.HandleFunc("POST /v1/containers/{ref}/unpause", s.wrap(s.unpause))
	mux.HandleFunc("GET /v1/containers/{ref}/logs", s.wrap(s.need(s.b.Interaction != nil, s.logs)))
	mux.HandleFunc("GET /v1/images", s.wrap(s.need(s.b.Images != nil, s.imageList)))
	mux.HandleFunc("GET /v1/images/resolve", s.wrap(s.need(s.b.Images != nil, s.imageGet)))
	mux.HandleFunc("POST /v1/images/pull", s.wrap(s.need(s.b.Images != nil, s.imagePull)))
	mux.HandleFunc("POST /v1/images/push", s.wrap(s.need(s.b.Images != nil, s.imagePush)))
	mux.HandleFunc("POST /v1/images/import", s.wrap(s.need(s.b.Images != nil, s.imageImport)))
	mux.HandleFunc("POST /v1/images/load", s.wrap(s.need(s.b.Images != nil, s.imageLoad)))
	mux.HandleFunc("GET /v1/images/save", s.wrap(s.need(s.b.Images != nil, s.imageSave)))
	mux.HandleFunc("POST /v1/images/tag", s.wrap(s.need(s.b.Images != nil, s.imageTag)))
	mux.HandleFunc("DELETE /v1/images", s.wrap(s.need(s.b.Images != nil, s.imageRemove)))
	mux.HandleFunc("GET /v1/volumes", s.wrap(s.need(s.b.Volumes != nil, s.volumeList)))
	mux.HandleFunc("POST /v1/volumes", s.wrap(s.need(s.b.Volumes != nil, s.volumeCreate)))
	mux.HandleFunc("GET /v1/volumes/{name}", s.wrap(s.need(s.b.Volumes != nil, s.volumeInspect)))
	mux.HandleFunc("DELETE /v1/volumes/{name}", s.wrap(s.need(s.b.Volumes != nil, s.volumeRemove)))
	mux.HandleFunc("GET /v1/networks", s.wrap(s.need(s.b.Networks != nil, s.networkList)))
	mux.HandleFunc("POST /v1/networks", s.wrap(s.need(s.b.Networks != nil, s.networkCreate)))
	mux.HandleFunc("GET /v1/networks/{ref}", s.wrap(s.need(s.b.Networks != nil, s.networkInspect)))
	mux.HandleFunc("DELETE /v1/networks/{ref}", s.wrap(s.need(s.b.Networks != nil, s.networkRemove)))
	mux.HandleFunc("GET /v1/events", s.wrap(s.need(s.b.Events != nil, s.events)))
	mux.HandleFunc("POST /v1/containers/{ref}/attach", s.wrap(s.need(s.b.Interaction != nil, s.attach)))
	mux.HandleFunc("POST /v1/containers/{ref}/resize", s.wrap(s.need(s.b.Execs != nil, s.containerResize)))
	mux.HandleFunc("POST /v1/containers/{ref}/execs", s.wrap(s.need(s.b.Execs != nil, s.execCreate)))
	mux.HandleFunc("GET /v1/execs/{id}", s.wrap(s.need(s.b.Execs != nil, s.execInspect)))
	mux.HandleFunc("POST /v1/execs/{id}/start", s.wrap(s.need(s.b.Execs != nil, s.execStart)))
	mux.HandleFunc("POST /v1/execs/{id}/resize", s.wrap(s.need(s.b.Execs != nil, s.execResize)))
	mux.HandleFunc("GET /v1/host", s.wrap(s.need(s.b.Host != nil, s.host)))
	mux.HandleFunc("GET /v1/containers/{ref}/top", s.wrap(s.need(s.b.Monitor != nil, s.top)))
	mux.HandleFunc("GET /v1/containers/{ref}/stats", s.wrap(s.need(s.b.Monitor != nil, s.stats)))
	mux.HandleFunc("POST /v1/containers/{ref}/connect", s.wrap(s.need(s.b.NetworkConnector != nil, s.connect)))
	mux.HandleFunc("POST /v1/containers/{ref}/disconnect", s.wrap(s.need(s.b.NetworkConnector != nil, s.disconnect)))
	mux.HandleFunc("POST /v1/containers/{ref}/restart", s.wrap(s.restart))
	mux.HandleFunc("POST /v1/containers/{ref}/update", s.wrap(s.need(s.b.Updater != nil, s.update)))
	mux.HandleFunc("DELETE /v1/execs/{id}", s.wrap(s.need(s.b.Execs != nil, s.forgetExec)))
	mux.HandleFunc("POST /v1/events", s.wrap(s.need(s.b.Publish != nil, s.publish)))
	mux.HandleFunc("POST /v1/registries/login", s.wrap(s.need(s.b.Login != nil, s.login)))
	mux.HandleFunc("GET /v1/containers/{ref}/archive/stat", s.wrap(s.need(s.b.Archives != nil, s.statPath)))
	mux.HandleFunc("GET /v1/containers/{ref}/archive", s.wrap(s.need(s.b.Archives != nil, s.getArchive)))
	mux.HandleFunc("PUT /v1/containers/{ref}/archive", s.wrap(s.need(s.b.Archives != nil, s.putArchive)))
	mux.HandleFunc("GET /v1/containers/{ref}/export", s.wrap(s.need(s.b.Archives != nil, s.export)))
	mux.HandleFunc("GET /v1/containers/{ref}/changes", s.wrap(s.need(s.b.Archives != nil, s.changes)))
	mux.HandleFunc("GET /v1/containers/{ref}/changes/layer", s.wrap(s.need(s.b.Archives != nil, s.changesLayer)))
	mux.HandleFunc("POST /v1/images/commit", s.wrap(s.need(s.b.Committer != nil, s.commit)))
	mux.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if methods := mux.allowed(r); methods != nil {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			s.fail(w, r, invalid("method %s is not allowed on %s: it takes %s", r.Method, r.URL.Path, strings.Join(methods, ", ")))
			return
		}
		s.fail(w, r, &portlayer.Error{Class: portlayer.ClassNotFound, Message: "no such route: " + r.Method + " " + r.URL.Path})
	})
	return mux.mux, nil
}

// routes registers the API's routes ("METHOD /path" patterns) and
// remembers, for each path pattern, the methods it takes.
type routes struct {
	mux *http.ServeMux
	// paths holds every route's path pattern without its method, to
	// find the route a request with another method meant.
	paths   *http.ServeMux
	methods map[string][]string
}

// HandleFunc registers h for pattern, "METHOD /path".
func (rt *routes) HandleFunc(pattern string, h http.HandlerFunc) {
	method, path, _ := strings.Cut(pattern, " ")
	rt.mux.HandleFunc(pattern, h)
	if _, ok := rt.methods[path]; !ok {
		rt.paths.HandleFunc(path, func(http.ResponseWriter, *http.Request) {})
	}
	rt.methods[path] = append(rt.methods[path], method)
	if method == http.MethodGet {
		rt.methods[path] = append(rt.methods[path], http.MethodHead) // the mux serves HEAD with GET
	}
	slices.Sort(rt.methods[path])
	rt.methods[path] = slices.Compact(rt.methods[path])
}

// allowed is the methods the route r's path names takes, sorted; nil if
// the path is no route's.
func (rt *routes) allowed(r *http.Request) []string {
	_, pattern := rt.paths.Handler(r)
	return rt.methods[pattern]
}

type server struct {
	b   Backend
	log *slog.Logger
}

// wrap turns a handler's error into the Error body.
func (s *server) wrap(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	}
}

// fail answers with err's Error body.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	body := ErrorBody(err)
	code := StatusOf(body.Class)
	if code == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, code, body)
}

// invalid is an invalid_argument error.
func invalid(format string, args ...any) error {
	return &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// queryInt reads query parameter k as an integer; ok is false if absent.
func queryInt(r *http.Request, k string) (n int, ok bool, err error) {
	v := r.URL.Query().Get(k)
	if v == "" {
		return 0, false, nil
	}
	n, err = strconv.Atoi(v)
	if err != nil {
		return 0, false, invalid("query parameter %s: %q is not an integer", k, v)
	}
	return n, true, nil
}

// queryTimeout reads the query parameter timeout, whole seconds
// (negative: forever, as Stop takes it); nil if absent. Invalid_argument
// for a number of seconds a time.Duration cannot hold.
func queryTimeout(r *http.Request) (*time.Duration, error) {
	n, ok, err := queryInt(r, "timeout")
	if err != nil || !ok {
		return nil, err
	}
	const most = math.MaxInt64 / int64(time.Second)
	if int64(n) > most || int64(n) < -most {
		return nil, invalid("query parameter timeout: %d seconds is out of range (at most %d)", n, most)
	}
	d := time.Duration(n) * time.Second
	return &d, nil
}

func (s *server) list(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.b.Compute.List(r.Context())
	if err != nil {
		return err
	}
	if cs == nil {
		cs = []portlayer.Container{}
	}
	writeJSON(w, http.StatusOK, cs)
	return nil
}

func (s *server) create(w http.ResponseWriter, r *http.Request) error {
	var spec portlayer.ContainerSpec
	if err := decodeBody(w, r, &spec); err != nil {
		return err
	}
	if len(spec.Args) == 0 {
		return invalid("container spec: Args is empty: nothing to run")
	}
	c, err := s.b.Compute.Create(r.Context(), spec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (s *server) inspect(w http.ResponseWriter, r *http.Request) error {
	c, err := s.b.Compute.Inspect(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *server) remove(w http.ResponseWriter, r *http.Request) error {
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return invalid("query parameter force: %q is not a boolean", v)
		}
	}
	if err := s.b.Compute.Remove(r.Context(), r.PathValue("ref"), force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) start(w http.ResponseWriter, r *http.Request) error {
	if err := s.b.Compute.Start(r.Context(), r.PathValue("ref")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) stop(w http.ResponseWriter, r *http.Request) error {
	timeout, err := queryTimeout(r)
	if err != nil {
		return err
	}
	if err := s.b.Compute.Stop(r.Context(), r.PathValue("ref"), timeout); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) kill(w http.ResponseWriter, r *http.Request) error {
	sig, _, err := queryInt(r, "signal")
	if err != nil {
		return err
	}
	if sig < 0 || sig > 64 {
		return invalid("signal %d: want 0..64", sig)
	}
	if err := s.b.Compute.Kill(r.Context(), r.PathValue("ref"), sig); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// wait sends the status line as soon as the wait is set up, so a client
// learns at once that the container exists, and the result when it comes.
func (s *server) wait(w http.ResponseWriter, r *http.Request) error {
	cond := portlayer.WaitCondition(r.URL.Query().Get("condition"))
	switch cond {
	case "":
		cond = portlayer.WaitNotRunning
	case portlayer.WaitNotRunning, portlayer.WaitNextExit, portlayer.WaitRemoved:
	default:
		return invalid("condition %q: want not-running, next-exit or removed", cond)
	}
	ch, err := s.b.Compute.Wait(r.Context(), r.PathValue("ref"), cond)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	select {
	case res := <-ch:
		_ = json.NewEncoder(w).Encode(res)
	case <-r.Context().Done():
	}
	return nil
}

func (s *server) rename(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("name")
	if name == "" {
		return invalid("query parameter name is required")
	}
	if err := s.b.Compute.Rename(r.Context(), r.PathValue("ref"), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// need serves h when ok (its backend is set), else not_implemented.
func (s *server) need(ok bool, h func(w http.ResponseWriter, r *http.Request) error) func(w http.ResponseWriter, r *http.Request) error {
	if ok {
		return h
	}
	return func(http.ResponseWriter, *http.Request) error {
		return &portlayer.Error{Class: portlayer.ClassNotImplemented, Message: "this port layer does not serve that area"}
	}
}

// errNoPauser answers pause and unpause without a Pauser.
var errNoPauser = &portlayer.Error{Class: portlayer.ClassNotImplemented, Message: "this port layer cannot pause containers"}

func (s *server) pause(w http.ResponseWriter, r *http.Request) error {
	if s.b.Pauser == nil {
		return errNoPauser
	}
	if err := s.b.Pauser.Pause(r.Context(), r.PathValue("ref")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) unpause(w http.ResponseWriter, r *http.Request) error {
	if s.b.Pauser == nil {
		return errNoPauser
	}
	if err := s.b.Pauser.Unpause(r.Context(), r.PathValue("ref")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
