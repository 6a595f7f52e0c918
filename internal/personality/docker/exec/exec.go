// Package exec serves the Engine API v1.50 "Exec" group: POST
// /containers/{id}/exec (create), POST /exec/{id}/start (hijacked streams,
// or detached), POST /exec/{id}/resize, GET /exec/{id}/json, plus the
// container TTY resize, POST /containers/{id}/resize. Handlers translate;
// the port layer's Execs runs the processes.
package exec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types"
	"github.com/moby/moby/api/types/common"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// containerInspector is the part of portlayer.Compute the routes use.
type containerInspector interface {
	Inspect(ctx context.Context, idOrName string) (portlayer.Container, error)
}

// Router serves the exec routes.
type Router struct {
	execs   portlayer.Execs
	compute containerInspector
	log     *slog.Logger
}

// NewRouter returns the exec routes over the port layer.
func NewRouter(execs portlayer.Execs, compute containerInspector, log *slog.Logger) *Router {
	return &Router{execs: execs, compute: compute, log: log}
}

// Routes returns the route table.
func (rt *Router) Routes() []httputils.Route {
	return []httputils.Route{
		httputils.NewRoute(http.MethodPost, "/containers/{name}/exec", rt.postCreate),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/resize", rt.postContainerResize),
		httputils.NewRoute(http.MethodPost, "/exec/{id}/start", rt.postStart),
		httputils.NewRoute(http.MethodPost, "/exec/{id}/resize", rt.postResize),
		httputils.NewRoute(http.MethodGet, "/exec/{id}/json", rt.getInspect),
	}
}

func containerErr(name string, err error) error {
	if errdefs.IsNotFound(err) {
		return httputils.Classify(errdefs.ErrNotFound, err, "No such container: "+name)
	}
	if errdefs.IsConflict(err) {
		return httputils.Classify(errdefs.ErrConflict, err, httputils.PortLayerText(err))
	}
	return err
}

func execErr(id string, err error) error {
	if errdefs.IsNotFound(err) {
		return httputils.Classify(errdefs.ErrNotFound, err, "No such exec instance: "+id)
	}
	if errdefs.IsConflict(err) {
		return httputils.Classify(errdefs.ErrConflict, err, httputils.PortLayerText(err))
	}
	return err
}

// postCreate serves POST /containers/{id}/exec: 201 {"Id": "..."}; 404 for
// a missing container, 409 "container <id> is not running", 400 without a
// command.
func (rt *Router) postCreate(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	var req container.ExecCreateRequest
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	if len(req.Cmd) == 0 {
		return httputils.InvalidArgument("No exec command specified")
	}
	// runc refuses a relative cwd ("Cwd must be an absolute path"); the
	// guest would resolve it outside the container's root, so refuse it
	// here, with dockerd's text for the same mistake at create.
	if req.WorkingDir != "" {
		if !path.IsAbs(req.WorkingDir) {
			return httputils.InvalidArgument("the working directory '%s' is invalid, it needs to be an absolute path", req.WorkingDir)
		}
		req.WorkingDir = path.Clean(req.WorkingDir)
	}
	spec := portlayer.ExecSpec{
		Args: req.Cmd, Env: req.Env, WorkingDir: req.WorkingDir, User: req.User, Tty: req.Tty,
		AttachStdin: req.AttachStdin, AttachStdout: req.AttachStdout, AttachStderr: req.AttachStderr,
	}
	if req.ConsoleSize != nil && httputils.VersionAtLeast(ctx, "1.42") {
		spec.ConsoleRows, spec.ConsoleCols = req.ConsoleSize[0], req.ConsoleSize[1]
	}
	id, err := rt.execs.CreateExec(ctx, name, spec)
	if err != nil {
		var ue *portlayer.UserError
		if errors.As(err, &ue) {
			return httputils.Classify(errdefs.ErrInvalidArgument, err, ue.Message)
		}
		return containerErr(name, err)
	}
	return httputils.WriteJSON(w, http.StatusCreated, container.ExecCreateResponse(common.IDResponse{ID: id}))
}

// getInspect serves GET /exec/{id}/json.
func (rt *Router) getInspect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	e, err := rt.execs.InspectExec(r.Context(), vars["id"])
	if err != nil {
		return execErr(vars["id"], err)
	}
	resp := container.ExecInspectResponse{
		ID: e.ID, Running: e.Running, ExitCode: e.ExitCode, ContainerID: e.ContainerID, Pid: e.Pid,
		OpenStdin: e.Spec.AttachStdin, OpenStdout: e.Spec.AttachStdout, OpenStderr: e.Spec.AttachStderr,
		ProcessConfig: &container.ExecProcessConfig{Tty: e.Spec.Tty, User: e.Spec.User},
	}
	if len(e.Spec.Args) > 0 {
		resp.ProcessConfig.Entrypoint = e.Spec.Args[0]
		resp.ProcessConfig.Arguments = e.Spec.Args[1:]
	}
	return httputils.WriteJSON(w, http.StatusOK, resp)
}

