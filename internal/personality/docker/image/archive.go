package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// containerLister is the part of portlayer.Compute the image routes use:
// which images containers use (prune, Containers counts).
type containerLister interface {
	List(ctx context.Context) ([]portlayer.Container, error)
}

// WithContainers lets prune spare images that containers use. Without it
// prune relies on the store's own in-use refusal, which does not stop an
// untag.
func (rt *Router) WithContainers(c containerLister) *Router {
	rt.containers = c
	return rt
}

// tarWriter sets the tar content type on the first write, so an error found
// before any byte (an unknown image) can still be a plain error status.
type tarWriter struct {
	w       http.ResponseWriter
	started bool
}

func (t *tarWriter) Write(p []byte) (int, error) {
	if !t.started {
		t.started = true
		t.w.Header().Set("Content-Type", "application/x-tar")
		t.w.WriteHeader(http.StatusOK)
	}
	return t.w.Write(p)
}

// getSave serves GET /images/get?names=… and GET /images/{name}/get
// (Engine API v1.50 "Export several images" / "Export an image"): a
// docker-archive tar. 404 "No such image: x" if a name does not resolve,
// before any byte is sent; a failure mid-stream aborts the connection so
// the client never mistakes a cut archive for a whole one.
func (rt *Router) getSave(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	names := r.Form["names"]
	if n := vars["name"]; n != "" {
		names = []string{n}
	}
	if len(names) == 0 {
		return httputils.InvalidArgument("no images named: names is required")
	}
	// API 1.48's platform parameter: one, as dockerd takes (an image here
	// has one platform, linux/amd64, so any that parses saves it).
	if ps := r.Form["platform"]; len(ps) > 1 {
		return httputils.InvalidArgument("multiple platform parameters not supported")
	} else if len(ps) == 1 {
		if _, err := httputils.DecodePlatform(ps[0]); err != nil {
			return err
		}
	}
	tw := &tarWriter{w: w}
	if err := rt.images.Save(r.Context(), names, tw); err != nil {
		if !tw.started {
			return imageErr("save", strings.Join(names, ", "), err)
		}
		rt.log.ErrorContext(r.Context(), "image save failed mid-stream", "images", names, "error", err)
		panic(http.ErrAbortHandler)
	}
	if !tw.started {
		w.Header().Set("Content-Type", "application/x-tar")
		w.WriteHeader(http.StatusOK)
	}
	return nil
}

// History renders an image's history as dockerd does (daemon/images
// ImageHistory): one entry per config history entry, newest first; an
// entry that made a layer has that layer's uncompressed size; the newest
// entry carries the image's ID and tags, the others "<missing>" (the
// route then names the entries of parents still held). An image whose config has no history (an
// import) gets one entry per layer.
func History(img portlayer.Image) ([]image.HistoryResponseItem, error) {
	out := []image.HistoryResponseItem{}
	layer := 0
	hist := img.Config.History
	for _, h := range hist {
		var size int64
		if !h.EmptyLayer {
			if layer >= len(img.Layers) {
				return nil, fmt.Errorf("history of %s: too many non-empty layers in History section: %w", img.ID, errdefs.ErrDataLoss)
			}
			if layer < len(img.LayerSizes) {
				size = img.LayerSizes[layer]
			}
			layer++
		}
		var created int64
		if h.Created != nil {
			created = h.Created.Unix()
		}
		out = append(out, image.HistoryResponseItem{ID: "<missing>", Created: created, CreatedBy: h.CreatedBy, Comment: h.Comment, Size: size, Tags: []string{}})
	}
	if len(hist) == 0 {
		for i := range img.Layers {
			var size int64
			if i < len(img.LayerSizes) {
				size = img.LayerSizes[i]
			}
			out = append(out, image.HistoryResponseItem{ID: "<missing>", Created: img.Created.Unix(), Size: size, Tags: []string{}})
		}
	}
	slices.Reverse(out)
	if len(out) > 0 {
		out[0].ID = img.ID
		out[0].Tags = append([]string{}, img.RepoTags...)
	}
	return out, nil
}

