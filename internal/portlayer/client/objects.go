package client

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
)

var (
	_ portlayer.Volumes  = (*Client)(nil)
	_ portlayer.Networks = (*Client)(nil)
	_ portlayer.Events   = (*Client)(nil)
)

// CreateVolume implements portlayer.Volumes.
func (c *Client) CreateVolume(ctx context.Context, spec portlayer.VolumeSpec) (portlayer.Volume, error) {
	var v portlayer.Volume
	err := c.do(ctx, http.MethodPost, "/volumes", nil, spec, &v)
	return v, err
}

// InspectVolume implements portlayer.Volumes.
func (c *Client) InspectVolume(ctx context.Context, name string) (portlayer.Volume, error) {
	var v portlayer.Volume
	err := c.do(ctx, http.MethodGet, "/volumes/"+url.PathEscape(name), nil, nil, &v)
	return v, err
}

// ListVolumes implements portlayer.Volumes.
func (c *Client) ListVolumes(ctx context.Context) ([]portlayer.Volume, error) {
	var vs []portlayer.Volume
	err := c.do(ctx, http.MethodGet, "/volumes", nil, nil, &vs)
	return vs, err
}

// RemoveVolume implements portlayer.Volumes.
func (c *Client) RemoveVolume(ctx context.Context, name string, force bool) error {
	return c.do(ctx, http.MethodDelete, "/volumes/"+url.PathEscape(name), url.Values{"force": {strconv.FormatBool(force)}}, nil, nil)
}

// CreateNetwork implements portlayer.Networks.
func (c *Client) CreateNetwork(ctx context.Context, spec portlayer.NetworkSpec) (portlayer.Network, error) {
	var n portlayer.Network
	err := c.do(ctx, http.MethodPost, "/networks", nil, spec, &n)
	return n, err
}

// InspectNetwork implements portlayer.Networks.
func (c *Client) InspectNetwork(ctx context.Context, idOrName string) (portlayer.Network, error) {
	var n portlayer.Network
	err := c.do(ctx, http.MethodGet, "/networks/"+url.PathEscape(idOrName), nil, nil, &n)
	return n, err
}

// ListNetworks implements portlayer.Networks.
func (c *Client) ListNetworks(ctx context.Context) ([]portlayer.Network, error) {
	var ns []portlayer.Network
	err := c.do(ctx, http.MethodGet, "/networks", nil, nil, &ns)
	return ns, err
}

// RemoveNetwork implements portlayer.Networks.
func (c *Client) RemoveNetwork(ctx context.Context, idOrName string) error {
	return c.do(ctx, http.MethodDelete, "/networks/"+url.PathEscape(idOrName), nil, nil, nil)
}

// Subscribe implements portlayer.Events: GET /v1/events. It returns once
// the logged events have come (and, when live, the server's marker); a
// server that cannot be reached gives no events and, when live, a
// channel that is closed at once.
func (c *Client) Subscribe(ctx context.Context, since time.Time, live bool) ([]portlayer.Event, <-chan portlayer.Event) {
	q := url.Values{"live": {strconv.FormatBool(live)}}
	if !since.IsZero() {
		q.Set("since", since.Format(time.RFC3339Nano))
	}
	var ch chan portlayer.Event
	if live {
		ch = make(chan portlayer.Event, 64)
	}
	closed := func() <-chan portlayer.Event {
		if ch != nil {
			close(ch)
		}
		return ch
	}
	resp, err := c.send(ctx, http.MethodGet, "/events", q, nil)
	if err != nil {
		return nil, closed()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var logged []portlayer.Event
	for sc.Scan() {
		var l api.EventLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			break
		}
		if l.Live {
			go func() {
				defer close(ch)
				defer resp.Body.Close()
				for sc.Scan() {
					var l api.EventLine
					if json.Unmarshal(sc.Bytes(), &l) != nil || l.Event == nil {
						return
					}
					select {
					case ch <- *l.Event:
					case <-ctx.Done():
						return
					}
				}
			}()
			return logged, ch
		}
		if l.Event != nil {
			logged = append(logged, *l.Event)
		}
	}
	resp.Body.Close()
	return logged, closed()
}