// postResize serves POST /exec/{id}/resize?h=&w=.
func (rt *Router) postResize(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	h, wd, err := httputils.ResizeSize(r)
	if err != nil {
		return err
	}
	if err := rt.execs.ResizeExec(r.Context(), vars["id"], h, wd); err != nil {
		return execErr(vars["id"], err)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// postContainerResize serves POST /containers/{id}/resize?h=&w=: the main
// process's TTY size. A container without a running process answers 409
// as dockerd does ("Container … is not running").
func (rt *Router) postContainerResize(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	h, wd, err := httputils.ResizeSize(r)
	if err != nil {
		return err
	}
	if err := rt.execs.Resize(r.Context(), vars["name"], h, wd); err != nil {
		return containerErr(vars["name"], err)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// postStart serves POST /exec/{id}/start. Detached: starts and answers 200.
// Otherwise the connection is hijacked ("101 UPGRADED" when asked) and
// carries the process's streams until the process exits: raw when the
// start request asks for a TTY, else multiplexed (stdcopy), as dockerd
// frames them by the start request's Tty, not the exec's (a client that
// created a TTY exec and starts it without Tty reads stdcopy frames); the
// Content-Type says multiplexed on API ≥ 1.42. The console size is the
// start request's, else the exec create's. As with dockerd, an
// error after the hijack (e.g. executable not found) is written into the
// stream as text, and the client reads the exit code from GET /exec/{id}/json.
func (rt *Router) postStart(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	id := vars["id"]
	var req container.ExecStartRequest
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	e, err := rt.execs.InspectExec(ctx, id)
	if err != nil {
		return execErr(id, err)
	}
	opts := portlayer.ExecStartOptions{Detach: req.Detach}
	if req.ConsoleSize != nil && req.Tty && httputils.VersionAtLeast(ctx, "1.42") {
		// dockerd: no console size before 1.42, and none without a TTY.
		opts.Rows, opts.Cols = req.ConsoleSize[0], req.ConsoleSize[1]
	}
	if req.Detach {
		if err := rt.execs.StartExec(ctx, id, opts); err != nil {
			return startErr(id, err)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return httputils.InvalidArgument("error attaching to exec %s, hijack connection missing", id)
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil
	}
	defer conn.Close()
	_, upgrade := r.Header["Upgrade"]
	contentType := types.MediaTypeRawStream
	if upgrade && !req.Tty && httputils.VersionAtLeast(ctx, "1.42") {
		contentType = types.MediaTypeMultiplexedStream
	}
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\n\r\n", contentType)
	if upgrade {
		head = fmt.Sprintf("HTTP/1.1 101 UPGRADED\r\nContent-Type: %s\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n", contentType)
	}
	if _, err := conn.Write([]byte(head)); err != nil {
		return nil
	}
	var in io.Reader = conn
	if brw != nil && brw.Reader.Buffered() > 0 {
		in = io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), conn)
	}
	mux := httputils.NewMux(conn)
	var stdout, stderr io.Writer
	if req.Tty {
		stdout, stderr = mux.Raw(), mux.Raw()
	} else {
		stdout, stderr = mux.Writer(httputils.StreamStdout), mux.Writer(httputils.StreamStderr)
	}
	if e.Spec.AttachStdout {
		opts.Stdout = stdout
	}
	if e.Spec.AttachStderr {
		opts.Stderr = stderr
	}
	if e.Spec.AttachStdin {
		opts.Stdin = in
	}
	if err := rt.execs.StartExec(ctx, id, opts); err != nil {
		msg := startErr(id, err).Error()
		_, _ = stdout.Write([]byte(msg + "\r\n"))
		rt.log.InfoContext(ctx, "exec start failed", "exec", id, "error", err)
	}
	if tc, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	return nil
}

// startErr gives a start failure Docker's text: the guest's reason (the
// port layer's StartFailed) wrapped as the OCI runtime's "exec failed"
// message, which the CLI shows.
func startErr(id string, err error) error {
	if pe, _, ok := portlayer.StartFailure(err); ok {
		return httputils.Classify(errdefs.ErrInvalidArgument, err,
			"OCI runtime exec failed: exec failed: unable to start container process: "+pe.Message+": unknown")
	}
	return execErr(id, err)
}