// getHistory serves GET /images/{name}/history; 404 "No such image: x".
func (rt *Router) getHistory(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	img, err := rt.images.Get(r.Context(), name)
	if err != nil {
		return imageErr("history", name, err)
	}
	h, err := History(img)
	if err != nil {
		return err
	}
	// Entries made by a parent still held carry its ID and tags, as
	// dockerd shows a build's steps (its history is a prefix of ours).
	for p, n := img.Parent, 0; p != "" && n < 1000; n++ {
		parent, err := rt.images.Get(r.Context(), p)
		if err != nil || parent.ID != p {
			break
		}
		if i := len(h) - len(parent.Config.History); i > 0 && i < len(h) && len(parent.Config.History) > 0 {
			h[i].ID, h[i].Tags = parent.ID, append([]string{}, parent.RepoTags...)
		}
		p = parent.Parent
	}
	return httputils.WriteJSON(w, http.StatusOK, h)
}

// RegistryAuth decodes an X-Registry-Auth header (base64url JSON of
// Docker's AuthConfig; the CLI fills it from ~/.docker/config.json or a
// credential helper). Empty means anonymous. A user:password pair in the
// legacy "auth" field is used when username is empty. InvalidArgument if
// the header is not such a value.
func RegistryAuth(header string) (portlayer.RegistryAuth, error) {
	if header == "" {
		return portlayer.RegistryAuth{}, nil
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.URLEncoding, base64.RawURLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if raw, err = enc.DecodeString(header); err == nil {
			break
		}
	}
	bad := func(err error) error {
		return httputils.Classify(errdefs.ErrInvalidArgument, err, "invalid X-Registry-Auth header: "+err.Error())
	}
	if err != nil {
		return portlayer.RegistryAuth{}, bad(err)
	}
	var ac registry.AuthConfig
	if err := json.Unmarshal(raw, &ac); err != nil {
		return portlayer.RegistryAuth{}, bad(err)
	}
	a := portlayer.RegistryAuth{Username: ac.Username, Password: ac.Password, IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}
	if a.Username == "" && ac.Auth != "" {
		if up, err := base64.StdEncoding.DecodeString(ac.Auth); err == nil {
			a.Username, a.Password, _ = strings.Cut(string(up), ":")
		}
	}
	return a, nil
}

// pushAux is the aux object dockerd sends after pushing a tag.
type pushAux struct {
	Tag    string
	Digest string
	Size   int64
}

// postPush serves POST /images/{name}/push?tag= (Engine API v1.50 "Push an
// image"): Docker's JSON progress lines, then per tag the line "<tag>:
// digest: … size: N" and an aux {Tag, Digest, Size}. An empty tag pushes
// every tag of the repository. Errors before any output are plain statuses
// (404 "An image does not exist locally with the tag: x"); later ones are
// an errorDetail line.
func (rt *Router) postPush(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ref := vars["name"]
	if tag := r.Form.Get("tag"); tag != "" {
		var err error
		if ref, err = joinRef(ref, tag); err != nil {
			return err
		}
	}
	auth, err := RegistryAuth(r.Header.Get("X-Registry-Auth"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	out := httputils.NewJSONStream(w)
	res, err := rt.images.Push(ctx, ref, auth, func(p portlayer.Progress) { out.Send(progressMessage(p)) })
	if err != nil {
		if !out.Started() {
			if errdefs.IsNotFound(err) || errdefs.IsPermissionDenied(err) || errdefs.IsInvalidArgument(err) {
				return httputils.Classify(errdefs.Resolve(err), err, httputils.Message(err))
			}
			return fmt.Errorf("push %s: %w", ref, err)
		}
		out.SendError(err)
		return nil
	}
	for _, p := range res {
		b, _ := json.Marshal(pushAux(p))
		aux := json.RawMessage(b)
		out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Progress: &jsonstream.Progress{}, Aux: &aux}})
	}
	rt.log.InfoContext(ctx, "image pushed", "image", ref)
	return nil
}

