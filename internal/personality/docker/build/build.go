// Package build serves POST /build with Docker's classic builder semantics
// (the builder the docker CLI uses without BuildKit, Engine API v1.50
// "Build an image"): the body is a tar of the build context, the
// Dockerfile in it is parsed with BuildKit's parser and instruction
// packages (github.com/moby/buildkit/frontend/dockerfile), and each
// instruction becomes one image, as the classic builder makes them:
//
//   - configuration instructions (ENV, LABEL, CMD, ENTRYPOINT, EXPOSE,
//     VOLUME, USER, WORKDIR, STOPSIGNAL, ARG, SHELL, MAINTAINER) commit an
//     image with no new layer;
//   - COPY and ADD build their layer on the host from the context (or
//     another stage's or image's filesystem) and commit it: no VM;
//   - RUN creates a container VM from the current image with the step's
//     environment, user and working directory, streams its output, and
//     commits its changes (taken in the guest at the exit) as the layer.
//
// Every step's image records its parent, and a cache maps the parent
// plus the step (instruction, resulting config, checksums of copied
// files, build arguments a RUN sees) to the image it made, so an
// unchanged rebuild boots no VM. The output is the classic builder's JSON
// stream ("Step N/M : …", " ---> <id>", "Successfully built <id>",
// "Successfully tagged <ref>").
package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/build"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// Backend is what the builder calls in the port layer:
//
//   - Images: Get (base images, cache checks), Pull (FROM of an image not
//     held, --pull), Tag (-t).
//   - Committer: Commit, for every step's image.
//   - Trees: Tree, for COPY --from and --chown user and group names.
//   - Compute, Interaction, Archives: Create, Start, Wait, Remove, Attach
//     and ChangesLayer for RUN steps; with Execs, the RUN steps of a stage
//     run as execs in one container VM, and Archives' StatPath and
//     PutArchive keep its filesystem the stage's.
type Backend struct {
	Images      portlayer.Images
	Committer   portlayer.Committer
	Trees       portlayer.ImageTrees
	Compute     portlayer.Compute
	Interaction portlayer.Interaction
	Archives    portlayer.Archives
	Execs       portlayer.Execs // nil: a VM per RUN step
}

// Router serves the build routes. Safe for concurrent use: builds run in
// parallel and share the cache.
type Router struct {
	be    Backend
	root  string
	cache *cache
	log   *slog.Logger
}

// NewRouter returns a router keeping its cache index and the unpacked
// contexts of builds in progress under root (created if missing; leftover
// contexts of a previous daemon are deleted). Errors: the directory
// cannot be made or the cache index read.
func NewRouter(be Backend, root string, log *slog.Logger) (*Router, error) {
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "tmp"))
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(root, "tmp", e.Name()))
	}
	c, err := openCache(filepath.Join(root, "cache.json"))
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{be: be, root: root, cache: c, log: log}, nil
}

// Routes returns POST /build and POST /build/prune.
func (rt *Router) Routes() []httputils.Route {
	return []httputils.Route{
		httputils.NewRoute(http.MethodPost, "/build", rt.postBuild),
		httputils.NewRoute(http.MethodPost, "/build/prune", rt.postPrune),
	}
}

// options are the query parameters of POST /build that the classic
// builder honours.
type options struct {
	tags       []string // familiar, tagged ("name:tag")
	dockerfile string
	quiet      bool
	noCache    bool
	pull       bool
	buildArgs  map[string]*string
	labels     map[string]string
	target     string
	network    string // networkmode: "", "default", "bridge", "none" or a network
}

