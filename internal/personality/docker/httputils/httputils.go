// Package httputils holds the small HTTP helpers shared by the Docker
// personality's API groups: the handler and route types, form and JSON
// decoding with Docker's error texts, the negotiated API version in a
// request's context, classified errors with Docker's user-facing texts, and
// the stream encodings Docker uses (stdcopy framing, JSON progress lines).
//
// It owns no routes and maps no error class to a status code: that is done
// once, in package docker.
package httputils

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// HandlerFunc handles one API route. vars holds the path variables of the
// route (e.g. "name"). A returned error is written by the server as Docker's
// JSON error body with the status code of its class; a handler that has
// already started its response must not return an error.
type HandlerFunc func(w http.ResponseWriter, r *http.Request, vars map[string]string) error

// Route is one method and path template of the Engine API, without the
// "/v1.NN" prefix. A template variable is "{name}" (one path segment) or
// "{name:.*}" (any text, slashes included, as image names need).
type Route struct {
	Method  string
	Path    string
	Handler HandlerFunc
	re      *regexp.Regexp
	names   []string
}

var varPattern = regexp.MustCompile(`\{([a-zA-Z]+)(:[^}]*)?\}`)

// NewRoute compiles a route. It panics on a malformed template, which is a
// programming error caught by any test that builds the router.
func NewRoute(method, path string, h HandlerFunc) Route {
	var names []string
	var b strings.Builder
	b.WriteString("^")
	last := 0
	for _, m := range varPattern.FindAllStringSubmatchIndex(path, -1) {
		b.WriteString(regexp.QuoteMeta(path[last:m[0]]))
		names = append(names, path[m[2]:m[3]])
		expr := `[^/]+`
		if m[4] >= 0 {
			expr = path[m[4]+1 : m[5]]
		}
		b.WriteString("(" + expr + ")")
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(path[last:]))
	b.WriteString("$")
	return Route{Method: method, Path: path, Handler: h, re: regexp.MustCompile(b.String()), names: names}
}

// Match reports whether path matches the route's template and returns its
// variables.
func (rt Route) Match(path string) (map[string]string, bool) {
	m := rt.re.FindStringSubmatch(path)
	if m == nil {
		return nil, false
	}
	vars := make(map[string]string, len(rt.names))
	for i, n := range rt.names {
		vars[n] = m[i+1]
	}
	return vars, true
}

type apiVersionKey struct{}

// WithVersion returns ctx carrying the negotiated API version ("1.50").
func WithVersion(ctx context.Context, v string) context.Context {
	return context.WithValue(ctx, apiVersionKey{}, v)
}

// VersionFromContext returns the negotiated API version, or "" if none.
func VersionFromContext(ctx context.Context) string {
	v, _ := ctx.Value(apiVersionKey{}).(string)
	return v
}

// CompareVersions compares two dotted API versions numerically ("1.9" <
// "1.10") and returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return 0
}

// VersionAtLeast reports whether the request's API version is >= v. A
// request without a version counts as the newest.
func VersionAtLeast(ctx context.Context, v string) bool {
	cur := VersionFromContext(ctx)
	return cur == "" || CompareVersions(cur, v) >= 0
}

// classified is an error with a Docker user-facing text, an error class and
// an optional cause kept for logs. errdefs.Resolve sees the class first, so
// the class set here wins over the cause's.
type classified struct {
	msg   string
	class error
	cause error
}

func (e *classified) Error() string { return e.msg }
func (e *classified) Unwrap() []error {
	if e.cause == nil {
		return []error{e.class}
	}
	return []error{e.class, e.cause}
}

// Classify returns an error whose text is msg and whose class is class (an
// errdefs sentinel such as errdefs.ErrNotFound); cause (may be nil) stays
// reachable through errors.Is/As.
func Classify(class error, cause error, msg string) error {
	return &classified{msg: msg, class: class, cause: cause}
}

// Message is the text a client is shown for err: a Classify'd error's
// own text (the handler chose it); else, for a typed port-layer error,
// the text DockerText writes from its fields; else err.Error().
func Message(err error) string {
	var c *classified
	if errors.As(err, &c) {
		return err.Error()
	}
	if msg, ok := DockerText(err); ok {
		return msg
	}
	return err.Error()
}

// InvalidArgument is Classify(errdefs.ErrInvalidArgument, nil, fmt.Sprintf(...)).
func InvalidArgument(format string, a ...any) error {
	return Classify(errdefs.ErrInvalidArgument, nil, fmt.Sprintf(format, a...))
}

// BoolValue reads a boolean form value the way Docker does: "", "0", "no",
// "false" and "none" (any case) are false, everything else is true.
func BoolValue(r *http.Request, k string) bool {
	s := strings.ToLower(strings.TrimSpace(r.FormValue(k)))
	return !(s == "" || s == "0" || s == "no" || s == "false" || s == "none")
}

// BoolValueOrDefault is BoolValue, or def when k is absent.
func BoolValueOrDefault(r *http.Request, k string, def bool) bool {
	if _, ok := r.Form[k]; !ok {
		return def
	}
	return BoolValue(r, k)
}

// ParseForm parses the query and form body; InvalidArgument on failure.
func ParseForm(r *http.Request) error {
	if r == nil {
		return nil
	}
	if err := r.ParseForm(); err != nil && !strings.HasPrefix(err.Error(), "mime:") {
		return Classify(errdefs.ErrInvalidArgument, err, err.Error())
	}
	return nil
}

