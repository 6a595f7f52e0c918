package container

import (
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types"
	"github.com/moby/term"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// gate holds writes and reads until the hijacked connection is ready, so
// the port layer can register the attach (and replay logs) before the
// response head has been written.
type gate struct {
	ready chan struct{}
	once  sync.Once
	w     io.Writer
	r     io.Reader
}

func newGate() *gate { return &gate{ready: make(chan struct{})} }

// open sets the connection and releases blocked callers.
func (g *gate) open(r io.Reader, w io.Writer) {
	g.once.Do(func() {
		g.r, g.w = r, w
		close(g.ready)
	})
}

type gateWriter struct{ g *gate }

func (gw gateWriter) Write(p []byte) (int, error) {
	<-gw.g.ready
	if gw.g.w == nil {
		return 0, io.ErrClosedPipe
	}
	return gw.g.w.Write(p)
}

type gateReader struct{ g *gate }

func (gr gateReader) Read(p []byte) (int, error) {
	<-gr.g.ready
	if gr.g.r == nil {
		return 0, io.EOF
	}
	return gr.g.r.Read(p)
}

// defaultDetachKeys is Docker's detach sequence, Ctrl-P Ctrl-Q.
var defaultDetachKeys = []byte{16, 17}

// postAttach serves POST /containers/{id}/attach?stream=&stdin=&stdout=
// &stderr=&logs= (Engine API v1.50 "Attach to a container"). With an
// "Upgrade: tcp" request header it answers "101 UPGRADED" (Content-Type
// application/vnd.docker.multiplexed-stream, or raw-stream for a TTY or API
// < 1.42), otherwise "200 OK" with the raw-stream type, then hijacks the
// connection. The attach is registered with the port layer before the
// response head is written, because the CLI starts the container as soon
// as it reads it. The connection closes once the attachment is done and all
// output has been written.
func (rt *Router) postAttach(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	// Like dockerd, bad detach keys are refused first, whether or not
	// stdin is attached.
	keys, err := detachKeys(r)
	if err != nil {
		return err
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return httputils.InvalidArgument("error attaching to container %s, hijack connection missing", name)
	}
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	_, upgrade := r.Header["Upgrade"]
	contentType := types.MediaTypeRawStream
	if upgrade && !c.Spec.Tty && httputils.VersionAtLeast(ctx, "1.42") {
		contentType = types.MediaTypeMultiplexedStream
	}

	g := newGate()
	mux := httputils.NewMux(gateWriter{g})
	opts := portlayer.AttachOptions{Logs: httputils.BoolValue(r, "logs"), Stream: httputils.BoolValue(r, "stream")}
	if httputils.BoolValue(r, "stdin") {
		// The detach sequence (default Ctrl-P Ctrl-Q) ends the attach
		// without touching the container: the proxy's read fails with an
		// EscapeError and the port layer then detaches.
		// Like dockerd, only a TTY attach watches for the detach sequence:
		// piped binary stdin may hold those bytes.
		if c.Spec.Tty {
			opts.Stdin = term.NewEscapeProxy(gateReader{g}, keys)
		} else {
			opts.Stdin = gateReader{g}
		}
	}
	if c.Spec.Tty {
		raw := mux.Raw()
		if httputils.BoolValue(r, "stdout") {
			opts.Stdout = raw
		}
		if httputils.BoolValue(r, "stderr") {
			opts.Stderr = raw
		}
	} else {
		if httputils.BoolValue(r, "stdout") {
			opts.Stdout = mux.Writer(httputils.StreamStdout)
		}
		if httputils.BoolValue(r, "stderr") {
			opts.Stderr = mux.Writer(httputils.StreamStderr)
		}
	}

	// Replaying the log of a container that keeps none fails after the
	// hijack, in the stream, as with dockerd (whose "none" driver is not a
	// registered logger it could read from).
	noLog := opts.Logs && c.Spec.NoLog
	var att portlayer.Attachment
	if !noLog {
		if att, err = rt.interact.Attach(ctx, c.ID, opts); err != nil {
			g.open(nil, nil)
			return containerErr("attach", name, err)
		}
		defer att.Close()
	}

	conn, brw, err := hj.Hijack()
	if err != nil {
		g.open(nil, nil)
		rt.log.ErrorContext(ctx, "attach: hijack failed", "container", c.ID, "error", err)
		return nil
	}
	defer conn.Close()
	var head string
	if upgrade {
		head = fmt.Sprintf("HTTP/1.1 101 UPGRADED\r\nContent-Type: %s\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n", contentType)
	} else {
		head = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\n\r\n", contentType)
	}
	if _, err := conn.Write([]byte(head)); err != nil {
		g.open(nil, nil)
		return nil // the client went away before the head
	}
	// Bytes the server buffered after the request head belong to stdin.
	var in io.Reader = conn
	if brw != nil && brw.Reader.Buffered() > 0 {
		in = io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), conn)
	}
	g.open(in, conn)
	if noLog {
		var w io.Writer = mux.Raw()
		if contentType == types.MediaTypeMultiplexedStream {
			w = mux.Writer(httputils.StreamStdout)
		}
		_, _ = io.WriteString(w, "Error attaching: failed to get logging factory: logger: no log driver named 'none' is registered\n")
		return nil
	}

	select {
	case <-att.Done():
	case <-ctx.Done():
	}
	// All output reached the writers before Done; the writers write through
	// to conn unbuffered, so closing now loses nothing. Half-close first so
	// the client reads EOF after the last frame.
	if tc, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	return nil
}

// detachKeys reads the detachKeys parameter (default Ctrl-P Ctrl-Q);
// dockerd's 400 "Invalid detach keys (…) provided" for a bad one.
func detachKeys(r *http.Request) ([]byte, error) {
	v := r.Form.Get("detachKeys")
	if v == "" {
		return defaultDetachKeys, nil
	}
	k, err := term.ToBytes(v)
	if err != nil {
		return nil, httputils.Classify(errdefs.ErrInvalidArgument, err, "Invalid detach keys ("+v+") provided")
	}
	return k, nil
}
