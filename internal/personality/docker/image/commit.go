package image

import (
	"cmp"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	mobycontainer "github.com/moby/moby/api/types/container"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// CommitRoutes serve POST /commit (docker commit): the container's changes
// become one new layer over its image, whose config is the container's
// with the `changes` instructions applied.
func CommitRoutes(a portlayer.Archives, c portlayer.Committer) []httputils.Route {
	cr := &commitRouter{archives: a, committer: c}
	return []httputils.Route{httputils.NewRoute(http.MethodPost, "/commit", cr.postCommit)}
}

type commitRouter struct {
	archives  portlayer.Archives
	committer portlayer.Committer
}

// containerConfig is the part of Docker's container Config a commit keeps.
type containerConfig struct {
	Cmd          []string
	Entrypoint   []string
	Env          []string
	WorkingDir   string
	User         string
	Labels       map[string]string
	ExposedPorts map[string]struct{}
	Volumes      map[string]struct{}
	StopSignal   string
}

func (cr *commitRouter) postCommit(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	if err := r.ParseForm(); err != nil {
		return httputils.InvalidArgument("%v", err)
	}
	// The body is an optional container config (moby's Config), laid
	// under the container's own; "null" or nothing is none. It is read
	// first, so a malformed body is 400 whatever the container.
	var body *mobycontainer.Config
	if err := httputils.ReadJSON(r, &body); err != nil {
		return err
	}
	name := r.Form.Get("container")
	ref := ""
	if repo := r.Form.Get("repo"); repo != "" {
		tag := r.Form.Get("tag")
		if strings.HasPrefix(tag, "sha256:") || strings.Contains(repo, "@") {
			return httputils.InvalidArgument("invalid reference format")
		}
		var err error
		if ref, err = joinRef(repo, tag); err != nil {
			return err
		}
	}
	delta, err := ParseChanges(r.Form["changes"])
	if err != nil {
		return err
	}
	rec, layer, err := cr.archives.ChangesLayer(r.Context(), name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return httputils.Classify(errdefs.ErrNotFound, err, "No such container: "+name)
		}
		if errdefs.IsConflict(err) {
			return httputils.Classify(errdefs.ErrConflict, err, httputils.PortLayerText(err))
		}
		return err
	}
	defer layer.Close()
	var cc containerConfig
	if raw := rec.Spec.Annotations[container.AnnotationConfig]; len(raw) > 0 {
		_ = json.Unmarshal(raw, &cc)
	}
	if body != nil {
		cc = overConfig(*body, cc)
	}
	cfg := ocispec.ImageConfig{
		Cmd: cc.Cmd, Entrypoint: cc.Entrypoint, Env: cc.Env, WorkingDir: cc.WorkingDir, User: cc.User,
		Labels: cc.Labels, ExposedPorts: cc.ExposedPorts, Volumes: cc.Volumes, StopSignal: cc.StopSignal,
	}
	if err := delta.Apply(&cfg); err != nil {
		return err
	}
	img, err := cr.committer.Commit(r.Context(), portlayer.CommitSpec{
		Parent: rec.Spec.Image, Layer: layer, Config: cfg,
		Comment: r.Form.Get("comment"), Author: r.Form.Get("author"),
		CreatedBy: strings.Join(append(append([]string(nil), cc.Entrypoint...), cc.Cmd...), " "),
		Ref:       ref,
	})
	if err != nil {
		return imageErr("commit", name, err)
	}
	return httputils.WriteJSON(w, http.StatusCreated, map[string]string{"Id": img.ID})
}

// overConfig lays a commit request's config over the container's, as
// dockerd merges them (daemon/commit.go merge): what the request sets
// wins; Cmd and Entrypoint come from the container only when the request
// sets neither; Env keeps the container's variables the request does
// not set; Labels, ExposedPorts and Volumes are the union, the request's
// labels winning.
func overConfig(req mobycontainer.Config, cur containerConfig) containerConfig {
	out := cur
	if len(req.Cmd) > 0 || len(req.Entrypoint) > 0 {
		out.Cmd, out.Entrypoint = req.Cmd, req.Entrypoint
	}
	if len(req.Env) > 0 {
		env := slices.Clone(req.Env)
		for _, e := range cur.Env {
			k, _, _ := strings.Cut(e, "=")
			if !slices.ContainsFunc(env, func(x string) bool { xk, _, _ := strings.Cut(x, "="); return xk == k }) {
				env = append(env, e)
			}
		}
		out.Env = env
	}
	out.WorkingDir = cmp.Or(req.WorkingDir, cur.WorkingDir)
	out.User = cmp.Or(req.User, cur.User)
	out.StopSignal = cmp.Or(req.StopSignal, cur.StopSignal)
	if len(req.Labels) > 0 {
		out.Labels = maps.Clone(cur.Labels)
		if out.Labels == nil {
			out.Labels = map[string]string{}
		}
		maps.Copy(out.Labels, req.Labels)
	}
	if len(req.ExposedPorts) > 0 {
		out.ExposedPorts = maps.Clone(cur.ExposedPorts)
		if out.ExposedPorts == nil {
			out.ExposedPorts = map[string]struct{}{}
		}
		for p := range req.ExposedPorts {
			out.ExposedPorts[p.String()] = struct{}{}
		}
	}
	if len(req.Volumes) > 0 {
		out.Volumes = maps.Clone(cur.Volumes)
		if out.Volumes == nil {
			out.Volumes = map[string]struct{}{}
		}
		maps.Copy(out.Volumes, req.Volumes)
	}
	return out
}