// parseOptions reads the query. InvalidArgument (400) for a bad tag, bad
// JSON in buildargs or labels, a foreign platform, or a remote context.
func parseOptions(r *http.Request) (options, error) {
	o := options{
		dockerfile: r.Form.Get("dockerfile"),
		quiet:      httputils.BoolValue(r, "q"),
		noCache:    httputils.BoolValue(r, "nocache"),
		pull:       httputils.BoolValue(r, "pull"),
		target:     r.Form.Get("target"),
		network:    r.Form.Get("networkmode"),
	}
	if o.dockerfile == "" {
		o.dockerfile = defaultDockerfile
	}
	for _, t := range r.Form["t"] {
		if t == "" {
			continue
		}
		named, err := reference.ParseNormalizedNamed(t)
		if err != nil {
			return o, httputils.Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("invalid reference format: %v", err))
		}
		if _, ok := named.(reference.Canonical); ok {
			return o, httputils.InvalidArgument("build tag cannot contain a digest")
		}
		o.tags = append(o.tags, reference.FamiliarString(reference.TagNameOnly(named)))
	}
	if v := r.Form.Get("buildargs"); v != "" {
		if err := json.Unmarshal([]byte(v), &o.buildArgs); err != nil {
			return o, httputils.InvalidArgument("invalid buildargs: %v", err)
		}
	}
	if v := r.Form.Get("labels"); v != "" {
		if err := json.Unmarshal([]byte(v), &o.labels); err != nil {
			return o, httputils.InvalidArgument("invalid labels: %v", err)
		}
	}
	if p := r.Form.Get("platform"); p != "" {
		if err := checkPlatform(p); err != nil {
			return o, err
		}
	}
	if remote := r.Form.Get("remote"); remote != "" {
		return o, httputils.InvalidArgument("remote build contexts (%s) are not supported by vch: send the context as a tar", remote)
	}
	if v := r.Form.Get("version"); v == string(build.BuilderBuildKit) {
		return o, httputils.InvalidArgument("BuildKit is not supported by vch: use the classic builder (DOCKER_BUILDKIT=0)")
	}
	return o, nil
}

// defaultDockerfile is the Dockerfile's name in the context unless the
// dockerfile parameter says otherwise; "dockerfile" is tried when it is
// missing, as dockerd does.
const defaultDockerfile = "Dockerfile"

// checkPlatform accepts the one platform this VCH runs, linux/amd64
// ("linux" alone too); anything else is InvalidArgument.
func checkPlatform(p string) error {
	plat, err := httputils.ParsePlatform(p)
	if err != nil {
		return err
	}
	if !httputils.RunsOnHost(plat) {
		return httputils.InvalidArgument("platform %q is not supported by this VCH: its container VMs run linux/amd64", p)
	}
	return nil
}

// postBuild serves POST /build. Errors found before the first step (bad
// options, a context that is not a tar, no Dockerfile, a Dockerfile that
// does not parse) answer with a status code as dockerd's; a step that
// fails ends the stream with an error message (for RUN, its exit code in
// errorDetail.code).
func (rt *Router) postBuild(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	opts, err := parseOptions(r)
	if err != nil {
		return err
	}
	bctx, err := rt.unpackContext(ctx, r.Body)
	if err != nil {
		return err
	}
	defer bctx.release()
	df, err := bctx.dockerfile(opts.dockerfile)
	if err != nil {
		return err
	}
	plan, err := parseDockerfile(df, opts)
	if err != nil {
		return err
	}
	out := httputils.NewJSONStream(w)
	b := &builder{rt: rt, opts: opts, plan: plan, ctxDir: bctx.dir, out: out}
	defer b.cleanup(ctx)
	id, err := b.run(ctx)
	if err != nil {
		rt.log.InfoContext(ctx, "build failed", "err", err)
		var se *stepError
		code := 0
		if errors.As(err, &se) {
			code = se.code
		}
		msg := err.Error()
		if se == nil {
			msg = httputils.PortLayerText(err)
		}
		out.Send(errorMessage(code, msg))
		return nil
	}
	rt.log.InfoContext(ctx, "image built", "image", id, "tags", opts.tags)
	return nil
}

// postPrune serves POST /build/prune: the cache index is emptied, so the
// next builds run every step; the images steps made stay (docker image
// prune removes those no tag needs).
func (rt *Router) postPrune(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	n, err := rt.cache.clear()
	if err != nil {
		return err
	}
	rt.log.InfoContext(r.Context(), "build cache pruned", "entries", n)
	return httputils.WriteJSON(w, http.StatusOK, build.CachePruneReport{CachesDeleted: []string{}, SpaceReclaimed: 0})
}

// stepError is a step that failed with a user-facing text; code is the
// exit code of a failed RUN (0 otherwise).
type stepError struct {
	msg  string
	code int
}

func (e *stepError) Error() string { return e.msg }

func stepErrorf(format string, a ...any) error { return &stepError{msg: fmt.Sprintf(format, a...)} }

// shortID is an image or container ID's first 12 hex digits.
func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// detached returns a context for cleanup that outlives a cancelled request.
func detached(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
