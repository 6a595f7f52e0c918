package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
)

var (
	_ portlayer.Execs       = (*Client)(nil)
	_ portlayer.Interaction = (*Client)(nil)
)

// dial opens a connection to the server (the unix socket, or host:port).
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	if c.sock != "" {
		return d.DialContext(ctx, "unix", c.sock)
	}
	u, err := url.Parse(c.base)
	if err != nil {
		return nil, err
	}
	td := tls.Dialer{NetDialer: &d, Config: c.tls}
	return td.DialContext(ctx, "tcp", u.Host)
}

// stream opens an upgraded stream to path: it returns the connection and
// a reader of the server's frames. A refusal before the upgrade is the
// server's Error.
func (c *Client) openStream(ctx context.Context, path string, q url.Values) (net.Conn, *bufio.Reader, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, nil, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: port layer unreachable", Err: err}
	}
	u := "/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://portlayer"+u, nil)
	if err != nil {
		conn.Close()
		return nil, nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + err.Error()}
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", api.UpgradeProtocol)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, nil, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: send the stream request", Err: err}
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, nil, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: read the stream answer", Err: err}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		defer resp.Body.Close()
		return nil, nil, decodeError(resp)
	}
	return conn, br, nil
}

// copyStdin copies r to conn, then half-closes it (the process's EOF).
func copyStdin(conn net.Conn, r io.Reader) {
	_, _ = io.Copy(conn, r)
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// attachment is an Attach over the API.
type attachment struct {
	conn net.Conn
	done chan struct{}
	once sync.Once
	err  error
}

func (a *attachment) Done() <-chan struct{} { return a.done }

func (a *attachment) Close() error {
	a.once.Do(func() { a.conn.Close() })
	return nil
}

// Err is why the stream ended, once Done is closed (nil for an end the
// server reported as clean).
func (a *attachment) Err() error { return a.err }

// Attach implements portlayer.Interaction's Attach over an upgraded
// stream: it returns once the server has taken the stream over, so a
// Start that follows loses nothing.
func (c *Client) Attach(ctx context.Context, idOrName string, opts portlayer.AttachOptions) (portlayer.Attachment, error) {
	q := url.Values{"stdin": {strconv.FormatBool(opts.Stdin != nil)}, "stdout": {strconv.FormatBool(opts.Stdout != nil)},
		"stderr": {strconv.FormatBool(opts.Stderr != nil)}, "logs": {strconv.FormatBool(opts.Logs)}, "stream": {strconv.FormatBool(opts.Stream)}}
	conn, br, err := c.openStream(ctx, ref(idOrName)+"/attach", q)
	if err != nil {
		return nil, err
	}
	a := &attachment{conn: conn, done: make(chan struct{})}
	if opts.Stdin != nil {
		go copyStdin(conn, opts.Stdin)
	}
	go func() {
		defer close(a.done)
		end, err := api.ReadFrames(br, opts.Stdout, opts.Stderr)
		if err == nil && end.Error != nil {
			err = end.Error
		}
		a.err = err
		_ = a.Close()
	}()
	context.AfterFunc(ctx, func() { _ = a.Close() })
	return a, nil
}

// CreateExec implements portlayer.Execs.
func (c *Client) CreateExec(ctx context.Context, idOrName string, spec portlayer.ExecSpec) (string, error) {
	var out struct{ ID string }
	err := c.do(ctx, http.MethodPost, ref(idOrName)+"/execs", nil, spec, &out)
	return out.ID, err
}

// InspectExec implements portlayer.Execs.
func (c *Client) InspectExec(ctx context.Context, execID string) (portlayer.ExecInfo, error) {
	var info portlayer.ExecInfo
	err := c.do(ctx, http.MethodGet, "/execs/"+url.PathEscape(execID), nil, nil, &info)
	return info, err
}

// StartExec implements portlayer.Execs over an upgraded stream; it
// returns when the server's end frame comes (the process has exited and
// its output was delivered; with Detach, once it has started). A run cut
// off by Timeout (sent in whole milliseconds, at least one) is the
// server's error, which also matches context.DeadlineExceeded, as the
// in-process error does.
func (c *Client) StartExec(ctx context.Context, execID string, opts portlayer.ExecStartOptions) error {
	q := url.Values{"rows": {strconv.Itoa(int(opts.Rows))}, "cols": {strconv.Itoa(int(opts.Cols))}}
	if opts.Detach {
		q.Set("detach", "true")
	}
	if opts.Timeout > 0 {
		q.Set("timeoutMs", strconv.FormatInt(max(opts.Timeout.Milliseconds(), 1), 10))
	}
	conn, br, err := c.openStream(ctx, "/execs/"+url.PathEscape(execID)+"/start", q)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if opts.Stdin != nil {
		go copyStdin(conn, opts.Stdin)
	}
	end, err := api.ReadFrames(br, opts.Stdout, opts.Stderr)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if end.Error != nil && end.TimedOut {
		return timedOut{end.Error}
	}
	if end.Error != nil {
		return end.Error
	}
	return nil
}

// timedOut is an exec's run its timeout cut off, as the server reported
// it: the server's Error, also matching context.DeadlineExceeded.
type timedOut struct{ pe *portlayer.Error }

func (e timedOut) Error() string { return e.pe.Error() }

// Unwrap returns the server's Error and context.DeadlineExceeded.
func (e timedOut) Unwrap() []error { return []error{e.pe, context.DeadlineExceeded} }

// ResizeExec implements portlayer.Execs.
func (c *Client) ResizeExec(ctx context.Context, execID string, rows, cols uint) error {
	return c.do(ctx, http.MethodPost, "/execs/"+url.PathEscape(execID)+"/resize", sizeQuery(rows, cols), nil, nil)
}

// Resize implements portlayer.Execs.
func (c *Client) Resize(ctx context.Context, idOrName string, rows, cols uint) error {
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/resize", sizeQuery(rows, cols), nil, nil)
}

func sizeQuery(rows, cols uint) url.Values {
	return url.Values{"rows": {strconv.FormatUint(uint64(rows), 10)}, "cols": {strconv.FormatUint(uint64(cols), 10)}}
}
