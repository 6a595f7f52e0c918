package image

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/jsonstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// Router serves the image routes.
type Router struct {
	images     portlayer.Images
	containers containerLister // may be nil
	log        *slog.Logger
}

// NewRouter returns the image routes over the port layer's image store.
func NewRouter(images portlayer.Images, log *slog.Logger) *Router {
	return &Router{images: images, log: log}
}

// Routes returns the route table (Engine API v1.50 "Image"). Image names in
// paths may contain slashes ("127.0.0.1:5000/busybox").
func (rt *Router) Routes() []httputils.Route {
	return []httputils.Route{
		httputils.NewRoute(http.MethodPost, "/images/create", rt.postCreate),
		httputils.NewRoute(http.MethodPost, "/images/load", rt.postLoad),
		httputils.NewRoute(http.MethodGet, "/images/json", rt.getList),
		httputils.NewRoute(http.MethodGet, "/images/get", rt.getSave),
		httputils.NewRoute(http.MethodPost, "/images/prune", rt.postPrune),
		httputils.NewRoute(http.MethodGet, "/images/{name:.*}/get", rt.getSave),
		httputils.NewRoute(http.MethodGet, "/images/{name:.*}/history", rt.getHistory),
		httputils.NewRoute(http.MethodPost, "/images/{name:.*}/push", rt.postPush),
		httputils.NewRoute(http.MethodGet, "/images/{name:.*}/json", rt.getInspect),
		httputils.NewRoute(http.MethodPost, "/images/{name:.*}/tag", rt.postTag),
		httputils.NewRoute(http.MethodDelete, "/images/{name:.*}", rt.deleteImage),
	}
}