// ReadJSON decodes the request body into out, as dockerd does: a body must
// be "application/json"; an empty body is not an error and leaves out as is;
// a truncated one is InvalidArgument "invalid JSON: got EOF while reading
// request body", a malformed one "invalid JSON: <decoder error>". Unknown
// fields are ignored.
func ReadJSON(r *http.Request, out any) error {
	ct := r.Header.Get("Content-Type")
	if ct != "" || (r.Body != nil && r.ContentLength != 0) {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("malformed Content-Type header (%s): %s", ct, err))
		}
		if mt != "application/json" {
			return InvalidArgument("unsupported Content-Type header (%s): must be 'application/json'", ct)
		}
	}
	if r.Body == nil || r.ContentLength == 0 {
		return nil
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(out); err != nil {
		if errors.Is(err, io.EOF) {
			return InvalidArgument("invalid JSON: got EOF while reading request body")
		}
		return Classify(errdefs.ErrInvalidArgument, err, "invalid JSON: "+err.Error())
	}
	if dec.More() {
		return InvalidArgument("unexpected content after JSON")
	}
	return nil
}

// JSONFields is v's JSON encoding as a map of its top-level fields, for
// answers that add or drop fields by API version (legacy fields the
// current types no longer carry).
func JSONFields(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// WriteJSON writes v as JSON with the given status code.
func WriteJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// EnableFullDuplex lets a handler keep reading the request body after it
// has started the response, as the image import and load routes do when
// they stream progress while the archive is still arriving. Without it the
// HTTP/1 server drains or closes the unread body at the first write, and
// later reads fail with "http: invalid Read on closed Body". A writer that
// cannot (a test recorder) is left as is.
func EnableFullDuplex(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
}

// Flush flushes w if it can.
func Flush(w io.Writer) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// Filters are Docker's list filters: filter name to the set of values.
type Filters map[string]map[string]bool

// ParseFilters decodes the "filters" query parameter, in the current
// {"name":{"value":true}} form or the legacy {"name":["value"]} form, and
// rejects names not in accepted with InvalidArgument "invalid filter '<name>'".
func ParseFilters(s string, accepted ...string) (Filters, error) {
	f := Filters{}
	if s == "" {
		return f, nil
	}
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		var legacy map[string][]string
		if lerr := json.Unmarshal([]byte(s), &legacy); lerr != nil {
			return nil, Classify(errdefs.ErrInvalidArgument, err, "invalid filter: "+err.Error())
		}
		f = Filters{}
		for k, vs := range legacy {
			f[k] = map[string]bool{}
			for _, v := range vs {
				f[k][v] = true
			}
		}
	}
	for k := range f {
		ok := false
		for _, a := range accepted {
			ok = ok || a == k
		}
		if !ok {
			return nil, InvalidArgument("invalid filter '%s'", k)
		}
	}
	return f, nil
}

// Values returns the values of filter k, in no particular order.
func (f Filters) Values(k string) []string {
	var out []string
	for v, on := range f[k] {
		if on {
			out = append(out, v)
		}
	}
	return out
}

// Match reports whether filter k is absent or any of its values satisfies ok.
func (f Filters) Match(k string, ok func(v string) bool) bool {
	vs := f.Values(k)
	if len(vs) == 0 {
		return true
	}
	for _, v := range vs {
		if ok(v) {
			return true
		}
	}
	return false
}

// MatchAll reports whether filter k is absent or every one of its values
// satisfies ok: dockerd's rule for "label" filters (MatchKVList), where
// `--filter label=a --filter label=b` wants both.
func (f Filters) MatchAll(k string, ok func(v string) bool) bool {
	for _, v := range f.Values(k) {
		if !ok(v) {
			return false
		}
	}
	return true
}

// PortLayerText is the text a front end shows for a port-layer error,
// alone or in its own text: for a typed one (the first *portlayer.Error
// in err's chain) the text DockerText writes from its fields, else the
// port layer's message and cause (portlayer.Error.Error, without the
// wrapping around it, which the API does not carry either); an untyped
// error's own text. It reads no text: the port layer's errors are typed
// (portlayer.Errorf), and a text is shown as it is.
func PortLayerText(err error) string {
	if msg, ok := DockerText(err); ok {
		return msg
	}
	if pe := portlayer.AsError(err); pe != nil {
		return pe.Error()
	}
	return err.Error()
}

// Uint32Value parses form field k as a uint32 with dockerd's errors
// (api/server/httputils Uint32Value): strconv.ErrSyntax for an empty,
// signed-plus or non-numeric value, strconv.ErrRange for one past 2³²−1
// or a negative number (which ParseUint alone calls a syntax error).
func Uint32Value(r *http.Request, k string) (uint32, error) {
	v, negative := strings.CutPrefix(r.Form.Get(k), "-")
	if v == "" || v[0] == '+' {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseUint(v, 10, 32)
	var ne *strconv.NumError
	switch {
	case errors.As(err, &ne):
		return 0, ne.Err
	case err != nil:
		return 0, err
	case negative:
		return 0, strconv.ErrRange
	}
	return uint32(n), nil
}

// ResizeSize reads a resize request's h and w (character cells) as
// dockerd does, InvalidArgument `invalid resize height "X": invalid
// syntax` (or width, or "value out of range") otherwise.
func ResizeSize(r *http.Request) (rows, cols uint, err error) {
	h, err := Uint32Value(r, "h")
	if err != nil {
		return 0, 0, Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("invalid resize height %q: %v", r.Form.Get("h"), err))
	}
	w, err := Uint32Value(r, "w")
	if err != nil {
		return 0, 0, Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("invalid resize width %q: %v", r.Form.Get("w"), err))
	}
	return uint(h), uint(w), nil
}
