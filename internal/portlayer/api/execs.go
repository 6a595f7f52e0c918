package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// attach upgrades and connects the container's streams: stdin from the
// client (when ?stdin=true), output as frames; the end frame follows the
// attachment's end.
func (s *server) attach(w http.ResponseWriter, r *http.Request) error {
	var o struct{ stdin, stdout, stderr, logs, stream bool }
	for k, p := range map[string]*bool{"stdin": &o.stdin, "stdout": &o.stdout, "stderr": &o.stderr, "logs": &o.logs, "stream": &o.stream} {
		v, err := queryBool(r, k)
		if err != nil {
			return err
		}
		*p = v
	}
	if _, err := s.b.Compute.Inspect(r.Context(), r.PathValue("ref")); err != nil {
		return err // not_found before the upgrade
	}
	u, err := upgrade(w, r)
	if err != nil {
		return err
	}
	opts := portlayer.AttachOptions{Logs: o.logs, Stream: o.stream}
	if o.stdout {
		opts.Stdout = u.stdout()
	}
	if o.stderr {
		opts.Stderr = u.stderr()
	}
	if stdin := u.readClient(o.stdin); stdin != nil {
		opts.Stdin = stdin
	}
	// The attachment outlives the request's context, which ends with the
	// hijack; the connection's end, or the client's leaving, is its end.
	ctx := r.Context()
	att, err := s.b.Interaction.Attach(contextWithoutCancel(ctx), r.PathValue("ref"), opts)
	if err != nil {
		u.end(err, nil)
		return nil
	}
	select {
	case <-att.Done():
	case <-u.gone:
	}
	u.end(nil, nil)
	_ = att.Close()
	return nil
}

func (s *server) execCreate(w http.ResponseWriter, r *http.Request) error {
	var spec portlayer.ExecSpec
	if err := decodeBody(w, r, &spec); err != nil {
		return err
	}
	if len(spec.Args) == 0 {
		return invalid("exec spec: Args is empty: nothing to run")
	}
	id, err := s.b.Execs.CreateExec(r.Context(), r.PathValue("ref"), spec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"ID": id})
	return nil
}

func (s *server) execInspect(w http.ResponseWriter, r *http.Request) error {
	info, err := s.b.Execs.InspectExec(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

// execStart upgrades and runs the exec with the stream as its stdio; the
// end frame carries its exit code (or why it did not run). ?detach=true
// ends the stream once the process has started (its output dropped);
// ?timeoutMs= bounds its run as ExecStartOptions.Timeout does, the end
// frame's TimedOut telling that it ran past.
func (s *server) execStart(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	rows, _, err := queryInt(r, "rows")
	if err != nil {
		return err
	}
	cols, _, err := queryInt(r, "cols")
	if err != nil {
		return err
	}
	if rows < 0 || cols < 0 {
		return invalid("rows and cols must not be negative")
	}
	detach, err := queryBool(r, "detach")
	if err != nil {
		return err
	}
	timeoutMs, _, err := queryInt(r, "timeoutMs")
	if err != nil {
		return err
	}
	if timeoutMs < 0 {
		return invalid("timeoutMs must not be negative")
	}
	info, err := s.b.Execs.InspectExec(r.Context(), id)
	if err != nil {
		return err // not_found before the upgrade
	}
	u, err := upgrade(w, r)
	if err != nil {
		return err
	}
	opts := portlayer.ExecStartOptions{Rows: uint(rows), Cols: uint(cols), Detach: detach, Timeout: time.Duration(timeoutMs) * time.Millisecond}
	if info.Spec.AttachStdout {
		opts.Stdout = u.stdout()
	}
	if info.Spec.AttachStderr {
		opts.Stderr = u.stderr()
	}
	if stdin := u.readClient(info.Spec.AttachStdin); stdin != nil {
		opts.Stdin = stdin
	}
	// The exec's stream ends with the exec or with the client's leaving
	// (the exec then runs on: a client's going away is no signal to the
	// process).
	sctx, cancel := context.WithCancel(contextWithoutCancel(r.Context()))
	defer cancel()
	go func() {
		select {
		case <-u.gone:
			cancel()
		case <-sctx.Done():
		}
	}()
	err = s.b.Execs.StartExec(sctx, id, opts)
	var code *int
	if after, ierr := s.b.Execs.InspectExec(contextWithoutCancel(r.Context()), id); ierr == nil {
		code = after.ExitCode
	}
	u.finish(err, EndFrame{ExitCode: code, TimedOut: opts.Timeout > 0 && errors.Is(err, context.DeadlineExceeded)})
	return nil
}

// resize parses ?rows=&cols= (both required, 1..65535).
func resizeQuery(r *http.Request) (uint, uint, error) {
	rows, okR, err := queryInt(r, "rows")
	if err != nil {
		return 0, 0, err
	}
	cols, okC, err := queryInt(r, "cols")
	if err != nil {
		return 0, 0, err
	}
	if !okR || !okC || rows < 1 || cols < 1 || rows > 65535 || cols > 65535 {
		return 0, 0, invalid("rows and cols are required, 1..65535")
	}
	return uint(rows), uint(cols), nil
}

func (s *server) execResize(w http.ResponseWriter, r *http.Request) error {
	rows, cols, err := resizeQuery(r)
	if err != nil {
		return err
	}
	if err := s.b.Execs.ResizeExec(r.Context(), r.PathValue("id"), rows, cols); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) containerResize(w http.ResponseWriter, r *http.Request) error {
	rows, cols, err := resizeQuery(r)
	if err != nil {
		return err
	}
	if err := s.b.Execs.Resize(r.Context(), r.PathValue("ref"), rows, cols); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