// imageErr gives a port-layer error for image name Docker's text.
func imageErr(op, name string, err error) error {
	if errdefs.IsNotFound(err) {
		// The store names the reference normalised, as Docker does
		// ("No such image: busybox:latest").
		msg := "No such image: " + name
		if pe := portlayer.AsError(err); pe != nil && pe.Kind == portlayer.KindImage && pe.ID != "" {
			msg = "No such image: " + pe.ID
		}
		return httputils.Classify(errdefs.ErrNotFound, err, msg)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

// errInvalidRef is dockerd's text for an unparsable reference.
func errInvalidRef(cause error) error {
	return httputils.Classify(errdefs.ErrInvalidArgument, cause, "invalid reference format")
}

// joinRef combines fromImage/repo and tag the way dockerd does: a tag that
// is a digest is joined with "@", any other with ":"; an empty tag keeps the
// reference as is (no tag means "latest" for pull).
func joinRef(repo, tag string) (string, error) {
	named, err := reference.ParseNormalizedNamed(repo)
	if err != nil {
		return "", errInvalidRef(err)
	}
	if tag != "" {
		if strings.HasPrefix(tag, "sha256:") {
			return reference.FamiliarName(named) + "@" + tag, nil
		}
		tagged, err := reference.WithTag(reference.TrimNamed(named), tag)
		if err != nil {
			return "", errInvalidRef(err)
		}
		return reference.FamiliarString(tagged), nil
	}
	return reference.FamiliarString(reference.TagNameOnly(named)), nil
}

// progressMessage renders a port-layer Progress as Docker's JSON line.
func progressMessage(p portlayer.Progress) httputils.ProgressMessage {
	m := httputils.ProgressMessage{Message: jsonstream.Message{ID: p.ID, Status: p.Status}}
	if p.Current > 0 || p.Total > 0 {
		m.Progress = &jsonstream.Progress{Current: p.Current, Total: p.Total}
		m.ProgressText = httputils.ProgressBar(p.Current, p.Total)
	} else if p.ID != "" {
		m.Progress = &jsonstream.Progress{}
	}
	return m
}

// postCreate serves POST /images/create: a pull (fromImage, tag) or an
// import (fromSrc=-, repo, tag, changes). The answer is a stream of JSON
// progress lines; a failure before any output is a plain error status, as
// with dockerd, and later failures are an in-band errorDetail line.
func (rt *Router) postCreate(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	if src := r.Form.Get("fromSrc"); src != "" {
		return rt.importImage(w, r, src)
	}
	from := r.Form.Get("fromImage")
	if from == "" {
		return httputils.InvalidArgument("either fromImage or fromSrc must be set")
	}
	if p := r.Form.Get("platform"); p != "" {
		plat, err := httputils.ParsePlatform(p)
		if err != nil {
			return err
		}
		if !httputils.RunsOnHost(plat) {
			return httputils.InvalidArgument("image platform %q is not supported: vch runs linux/amd64 only", p)
		}
	}
	ref, err := joinRef(from, r.Form.Get("tag"))
	if err != nil {
		return err
	}
	auth, err := RegistryAuth(r.Header.Get("X-Registry-Auth"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	out := httputils.NewJSONStream(w)
	img, err := rt.images.Pull(ctx, ref, auth, func(p portlayer.Progress) { out.Send(progressMessage(p)) })
	if err != nil {
		if msg, ok := httputils.DockerText(err); ok {
			err = httputils.Classify(errdefs.Resolve(err), err, msg)
		}
		if !out.Started() {
			pe := portlayer.AsError(err)
			switch {
			case errdefs.IsNotFound(err), pe != nil && pe.Reason == portlayer.ReasonDenied:
				// dockerd's notFoundError for an unknown manifest
				// or repository and for access denied alike
				// (distribution translatePullError).
				return httputils.Classify(errdefs.ErrNotFound, err, err.Error())
			case errdefs.IsUnavailable(err):
				// A registry that cannot be reached: dockerd's
				// unclassified 500 with the transport's own text
				// (Get "https://…/v2/": dial tcp: …).
				return httputils.Classify(errdefs.ErrInternal, err, httputils.PortLayerText(err))
			}
			if _, ok := httputils.DockerText(err); ok {
				return err
			}
			return fmt.Errorf("pull %s: %w", ref, err)
		}
		out.SendError(err)
		return nil
	}
	// The store reports "Digest: …" and "Status: …" itself, as the last
	// progress lines.
	rt.log.InfoContext(ctx, "image pulled", "image", ref, "id", img.ID)
	return nil
}

// importImage serves POST /images/create?fromSrc=-&repo=&tag=&changes=:
// the request body is a (possibly gzipped) tar of a root filesystem.
func (rt *Router) importImage(w http.ResponseWriter, r *http.Request, src string) error {
	if src != "-" {
		return errdefs.ErrNotImplemented.WithMessage("importing from a URL is not supported by vch: use fromSrc=- with the archive as the request body")
	}
	ctx := r.Context()
	ref := ""
	if repo := r.Form.Get("repo"); repo != "" {
		var err error
		if ref, err = joinRef(repo, r.Form.Get("tag")); err != nil {
			return err
		}
	}
	var opts portlayer.ImportOptions
	if p := r.Form.Get("platform"); p != "" {
		plat, err := httputils.ParsePlatform(p)
		if err != nil {
			return err
		}
		if plat.OS != "linux" {
			return httputils.InvalidArgument("operating system is not supported")
		}
		// Any Linux architecture is recorded, as dockerd does; a
		// container of it is refused at create.
		opts.Platform = plat
	}
	changes, err := ParseChanges(r.Form["changes"])
	if err != nil {
		return err
	}
	if err := changes.Apply(&opts.Config); err != nil {
		return err
	}
	httputils.EnableFullDuplex(w)
	out := httputils.NewJSONStream(w)
	// dockerd sends no progress for an import from the request body:
	// its first message is the new image's ID, sent once it is tagged
	// (a client that reads one message then lists the tag finds it).
	img, err := rt.images.Import(ctx, r.Body, ref, opts, func(portlayer.Progress) {})
	if err != nil {
		if !out.Started() {
			return fmt.Errorf("import: %w", err)
		}
		out.SendError(err)
		return nil
	}
	out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Status: img.ID}})
	return nil
}

// exposedPorts parses one EXPOSE word as dockerd does (go-connections
// nat.ParsePortSpecs): "80", "80/udp", or a range "8000-8002/tcp", the
// protocol tcp (default), udp or sctp. It returns the "port/proto" keys, a
// range expanded. InvalidArgument "invalid containerPort: <port>" or
// "invalid proto: <proto>" otherwise.
func exposedPorts(spec string) ([]string, error) {
	port, proto, ok := strings.Cut(spec, "/")
	if !ok || proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, httputils.InvalidArgument("invalid proto: %s", proto)
	}
	bad := httputils.InvalidArgument("invalid containerPort: %s", port)
	lo, hi, isRange := strings.Cut(port, "-")
	start, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return nil, bad
	}
	end := start
	if isRange {
		if end, err = strconv.ParseUint(hi, 10, 16); err != nil || end < start {
			return nil, bad
		}
	}
	var out []string
	for p := start; p <= end; p++ {
		out = append(out, strconv.FormatUint(p, 10)+"/"+proto)
	}
	return out, nil
}