// SharedSizes returns, per image ID, the bytes of its layers that another
// image also has (layers are stored once by diff ID and shared), and the
// total of distinct layers (`docker system df` LayersSize).
func SharedSizes(imgs []portlayer.Image) (shared map[string]int64, layersSize int64) {
	users := map[string]int{}
	sizes := map[string]int64{}
	for _, img := range imgs {
		seen := map[string]bool{}
		for i, l := range img.Layers {
			if seen[l] {
				continue
			}
			seen[l] = true
			users[l]++
			if i < len(img.LayerSizes) {
				sizes[l] = img.LayerSizes[i]
			}
		}
	}
	for _, s := range sizes {
		layersSize += s
	}
	shared = map[string]int64{}
	for _, img := range imgs {
		seen := map[string]bool{}
		var n int64
		for _, l := range img.Layers {
			if !seen[l] && users[l] > 1 {
				n += sizes[l]
			}
			seen[l] = true
		}
		shared[img.ID] = n
	}
	return shared, layersSize
}

// ContainerCounts returns how many containers use each image ID.
func ContainerCounts(cs []portlayer.Container) map[string]int64 {
	n := map[string]int64{}
	for _, c := range cs {
		n[c.Spec.Image]++
	}
	return n
}

// postPrune serves POST /images/prune?filters= (Engine API v1.50 "Delete
// unused images"): with dangling=true (the default) the untagged images,
// with dangling=false every image; in both cases only images no container
// uses, narrowed by until (created before) and label / label! filters.
// Tagged images are untagged tag by tag, then deleted, as dockerd does.
// SpaceReclaimed is the size of the layers no remaining image has.
func (rt *Router) postPrune(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	f, err := httputils.ParseFilters(r.Form.Get("filters"), "dangling", "until", "label", "label!")
	if err != nil {
		return err
	}
	danglingOnly := true
	for _, v := range f.Values("dangling") {
		switch strings.ToLower(v) {
		case "true", "1":
		case "false", "0":
			danglingOnly = false
		default:
			return httputils.InvalidArgument("invalid filter 'dangling=%s'", v)
		}
	}
	var until time.Time
	for _, v := range f.Values("until") {
		t, err := container.ParseUntil(v, time.Now())
		if err != nil {
			return err
		}
		if until.IsZero() || t.Before(until) {
			until = t
		}
	}
	used := map[string]int64{}
	if rt.containers != nil {
		cs, err := rt.containers.List(ctx)
		if err != nil {
			return fmt.Errorf("prune images: %w", err)
		}
		used = ContainerCounts(cs)
	}
	before, err := rt.images.List(ctx)
	if err != nil {
		return fmt.Errorf("prune images: %w", err)
	}
	_, sizeBefore := SharedSizes(before)
	report := image.PruneReport{ImagesDeleted: []image.DeleteResponse{}}
	for _, img := range before {
		if used[img.ID] > 0 || danglingOnly && len(img.RepoTags) > 0 {
			continue
		}
		if !until.IsZero() && !img.Created.Before(until) {
			continue
		}
		labels := img.Config.Config.Labels
		if !f.MatchAll("label", func(v string) bool { return container.HasLabel(labels, v) }) {
			continue
		}
		if len(f.Values("label!")) > 0 && !f.MatchAll("label!", func(v string) bool { return !container.HasLabel(labels, v) }) {
			continue
		}
		refs := img.RepoTags
		if len(refs) == 0 {
			refs = []string{img.ID}
		}
		for _, ref := range refs {
			dels, err := rt.images.Remove(ctx, ref, false)
			if err != nil {
				if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
					rt.log.DebugContext(ctx, "prune skips image", "image", img.ID, "error", err)
					break
				}
				return fmt.Errorf("prune images: %w", err)
			}
			for _, d := range dels {
				report.ImagesDeleted = append(report.ImagesDeleted, image.DeleteResponse{Untagged: d.Untagged, Deleted: d.Deleted})
			}
		}
	}
	after, err := rt.images.List(ctx)
	if err != nil {
		return fmt.Errorf("prune images: %w", err)
	}
	if _, sizeAfter := SharedSizes(after); sizeBefore > sizeAfter {
		report.SpaceReclaimed = uint64(sizeBefore - sizeAfter)
	}
	return httputils.WriteJSON(w, http.StatusOK, report)
}
