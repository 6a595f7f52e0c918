package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
)

var (
	_ portlayer.Monitor          = (*Client)(nil)
	_ portlayer.NetworkConnector = (*Client)(nil)
	_ portlayer.Restarter        = (*Client)(nil)
	_ portlayer.Updater          = (*Client)(nil)
	_ portlayer.ExecForgetter    = (*Client)(nil)
	_ portlayer.Archives         = (*Client)(nil)
	_ portlayer.Committer        = (*ImageClient)(nil)
	_ portlayer.RegistryLogin    = (*ImageClient)(nil)
)

// Host is the VCH's description: GET /v1/host.
func (c *Client) Host(ctx context.Context) (portlayer.HostInfo, error) {
	var h portlayer.HostInfo
	err := c.do(ctx, http.MethodGet, "/host", nil, nil, &h)
	return h, err
}

// Top implements portlayer.Monitor.
func (c *Client) Top(ctx context.Context, idOrName string) ([]portlayer.ProcessInfo, error) {
	var ps []portlayer.ProcessInfo
	err := c.do(ctx, http.MethodGet, ref(idOrName)+"/top", nil, nil, &ps)
	return ps, err
}

// Stats implements portlayer.Monitor.
func (c *Client) Stats(ctx context.Context, idOrName string) (portlayer.StatsSample, error) {
	var st portlayer.StatsSample
	err := c.do(ctx, http.MethodGet, ref(idOrName)+"/stats", nil, nil, &st)
	return st, err
}

// Connect implements portlayer.NetworkConnector.
func (c *Client) Connect(ctx context.Context, container string, spec portlayer.EndpointSpec) error {
	return c.do(ctx, http.MethodPost, ref(container)+"/connect", nil, spec, nil)
}

// Disconnect implements portlayer.NetworkConnector.
func (c *Client) Disconnect(ctx context.Context, container, network string, force bool) error {
	return c.do(ctx, http.MethodPost, ref(container)+"/disconnect", url.Values{"network": {network}, "force": {strconv.FormatBool(force)}}, nil, nil)
}

// Restart implements portlayer.Restarter.
func (c *Client) Restart(ctx context.Context, idOrName string, signal int, timeout *time.Duration) error {
	q := url.Values{"signal": {strconv.Itoa(signal)}}
	if timeout != nil {
		q.Set("timeout", strconv.Itoa(int(*timeout/time.Second)))
	}
	return c.do(ctx, http.MethodPost, ref(idOrName)+"/restart", q, nil, nil)
}

// Update implements portlayer.Updater.
func (c *Client) Update(ctx context.Context, idOrName string, u portlayer.ContainerUpdate) (portlayer.Container, error) {
	var out portlayer.Container
	err := c.do(ctx, http.MethodPost, ref(idOrName)+"/update", nil, u, &out)
	return out, err
}

// ForgetExec implements portlayer.ExecForgetter.
func (c *Client) ForgetExec(ctx context.Context, execID string) error {
	return c.do(ctx, http.MethodDelete, "/execs/"+url.PathEscape(execID), nil, nil, nil)
}

// Publish adds an event to the port layer's log: POST /v1/events. It
// does not wait long and drops the event if the server cannot take it,
// as a ProgressFunc-like callback must not block.
func (c *Client) Publish(e portlayer.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.do(ctx, http.MethodPost, "/events", nil, e, nil)
}

// StatPath implements portlayer.Archives.
func (c *Client) StatPath(ctx context.Context, idOrName, path string) (portlayer.PathStat, error) {
	var st portlayer.PathStat
	err := c.do(ctx, http.MethodGet, ref(idOrName)+"/archive/stat", url.Values{"path": {path}}, nil, &st)
	return st, err
}

// getTar GETs a tar body and decodes the JSON header k (if any) into v.
func (c *Client) getTar(ctx context.Context, path string, q url.Values, k string, v any) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return nil, err
	}
	if k != "" {
		b, err := base64.StdEncoding.DecodeString(resp.Header.Get(k))
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil {
			resp.Body.Close()
			return nil, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: bad " + k + " header", Err: err}
		}
	}
	return resp.Body, nil
}

// GetArchive implements portlayer.Archives.
func (c *Client) GetArchive(ctx context.Context, idOrName, path string) (portlayer.PathStat, io.ReadCloser, error) {
	var st portlayer.PathStat
	rc, err := c.getTar(ctx, ref(idOrName)+"/archive", url.Values{"path": {path}}, api.HeaderPathStat, &st)
	return st, rc, err
}

// PutArchive implements portlayer.Archives.
func (c *Client) PutArchive(ctx context.Context, idOrName, path string, r io.Reader, opts portlayer.PutArchiveOptions) error {
	q := url.Values{"path": {path}, "noOverwriteDirNonDir": {strconv.FormatBool(opts.NoOverwriteDirNonDir)}, "copyUIDGID": {strconv.FormatBool(opts.CopyUIDGID)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/v1"+ref(idOrName)+"/archive?"+q.Encode(), r)
	if err != nil {
		return &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := c.roundTrip(ctx, req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Export implements portlayer.Archives.
func (c *Client) Export(ctx context.Context, idOrName string) (io.ReadCloser, error) {
	return c.getTar(ctx, ref(idOrName)+"/export", nil, "", nil)
}

// Changes implements portlayer.Archives.
func (c *Client) Changes(ctx context.Context, idOrName string) ([]portlayer.Change, error) {
	var cs []portlayer.Change
	err := c.do(ctx, http.MethodGet, ref(idOrName)+"/changes", nil, nil, &cs)
	return cs, err
}

// ChangesLayer implements portlayer.Archives.
func (c *Client) ChangesLayer(ctx context.Context, idOrName string) (portlayer.Container, io.ReadCloser, error) {
	var ctr portlayer.Container
	rc, err := c.getTar(ctx, ref(idOrName)+"/changes/layer", nil, api.HeaderContainer, &ctr)
	return ctr, rc, err
}

// Commit implements portlayer.Committer: the layer is the body.
func (ic *ImageClient) Commit(ctx context.Context, spec portlayer.CommitSpec) (portlayer.Image, error) {
	o := api.CommitOptions{CommitSpec: spec, HasLayer: spec.Layer != nil}
	body := spec.Layer
	o.Layer = nil
	b, err := json.Marshal(o)
	if err != nil {
		return portlayer.Image{}, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: encode the commit", Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ic.c.base+"/v1/images/commit?"+url.Values{"options": {string(b)}}.Encode(), body)
	if err != nil {
		return portlayer.Image{}, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := ic.c.roundTrip(ctx, req)
	if err != nil {
		return portlayer.Image{}, err
	}
	defer resp.Body.Close()
	var img portlayer.Image
	if err := json.NewDecoder(resp.Body).Decode(&img); err != nil {
		return portlayer.Image{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: decode the commit's answer", Err: err}
	}
	return img, nil
}

// Login implements portlayer.RegistryLogin.
func (ic *ImageClient) Login(ctx context.Context, server string, auth portlayer.RegistryAuth) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ic.c.base+"/v1/registries/login?"+url.Values{"server": {server}}.Encode(), nil)
	if err != nil {
		return &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + err.Error()}
	}
	if a := authHeader(auth); a != "" {
		req.Header.Set("X-Registry-Auth", a)
	}
	resp, err := ic.c.roundTrip(ctx, req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