// SetEnv sets k=v in a KEY=value list: an entry for k is replaced in
// place, else the entry is appended (Docker's ENV rule).
func SetEnv(env []string, k, v string) []string {
	for i, e := range env {
		if ek, _, _ := strings.Cut(e, "="); ek == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// postLoad serves POST /images/load?quiet= (Engine API v1.50 "Import
// images"): the body is a `docker save` archive; the answer is JSON lines
// {"stream":"Loaded image: busybox:latest\n"} (or "Loaded image ID: ..." for
// untagged images).
func (rt *Router) postLoad(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	quiet := httputils.BoolValueOrDefault(r, "quiet", true)
	httputils.EnableFullDuplex(w)
	out := httputils.NewJSONStream(w)
	imgs, err := rt.images.Load(ctx, r.Body, func(p portlayer.Progress) {
		if !quiet {
			out.Send(progressMessage(p))
		}
	})
	if err != nil {
		if !out.Started() {
			return fmt.Errorf("load: %w", err)
		}
		out.SendError(err)
		return nil
	}
	for _, img := range imgs {
		if len(img.RepoTags) == 0 {
			out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Stream: "Loaded image ID: " + img.ID + "\n"}})
		}
		for _, t := range img.RepoTags {
			out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Stream: "Loaded image: " + t + "\n"}})
		}
		rt.log.InfoContext(ctx, "image loaded", "id", img.ID, "tags", img.RepoTags)
	}
	if !out.Started() {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
	}
	return nil
}

