package client

import (
	"bufio"
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

var _ portlayer.Images = (*ImageClient)(nil)

// ImageClient is the image store through the API; it implements
// portlayer.Images (whose List and Remove differ from Compute's, hence a
// type of its own).
type ImageClient struct{ c *Client }

// Images returns the image store's client.
func (c *Client) Images() *ImageClient { return &ImageClient{c: c} }

// authHeader is X-Registry-Auth for auth ("" for anonymous).
func authHeader(auth portlayer.RegistryAuth) string {
	if auth == (portlayer.RegistryAuth{}) {
		return ""
	}
	b, _ := json.Marshal(auth)
	return base64.URLEncoding.EncodeToString(b)
}

// stream sends a request whose answer is a progress stream, hands the
// progress lines to progress and returns the final line.
func (c *Client) stream(ctx context.Context, method, path string, q url.Values, body io.Reader, header http.Header, progress portlayer.ProgressFunc) (api.StreamLine, error) {
	u := c.base + "/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return api.StreamLine{}, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + err.Error()}
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.roundTrip(ctx, req)
	if err != nil {
		return api.StreamLine{}, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var l api.StreamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return api.StreamLine{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: " + path + ": bad stream line", Err: err}
		}
		switch {
		case l.Progress != nil:
			if progress != nil {
				progress(*l.Progress)
			}
		case l.Error != nil:
			return api.StreamLine{}, l.Error
		default:
			return l, nil
		}
	}
	if ctx.Err() != nil {
		return api.StreamLine{}, ctx.Err()
	}
	return api.StreamLine{}, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: " + path + ": the stream ended without a result", Err: sc.Err()}
}

// roundTrip sends req, turning a failed answer into its Error.
func (c *Client) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: port layer unreachable", Err: err}
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// Pull implements portlayer.Images: POST /v1/images/pull, progress as it
// comes.
func (ic *ImageClient) Pull(ctx context.Context, ref string, auth portlayer.RegistryAuth, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	h := http.Header{}
	if a := authHeader(auth); a != "" {
		h.Set("X-Registry-Auth", a)
	}
	l, err := ic.c.stream(ctx, http.MethodPost, "/images/pull", url.Values{"ref": {ref}}, nil, h, progress)
	if err != nil || l.Image == nil {
		return portlayer.Image{}, resultErr(err, "pull")
	}
	return *l.Image, nil
}

// resultErr is err, or an error for a final line without the result.
func resultErr(err error, op string) error {
	if err != nil {
		return err
	}
	return &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: " + op + ": no result in the stream"}
}

// Import implements portlayer.Images: the tar stream is the request body.
func (ic *ImageClient) Import(ctx context.Context, r io.Reader, ref string, opts portlayer.ImportOptions, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	q := url.Values{}
	if ref != "" {
		q.Set("ref", ref)
	}
	b, _ := json.Marshal(opts)
	q.Set("options", string(b))
	l, err := ic.c.stream(ctx, http.MethodPost, "/images/import", q, r, http.Header{"Content-Type": {"application/x-tar"}}, progress)
	if err != nil || l.Image == nil {
		return portlayer.Image{}, resultErr(err, "import")
	}
	return *l.Image, nil
}

// Load implements portlayer.Images: the archive is the request body.
func (ic *ImageClient) Load(ctx context.Context, r io.Reader, progress portlayer.ProgressFunc) ([]portlayer.Image, error) {
	l, err := ic.c.stream(ctx, http.MethodPost, "/images/load", nil, r, http.Header{"Content-Type": {"application/x-tar"}}, progress)
	if err != nil {
		return nil, err
	}
	return l.Images, nil
}

// Get implements portlayer.Images.
func (ic *ImageClient) Get(ctx context.Context, ref string) (portlayer.Image, error) {
	var img portlayer.Image
	err := ic.c.do(ctx, http.MethodGet, "/images/resolve", url.Values{"ref": {ref}}, nil, &img)
	return img, err
}

// List implements portlayer.Images.
func (ic *ImageClient) List(ctx context.Context) ([]portlayer.Image, error) {
	var imgs []portlayer.Image
	err := ic.c.do(ctx, http.MethodGet, "/images", nil, nil, &imgs)
	return imgs, err
}

// Tag implements portlayer.Images.
func (ic *ImageClient) Tag(ctx context.Context, src, target string) error {
	return ic.c.do(ctx, http.MethodPost, "/images/tag", url.Values{"source": {src}, "target": {target}}, nil, nil)
}

// Remove implements portlayer.Images.
func (ic *ImageClient) Remove(ctx context.Context, ref string, force bool) ([]portlayer.ImageDelete, error) {
	var dels []portlayer.ImageDelete
	err := ic.c.do(ctx, http.MethodDelete, "/images", url.Values{"ref": {ref}, "force": {strconv.FormatBool(force)}}, nil, &dels)
	return dels, err
}

// Save implements portlayer.Images: the archive is copied to w.
func (ic *ImageClient) Save(ctx context.Context, refs []string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ic.c.base+"/v1/images/save?"+url.Values{"ref": refs}.Encode(), nil)
	if err != nil {
		return &portlayer.Error{Class: portlayer.ClassInvalidArgument, Message: "client: " + err.Error()}
	}
	resp, err := ic.c.roundTrip(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return &portlayer.Error{Class: portlayer.ClassUnavailable, Message: "client: save: the archive was cut", Err: err}
	}
	return nil
}

// Push implements portlayer.Images.
func (ic *ImageClient) Push(ctx context.Context, ref string, auth portlayer.RegistryAuth, progress portlayer.ProgressFunc) ([]portlayer.PushResult, error) {
	h := http.Header{}
	if a := authHeader(auth); a != "" {
		h.Set("X-Registry-Auth", a)
	}
	l, err := ic.c.stream(ctx, http.MethodPost, "/images/push", url.Values{"ref": {ref}}, nil, h, progress)
	if err != nil {
		return nil, err
	}
	return l.Pushed, nil
}

// Logs is portlayer.Interaction's Logs: GET /v1/containers/{ref}/logs.
// The channel closes when the server's stream ends (or ctx does).
func (c *Client) Logs(ctx context.Context, idOrName string, opts portlayer.LogOptions) (<-chan portlayer.LogMessage, error) {
	q := url.Values{"stdout": {strconv.FormatBool(opts.Stdout)}, "stderr": {strconv.FormatBool(opts.Stderr)},
		"follow": {strconv.FormatBool(opts.Follow)}, "tail": {strconv.Itoa(opts.Tail)}}
	if !opts.Since.IsZero() {
		q.Set("since", opts.Since.Format(time.RFC3339Nano))
	}
	if !opts.Until.IsZero() {
		q.Set("until", opts.Until.Format(time.RFC3339Nano))
	}
	resp, err := c.send(ctx, http.MethodGet, ref(idOrName)+"/logs", q, nil)
	if err != nil {
		return nil, err
	}
	ch := make(chan portlayer.LogMessage, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var m portlayer.LogMessage
			if err := dec.Decode(&m); err != nil {
				return
			}
			select {
			case ch <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}
