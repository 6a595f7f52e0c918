package api

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// Headers that carry a JSON value beside a tar body (base64 of the JSON).
const (
	// HeaderPathStat is GetArchive's PathStat.
	HeaderPathStat = "X-Vch-Path-Stat"
	// HeaderContainer is ChangesLayer's container record.
	HeaderContainer = "X-Vch-Container"
)

func headerJSON(w http.ResponseWriter, k string, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set(k, base64.StdEncoding.EncodeToString(b))
}

func (s *server) host(w http.ResponseWriter, r *http.Request) error {
	h, err := s.b.Host(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *server) top(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.b.Monitor.Top(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []portlayer.ProcessInfo{}
	}
	writeJSON(w, http.StatusOK, ps)
	return nil
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) error {
	st, err := s.b.Monitor.Stats(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *server) connect(w http.ResponseWriter, r *http.Request) error {
	var spec portlayer.EndpointSpec
	if err := decodeBody(w, r, &spec); err != nil {
		return err
	}
	if err := s.b.NetworkConnector.Connect(r.Context(), r.PathValue("ref"), spec); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) disconnect(w http.ResponseWriter, r *http.Request) error {
	network, err := requireRef(r, "network")
	if err != nil {
		return err
	}
	force, err := queryBool(r, "force")
	if err != nil {
		return err
	}
	if err := s.b.NetworkConnector.Disconnect(r.Context(), r.PathValue("ref"), network, force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) restart(w http.ResponseWriter, r *http.Request) error {
	rs, ok := s.b.Compute.(portlayer.Restarter)
	if !ok {
		return &portlayer.Error{Class: portlayer.ClassNotImplemented, Message: "this port layer cannot restart containers"}
	}
	sig, _, err := queryInt(r, "signal")
	if err != nil {
		return err
	}
	timeout, err := queryTimeout(r)
	if err != nil {
		return err
	}
	if err := rs.Restart(r.Context(), r.PathValue("ref"), sig, timeout); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) update(w http.ResponseWriter, r *http.Request) error {
	var u portlayer.ContainerUpdate
	if err := decodeBody(w, r, &u); err != nil {
		return err
	}
	c, err := s.b.Updater.Update(r.Context(), r.PathValue("ref"), u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *server) forgetExec(w http.ResponseWriter, r *http.Request) error {
	f, ok := s.b.Execs.(portlayer.ExecForgetter)
	if !ok {
		return &portlayer.Error{Class: portlayer.ClassNotImplemented, Message: "this port layer keeps exec records"}
	}
	if err := f.ForgetExec(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) publish(w http.ResponseWriter, r *http.Request) error {
	var e portlayer.Event
	if err := decodeBody(w, r, &e); err != nil {
		return err
	}
	if e.Type == "" || e.Action == "" {
		return invalid("an event needs Type and Action")
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	s.b.Publish(e)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) login(w http.ResponseWriter, r *http.Request) error {
	auth, err := registryAuth(r)
	if err != nil {
		return err
	}
	if err := s.b.Login.Login(r.Context(), r.URL.Query().Get("server"), auth); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) statPath(w http.ResponseWriter, r *http.Request) error {
	path, err := requireRef(r, "path")
	if err != nil {
		return err
	}
	st, err := s.b.Archives.StatPath(r.Context(), r.PathValue("ref"), path)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// copyTar streams rc as the tar body; a failure mid-stream aborts the
// connection, so the client's read fails instead of seeing a short tar.
func copyTar(w http.ResponseWriter, rc io.ReadCloser) {
	defer rc.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		panic(http.ErrAbortHandler)
	}
}

func (s *server) getArchive(w http.ResponseWriter, r *http.Request) error {
	path, err := requireRef(r, "path")
	if err != nil {
		return err
	}
	st, rc, err := s.b.Archives.GetArchive(r.Context(), r.PathValue("ref"), path)
	if err != nil {
		return err
	}
	headerJSON(w, HeaderPathStat, st)
	copyTar(w, rc)
	return nil
}

func (s *server) putArchive(w http.ResponseWriter, r *http.Request) error {
	path, err := requireRef(r, "path")
	if err != nil {
		return err
	}
	var opts portlayer.PutArchiveOptions
	if opts.NoOverwriteDirNonDir, err = queryBool(r, "noOverwriteDirNonDir"); err != nil {
		return err
	}
	if opts.CopyUIDGID, err = queryBool(r, "copyUIDGID"); err != nil {
		return err
	}
	if err := s.b.Archives.PutArchive(r.Context(), r.PathValue("ref"), path, r.Body, opts); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) export(w http.ResponseWriter, r *http.Request) error {
	rc, err := s.b.Archives.Export(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	copyTar(w, rc)
	return nil
}

func (s *server) changes(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.b.Archives.Changes(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	if cs == nil {
		cs = []portlayer.Change{}
	}
	writeJSON(w, http.StatusOK, cs)
	return nil
}

func (s *server) changesLayer(w http.ResponseWriter, r *http.Request) error {
	c, rc, err := s.b.Archives.ChangesLayer(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	headerJSON(w, HeaderContainer, c)
	copyTar(w, rc)
	return nil
}

// CommitOptions is a commit's query parameter "options": the CommitSpec
// without its layer, and whether the body is one.
type CommitOptions struct {
	portlayer.CommitSpec
	HasLayer bool
}

func (s *server) commit(w http.ResponseWriter, r *http.Request) error {
	var o CommitOptions
	if err := decodeJSON(strings.NewReader(r.URL.Query().Get("options")), &o); err != nil {
		return invalid("query parameter options: %v", err)
	}
	o.Layer = nil
	if o.HasLayer {
		o.Layer = r.Body
	}
	img, err := s.b.Committer.Commit(r.Context(), o.CommitSpec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, img)
	return nil
}