// Summary renders an image for GET /images/json.
func Summary(img portlayer.Image) image.Summary {
	s := image.Summary{
		ID:          img.ID,
		ParentID:    img.Parent,
		RepoTags:    append([]string{}, img.RepoTags...),
		RepoDigests: append([]string{}, img.RepoDigests...),
		Created:     img.Created.Unix(),
		Size:        img.Size,
		SharedSize:  -1,
		Containers:  -1,
		Labels:      img.Config.Config.Labels,
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	return s
}

// getList serves GET /images/json?all=&filters= (reference, dangling,
// label, before, since, until), newest first; without all=1 intermediate
// images (untagged parents of other images) are left out.
func (rt *Router) getList(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), "reference", "dangling", "label", "before", "since", "until")
	if err != nil {
		return err
	}
	for _, v := range f.Values("dangling") {
		if v != "true" && v != "false" {
			return httputils.InvalidArgument("invalid filter 'dangling=[%s]'", v)
		}
	}
	before, since, err := rt.createdBounds(ctx, f)
	if err != nil {
		return err
	}
	imgs, err := rt.images.List(ctx)
	if err != nil {
		return fmt.Errorf("list images: %w", err)
	}
	var shared map[string]int64
	if httputils.BoolValue(r, "shared-size") {
		shared, _ = SharedSizes(imgs)
	}
	// Without all, intermediate images (untagged, some image's parent)
	// are hidden, as dockerd hides them.
	parents := map[string]bool{}
	for _, img := range imgs {
		parents[img.Parent] = true
	}
	all := httputils.BoolValue(r, "all")
	out := []image.Summary{}
	for _, img := range imgs {
		if !all && len(img.RepoTags) == 0 && parents[img.ID] {
			continue
		}
		if !f.Match("dangling", func(v string) bool { return (v == "true") == (len(img.RepoTags) == 0) }) {
			continue
		}
		if !before.IsZero() && !img.Created.Before(before) || !since.IsZero() && !img.Created.After(since) {
			continue
		}
		if !f.MatchAll("label", func(v string) bool {
			k, val, hasVal := strings.Cut(v, "=")
			got, ok := img.Config.Config.Labels[k]
			return ok && (!hasVal || got == val)
		}) {
			continue
		}
		var tags []string
		if patterns := f.Values("reference"); len(patterns) > 0 {
			// dockerd lists only the tags that match, and skips an image
			// none of whose tags do (daemon/images Images).
			if tags = matchingTags(img.RepoTags, patterns); len(tags) == 0 {
				continue
			}
		}
		sum := Summary(img)
		if tags != nil {
			sum.RepoTags = tags
		}
		if shared != nil {
			sum.SharedSize = shared[img.ID]
		}
		out = append(out, sum)
	}
	return httputils.WriteJSON(w, http.StatusOK, out)
}

// createdBounds resolves the before, since and until image filters as
// dockerd does: before (an image) and until (a time) give the oldest
// exclusive upper bound on creation time, since (an image) the newest
// exclusive lower bound; zero means none. 404 "No such image: <ref>" for a
// before/since image that does not exist.
func (rt *Router) createdBounds(ctx context.Context, f httputils.Filters) (before, since time.Time, err error) {
	created := func(ref string) (time.Time, error) {
		img, err := rt.images.Get(ctx, ref)
		if err != nil {
			return time.Time{}, imageErr("list images", ref, err)
		}
		return img.Created, nil
	}
	for _, v := range f.Values("before") {
		t, err := created(v)
		if err != nil {
			return before, since, err
		}
		if before.IsZero() || t.Before(before) {
			before = t
		}
	}
	for _, v := range f.Values("until") {
		t, err := container.ParseUntil(v, time.Now())
		if err != nil {
			return before, since, err
		}
		if before.IsZero() || t.Before(before) {
			before = t
		}
	}
	for _, v := range f.Values("since") {
		t, err := created(v)
		if err != nil {
			return before, since, err
		}
		if t.After(since) {
			since = t
		}
	}
	return before, since, nil
}

