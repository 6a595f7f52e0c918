// Package client is the Go client of the port layer's network API
// (package api, version 1). A *Client implements the same Go interfaces
// as the in-process port layer (portlayer.Compute, portlayer.Pauser), so
// a front end runs on either; errors come back as *portlayer.Error with
// the fields the server sent, so errdefs class checks work unchanged.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// Client talks to one port layer server. Safe for concurrent use.
type Client struct {
	base string      // scheme://host, no trailing slash
	sock string      // the unix socket's path, "" for TCP
	tls  *tls.Config // TCP's mutual TLS
	hc   *http.Client
}

// New returns a client for addr: "unix:///PATH.sock", or
// "tcp://HOST:PORT" (also "https://HOST:PORT") with tlsCfg, which must
// be set there: the server serves TCP only with mutual TLS (see
// package tlsfiles for a configuration from PEM files). InvalidArgument
// for another form, or TCP without tlsCfg.
func New(addr string, tlsCfg *tls.Config) (*Client, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if path == "" {
			return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: empty socket path in " + addr}
		}
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return &Client{base: "http://portlayer", sock: path, hc: &http.Client{Transport: tr}}, nil
	}
	hostPort, ok := strings.CutPrefix(addr, "tcp://")
	if !ok {
		hostPort, ok = strings.CutPrefix(addr, "https://")
	}
	if ok && hostPort != "" {
		if tlsCfg == nil {
			return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + addr + ": TCP needs mutual TLS: give the CA and a client certificate"}
		}
		cfg := tlsCfg.Clone()
		tr := &http.Transport{TLSClientConfig: cfg}
		return &Client{base: "https://" + strings.TrimSuffix(hostPort, "/"), tls: cfg, hc: &http.Client{Transport: tr}}, nil
	}
	return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: address " + addr + ": want unix:///PATH or tcp://HOST:PORT"}
}

var (
	_ portlayer.Compute = (*Client)(nil)
	_ portlayer.Pauser  = (*Client)(nil)
)

// do sends a request to path (under /v1) with query q and JSON body in
// (nil: none); it decodes a 2xx body into out (nil: none) and turns any
// other answer into the *portlayer.Error it carries. An unreachable
// server is unavailable.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	resp, err := c.send(ctx, method, path, q, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return &portlayer.Error{Class: portlayer.ClassUnavailable, Message: fmt.Sprintf("client: %s %s: decode the answer", method, path), Err: err}
	}
	return nil
}

// send is do without reading a 2xx body.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: encode the request", Err: err}
		}
		body = bytes.NewReader(b)
	}
	u := c.base + "/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + err.Error()}
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.roundTrip(ctx, req)
}

// decodeError reads the Error body of a failed answer.
func decodeError(resp *http.Response) error {
	var pe portlayer.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(b, &pe); err != nil || pe.Class == "" {
		return &portlayer.Error{Class: classOfStatus(resp.StatusCode), Message: fmt.Sprintf("port layer answered %s: %s", resp.Status, bytes.TrimSpace(b))}
	}
	return &pe
}

// classOfStatus guesses a class from a status when the body has none.
func classOfStatus(code int) portlayer.ErrorClass {
	switch code {
	case http.StatusNotFound:
		return portlayer.ClassNotFound
	case http.StatusConflict:
		return portlayer.ClassConflict
	case http.StatusNotModified:
		return portlayer.ClassNotModified
	case http.StatusBadRequest:
		return portlayer.ClassInvalidArgument
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return portlayer.ClassUnavailable
	case http.StatusNotImplemented:
		return portlayer.ClassNotImplemented
	case http.StatusForbidden:
		return portlayer.ClassPermissionDenied
	case http.StatusUnauthorized:
		return portlayer.ClassUnauthenticated
	}
	return portlayer.ClassInternal
}

// ref is the path of a container by ID, prefix or name (a name's
// leading slash, which the port layer ignores, is left out).
func ref(idOrName string) string {
	return "/containers/" + url.PathEscape(strings.TrimPrefix(idOrName, "/"))
}

// Create implements portlayer.Compute: POST /v1/containers.
func (c *Client) Create(ctx context.Context, spec portlayer.ContainerSpec) (portlayer.Container, error) {
	var out portlayer.Container
	err := c.do(ctx, http.MethodPost, "/containers", nil, spec, &out)
	return out, err
}

// Start implements portlayer.Compute.
func (c *Client) Start(ctx context.Context, idOrName string) error {
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/start", nil, nil, nil)
}

// Stop implements portlayer.Compute; timeout is sent in whole seconds.
func (c *Client) Stop(ctx context.Context, idOrName string, timeout *time.Duration) error {
	q := url.Values{}
	if timeout != nil {
		q.Set("timeout", strconv.Itoa(int(*timeout/time.Second)))
	}
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/stop", q, nil, nil)
}

// Kill implements portlayer.Compute.
func (c *Client) Kill(ctx context.Context, idOrName string, signal int) error {
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/kill", url.Values{"signal": {strconv.Itoa(signal)}}, nil, nil)
}

// Wait implements portlayer.Compute: the error comes at once (no such
// container), the result on the channel when the server sends it; if
// the connection ends first, the result carries the error's text.
func (c *Client) Wait(ctx context.Context, idOrName string, cond portlayer.WaitCondition) (<-chan portlayer.WaitResult, error) {
	resp, err := c.send(ctx, http.MethodPost, ref(idOrName)+"/wait", url.Values{"condition": {string(cond)}}, nil)
	if err != nil {
		return nil, err
	}
	ch := make(chan portlayer.WaitResult, 1)
	go func() {
		defer resp.Body.Close()
		var res portlayer.WaitResult
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			res = portlayer.WaitResult{ExitCode: -1, Error: "port layer: wait ended without a result: " + err.Error()}
		}
		ch <- res
	}()
	return ch, nil
}

// Remove implements portlayer.Compute.
func (c *Client) Remove(ctx context.Context, idOrName string, force bool) error {
	return c.do(ctx, http.MethodDelete, ref(idOrName), url.Values{"force": {strconv.FormatBool(force)}}, nil, nil)
}

// Inspect implements portlayer.Compute.
func (c *Client) Inspect(ctx context.Context, idOrName string) (portlayer.Container, error) {
	var out portlayer.Container
	err := c.do(ctx, http.MethodGet, ref(idOrName), nil, nil, &out)
	return out, err
}

// List implements portlayer.Compute.
func (c *Client) List(ctx context.Context) ([]portlayer.Container, error) {
	var out []portlayer.Container
	err := c.do(ctx, http.MethodGet, "/containers", nil, nil, &out)
	return out, err
}

// Rename implements portlayer.Compute.
func (c *Client) Rename(ctx context.Context, idOrName, newName string) error {
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/rename", url.Values{"name": {newName}}, nil, nil)
}

// Pause implements portlayer.Pauser.
func (c *Client) Pause(ctx context.Context, idOrName string) error {
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/pause", nil, nil, nil)
}

// Unpause implements portlayer.Pauser.
func (c *Client) Unpause(ctx context.Context, idOrName string) error {
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/unpause", nil, nil, nil)
}
