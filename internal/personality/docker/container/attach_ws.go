package container

import (
	"net/http"
	"sync"

	"github.com/moby/term"
	"golang.org/x/net/websocket"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// getAttachWS serves GET /containers/{id}/attach/ws (Engine API v1.50
// "Attach to a container via a websocket", RFC 6455): the container's
// output goes out unmultiplexed (the websocket keeps messages apart), in
// binary frames from API 1.28 on, and messages in are its stdin. From API
// 1.42 the stdin, stdout and stderr parameters select the streams; before,
// all three are attached, as dockerd does. logs, stream and detachKeys as
// for POST attach.
func (rt *Router) getAttachWS(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	keys, err := detachKeys(r)
	if err != nil {
		return err
	}
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	stdin, stdout, stderr := true, true, true
	if httputils.VersionAtLeast(ctx, "1.42") {
		stdin, stdout, stderr = httputils.BoolValue(r, "stdin"), httputils.BoolValue(r, "stdout"), httputils.BoolValue(r, "stderr")
	}
	binary := httputils.VersionAtLeast(ctx, "1.28")
	var serveErr error
	websocket.Server{Handler: func(ws *websocket.Conn) {
		if binary {
			ws.PayloadType = websocket.BinaryFrame
		}
		out := &wsWriter{ws: ws}
		opts := portlayer.AttachOptions{Logs: httputils.BoolValue(r, "logs"), Stream: httputils.BoolValue(r, "stream")}
		if stdin {
			if c.Spec.Tty {
				opts.Stdin = term.NewEscapeProxy(ws, keys)
			} else {
				opts.Stdin = ws
			}
		}
		if stdout {
			opts.Stdout = out
		}
		if stderr {
			opts.Stderr = out
		}
		att, err := rt.interact.Attach(ctx, c.ID, opts)
		if err != nil {
			serveErr = err
			return
		}
		defer att.Close()
		select {
		case <-att.Done():
		case <-ctx.Done():
		}
	}}.ServeHTTP(w, r)
	if serveErr != nil {
		rt.log.ErrorContext(ctx, "websocket attach", "container", c.ID, "error", serveErr)
	}
	return nil
}

// wsWriter sends each write as one websocket message; stdout and stderr
// share it.
type wsWriter struct {
	mu sync.Mutex
	ws *websocket.Conn
}

func (w *wsWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ws.Write(p)
}