// matchingTags returns the tags that match any of the `docker images`
// reference patterns ("busybox", "busybox:1*", "*/busybox"), in order,
// with distribution's FamiliarMatch (the familiar string, or the name
// alone).
func matchingTags(tags, patterns []string) []string {
	var out []string
	for _, t := range tags {
		named, err := reference.ParseNormalizedNamed(t)
		if err != nil {
			continue
		}
		for _, p := range patterns {
			if ok, _ := reference.FamiliarMatch(p, named); ok {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

// InspectResponse renders an image for GET /images/{name}/json.
func InspectResponse(img portlayer.Image) image.InspectResponse {
	cfg := img.Config.Config
	resp := image.InspectResponse{
		ID:           img.ID,
		RepoTags:     append([]string{}, img.RepoTags...),
		RepoDigests:  append([]string{}, img.RepoDigests...),
		Author:       img.Config.Author,
		Config:       &dockerspec.DockerOCIImageConfig{ImageConfig: cfg, DockerOCIImageConfigExt: container.DockerExt(img)},
		Architecture: img.Config.Architecture,
		Variant:      img.Config.Variant,
		Os:           img.Config.OS,
		OsVersion:    img.Config.OSVersion,
		Size:         img.Size,
		RootFS:       image.RootFS{Type: "layers", Layers: append([]string{}, img.Layers...)},
	}
	if resp.Architecture == "" {
		resp.Architecture = "amd64"
	}
	if resp.Os == "" {
		resp.Os = "linux"
	}
	if !img.Created.IsZero() {
		resp.Created = img.Created.UTC().Format(time.RFC3339Nano)
	}
	return resp
}

// getInspect serves GET /images/{name}/json; 404 "No such image: x".
func (rt *Router) getInspect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	var want *ocispec.Platform
	if v := r.Form.Get("platform"); v != "" && httputils.VersionAtLeast(r.Context(), "1.49") {
		p, err := httputils.DecodePlatform(v)
		if err != nil {
			return err
		}
		want = &p
	}
	img, err := rt.images.Get(r.Context(), name)
	if err != nil {
		return imageErr("inspect image", name, err)
	}
	if want != nil {
		// An image here has one platform; another is dockerd's
		// graph-driver answer.
		have := ocispec.Platform{OS: img.Config.OS, Architecture: img.Config.Architecture, Variant: img.Config.Variant}
		if !httputils.PlatformMatches(*want, have) {
			return httputils.PlatformMismatch(name, have, *want)
		}
	}
	return writeLegacy(r.Context(), w, InspectResponse(img), img.Size)
}

// writeLegacy writes an image inspect document with the fields dockerd
// still sends that the current types leave out when empty (Parent,
// Comment, Author: "" for an image without them) and, before API 1.44,
// VirtualSize (the image's size).
func writeLegacy(ctx context.Context, w http.ResponseWriter, resp image.InspectResponse, size int64) error {
	doc, err := httputils.JSONFields(resp)
	if err != nil {
		return fmt.Errorf("inspect image: %w", err)
	}
	for _, k := range []string{"Parent", "Comment", "Author"} {
		if _, ok := doc[k]; !ok {
			doc[k] = ""
		}
	}
	if !httputils.VersionAtLeast(ctx, "1.44") {
		doc["VirtualSize"] = size
	}
	return httputils.WriteJSON(w, http.StatusOK, doc)
}

// postTag serves POST /images/{name}/tag?repo=&tag=: 201.
func (rt *Router) postTag(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	repo := r.Form.Get("repo")
	if repo == "" {
		return httputils.InvalidArgument("repository name (repo parameter) is required")
	}
	tag := r.Form.Get("tag")
	if strings.HasPrefix(tag, "sha256:") {
		return httputils.InvalidArgument("refusing to create a tag with a digest reference")
	}
	if named, err := reference.ParseNormalizedNamed(repo); err == nil && reference.FamiliarName(named) == "sha256" {
		// "sha256:sometag" would read as a digest (dockerd's tag check).
		return httputils.InvalidArgument("refusing to create an ambiguous tag using digest algorithm as name")
	}
	target, err := joinRef(repo, tag)
	if err != nil {
		return err
	}
	if err := rt.images.Tag(r.Context(), name, target); err != nil {
		return imageErr("tag", name, err)
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

// deleteImage serves DELETE /images/{name}?force=&noprune=: 200 with the
// list of untagged and deleted references.
func (rt *Router) deleteImage(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	dels, err := rt.images.Remove(r.Context(), name, httputils.BoolValue(r, "force"))
	if err != nil {
		if errdefs.IsConflict(err) {
			if msg, ok := httputils.DockerText(err); ok {
				return httputils.Classify(errdefs.ErrConflict, err, msg)
			}
			return httputils.Classify(errdefs.ErrConflict, err, fmt.Sprintf("conflict: unable to remove repository reference %q (must force) - %s", name, httputils.PortLayerText(err)))
		}
		return imageErr("remove image", name, err)
	}
	out := make([]image.DeleteResponse, 0, len(dels))
	for _, d := range dels {
		out = append(out, image.DeleteResponse{Untagged: d.Untagged, Deleted: d.Deleted})
	}
	return httputils.WriteJSON(w, http.StatusOK, out)
}
