package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

var _ portlayer.Committer = (*Store)(nil)

// Commit implements portlayer.Committer (a container's changes, a build
// step): the parent's layers are shared, the new layer is stored once by
// digest like any other, and the config is the parent's with spec.Config,
// the author and comment, and one more history entry.
//
// Errors: NotFound if the parent is gone; InvalidArgument for a bad ref;
// ResourceExhausted if the store's filesystem is full; the context's error
// if ctx ends. Nothing is recorded, and no blob is left, on any error.
func (s *Store) Commit(ctx context.Context, spec portlayer.CommitSpec) (_ portlayer.Image, err error) {
	var tags []string
	if spec.Ref != "" {
		t, err := parseTag(spec.Ref)
		if err != nil {
			return portlayer.Image{}, err
		}
		tags = []string{t.String()}
	}
	if err := s.reserve("commit", 0); err != nil {
		return portlayer.Image{}, err
	}
	defer s.afterFailedWrite(&err) // after the RUnlock below
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	s.mu.Lock()
	parent := s.images[spec.Parent]
	var layers []storedLayer
	if parent != nil {
		for i, d := range parent.config.RootFS.DiffIDs {
			if i >= len(parent.manifest.Layers) {
				break
			}
			m := parent.manifest.Layers[i]
			diffID, err := v1.NewHash(d.String())
			if err != nil {
				s.mu.Unlock()
				return portlayer.Image{}, fmt.Errorf("storage: commit: parent diff ID: %w", err)
			}
			layers = append(layers, storedLayer{Digest: m.Digest, Size: m.Size, MediaType: m.MediaType, DiffID: diffID, USize: s.layers[m.Digest.String()].Size})
		}
	}
	var cfg ocispec.Image
	if parent != nil {
		cfg = parent.config
	}
	s.mu.Unlock()
	switch {
	case spec.Parent == "":
		// FROM scratch: no layers yet, this machine's platform.
		cfg = ocispec.Image{RootFS: ocispec.RootFS{Type: "layers"}}
		cfg.OS, cfg.Architecture = "linux", "amd64"
	case parent == nil:
		return portlayer.Image{}, noSuchImage(spec.Parent)
	}
	now := time.Now().UTC()
	cfg.Created = &now
	cfg.Config = spec.Config
	cfg.Author = spec.Author
	cfg.RootFS.DiffIDs = slices.Clone(cfg.RootFS.DiffIDs)
	if spec.Layer != nil {
		l, err := s.writeLayerUncompressed(ctx, spec.Layer, nil)
		if err != nil {
			return portlayer.Image{}, fmt.Errorf("storage: commit: %w", err)
		}
		layers = append(layers, l)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.Digest(l.DiffID.String()))
	}
	if err := ctx.Err(); err != nil {
		return portlayer.Image{}, ctxErr(ctx)
	}
	cfg.History = append(slices.Clone(cfg.History), ocispec.History{
		Created: &now, Author: spec.Author, Comment: spec.Comment, CreatedBy: spec.CreatedBy,
		EmptyLayer: spec.Layer == nil,
	})
	raw, err := encodeConfig(commitConfig{Image: cfg, Comment: spec.Comment}, spec.ConfigExtra)
	if err != nil {
		return portlayer.Image{}, fmt.Errorf("storage: encode config: %w", err)
	}
	c, err := s.commit(newImage{config: raw, layers: layers, tags: tags, parent: spec.Parent})
	if err != nil {
		return portlayer.Image{}, err
	}
	s.log.Info("image committed", "image", c.rec.ID, "parent", spec.Parent, "ref", spec.Ref)
	return s.snapshot(c), nil
}

// commitConfig is the OCI config plus the top-level "comment" of the
// Docker image config format, which an image's inspection shows as Comment.
type commitConfig struct {
	ocispec.Image
	Comment string `json:"comment,omitempty"`
}

// encodeConfig marshals an image config with extra members added to its
// "config" object (those OCI defines are not overwritten).
func encodeConfig(c commitConfig, extra map[string]json.RawMessage) ([]byte, error) {
	raw, err := json.Marshal(c)
	if err != nil || len(extra) == 0 {
		return raw, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	inner := map[string]json.RawMessage{}
	if b, ok := top["config"]; ok {
		if err := json.Unmarshal(b, &inner); err != nil {
			return nil, err
		}
	}
	for k, v := range extra {
		if !ociConfigFields[k] && json.Valid(v) {
			inner[k] = v
		}
	}
	b, err := json.Marshal(inner)
	if err != nil {
		return nil, err
	}
	top["config"] = b
	return json.Marshal(top)
}
