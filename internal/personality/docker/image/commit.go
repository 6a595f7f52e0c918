package image

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
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
	cfg := ocispec.ImageConfig{
		Cmd: cc.Cmd, Entrypoint: cc.Entrypoint, Env: cc.Env, WorkingDir: cc.WorkingDir, User: cc.User,
		Labels: cc.Labels, ExposedPorts: cc.ExposedPorts, Volumes: cc.Volumes, StopSignal: cc.StopSignal,
	}
	applyChanges(&cfg, delta)
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

// applyChanges lays the `--change` instructions over cfg: set fields
// replace, ENV, LABEL, EXPOSE and VOLUME add to what is there.
func applyChanges(cfg *ocispec.ImageConfig, d ocispec.ImageConfig) {
	if d.Cmd != nil {
		cfg.Cmd = d.Cmd
	}
	if d.Entrypoint != nil {
		cfg.Entrypoint = d.Entrypoint
	}
	for _, e := range d.Env {
		k, v, _ := strings.Cut(e, "=")
		cfg.Env = SetEnv(cfg.Env, k, v)
	}
	if d.WorkingDir != "" {
		cfg.WorkingDir = d.WorkingDir
	}
	if d.User != "" {
		cfg.User = d.User
	}
	if d.StopSignal != "" {
		cfg.StopSignal = d.StopSignal
	}
	if len(d.Labels) > 0 {
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		maps.Copy(cfg.Labels, d.Labels)
	}
	if len(d.ExposedPorts) > 0 {
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		maps.Copy(cfg.ExposedPorts, d.ExposedPorts)
	}
	if len(d.Volumes) > 0 {
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		maps.Copy(cfg.Volumes, d.Volumes)
	}
}
