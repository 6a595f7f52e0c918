package container

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// LogTimeFormat is the timestamp prefix format of `docker logs -t`: RFC 3339
// with exactly nine fractional digits (dockerd's RFC3339NanoFixed).
const LogTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// ParseTimestamp parses a logs since/until value as the CLI sends it: Unix
// seconds with an optional fraction ("1700000000.123456789"). Empty is the
// zero time.
func ParseTimestamp(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	secStr, fracStr, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil {
		if t, terr := time.Parse(time.RFC3339Nano, s); terr == nil {
			return t, nil
		}
		return time.Time{}, httputils.Classify(errdefs.ErrInvalidArgument, err, "invalid timestamp: "+strconv.Quote(s))
	}
	var nsec int64
	if fracStr != "" {
		if len(fracStr) > 9 {
			fracStr = fracStr[:9]
		}
		fracStr += strings.Repeat("0", 9-len(fracStr))
		if nsec, err = strconv.ParseInt(fracStr, 10, 64); err != nil {
			return time.Time{}, httputils.Classify(errdefs.ErrInvalidArgument, err, "invalid timestamp: "+strconv.Quote(s))
		}
	}
	return time.Unix(sec, nsec), nil
}

// errNoLog is dockerd's 501 for reading the log of a container whose
// logging driver is "none" (its logger.ErrReadLogsNotSupported).
func errNoLog(cause error) error {
	return httputils.Classify(errdefs.ErrNotImplemented, cause, "configured logging driver does not support reading")
}

// getLogs serves GET /containers/{id}/logs (Engine API v1.50 "Get container
// logs"): stdcopy-framed unless the container has a TTY (then raw), each
// message prefixed with its RFC 3339 time when timestamps=1. Errors after the
// 200 has been sent end the stream.
func (rt *Router) getLogs(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	stdout, stderr := httputils.BoolValue(r, "stdout"), httputils.BoolValue(r, "stderr")
	if !stdout && !stderr {
		return httputils.InvalidArgument("Bad parameters: you must choose at least one stream")
	}
	opts := portlayer.LogOptions{Stdout: stdout, Stderr: stderr, Follow: httputils.BoolValue(r, "follow"), Tail: -1}
	if t := r.Form.Get("tail"); t != "" && t != "all" {
		if n, err := strconv.Atoi(t); err == nil && n >= 0 {
			opts.Tail = n
		}
	}
	// dockerd's order: the container, its logging driver, then the
	// times.
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	if c.Spec.NoLog {
		return errNoLog(nil)
	}
	if opts.Since, err = ParseTimestamp(r.Form.Get("since")); err != nil {
		return err
	}
	if opts.Until, err = ParseTimestamp(r.Form.Get("until")); err != nil {
		return err
	}
	timestamps := httputils.BoolValue(r, "timestamps")
	msgs, err := rt.interact.Logs(ctx, c.ID, opts)
	if err != nil {
		if pe := portlayer.AsError(err); pe != nil && pe.Reason == portlayer.ReasonNoLog {
			return errNoLog(err)
		}
		return containerErr("logs", name, err)
	}
	contentType := types.MediaTypeRawStream
	if !c.Spec.Tty && httputils.VersionAtLeast(ctx, "1.42") {
		contentType = types.MediaTypeMultiplexedStream
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	httputils.Flush(w)

	mux := httputils.NewMux(w)
	var out, errOut io.Writer = mux.Writer(httputils.StreamStdout), mux.Writer(httputils.StreamStderr)
	if c.Spec.Tty {
		out, errOut = mux.Raw(), mux.Raw()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			dst := out
			if m.Stream == "stderr" {
				dst = errOut
			}
			data := m.Data
			if timestamps {
				data = append([]byte(m.Time.UTC().Format(LogTimeFormat)+" "), data...)
			}
			if _, err := dst.Write(data); err != nil {
				return nil // the client went away
			}
		}
	}
}
