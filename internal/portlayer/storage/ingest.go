package storage

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vchproject/vch/internal/portlayer"
)

// newImage is an image whose blobs are being written, before its record is
// committed.
type newImage struct {
	config []byte
	layers []storedLayer
	// manifest and mediaType are the registry's manifest for pulled images;
	// nil means the store writes an OCI manifest itself.
	manifest  []byte
	mediaType types.MediaType
	// tags and digests are normalised references to point at the image.
	tags    []string
	digests []string
	// layerFiles names the layer members of an archive being loaded.
	layerFiles []string
	// parent is the image committed on, for commits; see record.Parent.
	parent string
}

// commit verifies the config against the layers, stores config and
// manifest, and records the image with its references. Tags move from any
// image that had them (that image stays, untagged if that was its last
// reference: a tag names one image at a time).
// The caller holds s.gcMu shared. InvalidArgument if the config is not an
// image config or its rootfs.diff_ids disagree with the layers.
func (s *Store) commit(n newImage) (*cached, error) {
	cfg, extra, err := decodeConfig(n.config)
	if err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "image config: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(n.layers) {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "image config lists %d layers, image has %d", len(cfg.RootFS.DiffIDs), len(n.layers))
	}
	for i, l := range n.layers {
		if cfg.RootFS.DiffIDs[i].String() != l.DiffID.String() {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "layer %d: diff ID %s, config says %s", i, l.DiffID, cfg.RootFS.DiffIDs[i])
		}
	}
	cfgHash, err := s.writeBlobBytes(n.config)
	if err != nil {
		return nil, err
	}
	mediaType := n.mediaType
	if n.manifest == nil {
		m := v1.Manifest{
			SchemaVersion: 2,
			MediaType:     types.OCIManifestSchema1,
			Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(n.config)), Digest: cfgHash},
		}
		for _, l := range n.layers {
			m.Layers = append(m.Layers, v1.Descriptor{MediaType: l.MediaType, Size: l.Size, Digest: l.Digest})
		}
		if n.manifest, err = json.Marshal(&m); err != nil {
			return nil, fmt.Errorf("storage: encode manifest: %w", err)
		}
		mediaType = types.OCIManifestSchema1
	}
	mHash, err := s.writeBlobBytes(n.manifest)
	if err != nil {
		return nil, err
	}
	var manifest v1.Manifest
	if err := json.Unmarshal(n.manifest, &manifest); err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "manifest: %w", err)
	}
	var size int64
	for _, l := range n.layers {
		size += l.USize
	}
	id := cfgHash.String()

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	undo := s.saveStateLocked()
	for _, l := range n.layers {
		s.layers[l.Digest.String()] = layerInfo{DiffID: l.DiffID.String(), Size: l.USize}
	}
	c, ok := s.images[id]
	if !ok {
		c = &cached{
			rec: &record{
				ID:        id,
				Manifest:  mHash.String(),
				MediaType: string(mediaType),
				Size:      size,
				Added:     time.Now().UTC(),
				Parent:    n.parent,
			},
			config:   cfg,
			extra:    extra,
			manifest: manifest,
		}
		s.images[id] = c
	}
	for _, t := range n.tags {
		s.untagLocked(t)
		c.rec.Tags = appendSorted(c.rec.Tags, t)
	}
	for _, d := range n.digests {
		c.rec.Digests = appendSorted(c.rec.Digests, d)
	}
	if err := s.persist(); err != nil {
		undo() // the index on disk is unchanged: so must memory be
		return nil, err
	}
	if !ok {
		// After persist: ggcr rewrites index.json in place, which a full
		// disk can cut; the store itself never reads it.
		desc := v1.Descriptor{MediaType: mediaType, Size: int64(len(n.manifest)), Digest: mHash}
		if err := s.layout.AppendDescriptor(desc); err != nil {
			s.log.Warn("cannot list image in OCI index.json", "image", id, "error", err)
		}
	}
	return c, nil
}

// saveStateLocked returns a function that puts the image set, every
// image's references and the layer facts back as they are now, for a
// change whose persist failed. Called with s.mu held; so is the result.
func (s *Store) saveStateLocked() func() {
	images := maps.Clone(s.images)
	layers := maps.Clone(s.layers)
	type refs struct{ tags, digests []string }
	saved := make(map[*cached]refs, len(s.images))
	for _, c := range s.images {
		saved[c] = refs{slices.Clone(c.rec.Tags), slices.Clone(c.rec.Digests)}
	}
	return func() {
		s.images, s.layers = images, layers
		for c, r := range saved {
			c.rec.Tags, c.rec.Digests = r.tags, r.digests
		}
	}
}

// untagLocked removes the normalised reference ref from whichever image has
// it; it reports the image. Called with s.mu held.
func (s *Store) untagLocked(ref string) *cached {
	for _, c := range s.images {
		if i := slices.Index(c.rec.Tags, ref); i >= 0 {
			c.rec.Tags = slices.Delete(c.rec.Tags, i, i+1)
			return c
		}
		if i := slices.Index(c.rec.Digests, ref); i >= 0 {
			c.rec.Digests = slices.Delete(c.rec.Digests, i, i+1)
			return c
		}
	}
	return nil
}

func appendSorted(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}
	list = append(list, v)
	slices.Sort(list)
	return list
}
