package storage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

// saveImage is one image of a save, with the tags the archive records.
type saveImage struct {
	c    *cached
	tags []string // normalised
}

// Save writes the images refs name to w as one archive that is both a
// docker-archive (moby image spec v1.2: manifest.json, read by every
// `docker load` including 20.10's) and an OCI image layout (oci-layout,
// index.json), as `docker save` writes since 25.0, so readers of either
// format read it:
//
//	blobs/sha256/<hex>   configs, uncompressed layer tars (named by diff ID,
//	                     each once however many images share it) and OCI
//	                     manifests of those tars
//	manifest.json        [{Config, RepoTags, Layers}] per image, in refs order
//	repositories         {"name": {"tag": "<top diff ID hex>"}}
//	index.json           one manifest descriptor per saved tag (or per
//	                     untagged image), annotated with its name
//	oci-layout
//
// A ref that is a repository name without tag or digest saves every tag of
// that repository, in tag order; an image ID records no tag; an image
// named twice is written once with all its requested tags.
// NotFound (portlayer.NoSuchImage) if a ref resolves to nothing, in
// which case nothing is written. Safe for concurrent use: blobs are held
// against garbage collection while the archive is written.
func (s *Store) Save(ctx context.Context, refs []string, w io.Writer) error {
	if len(refs) == 0 {
		return portlayer.Errorf(portlayer.ClassInvalidArgument, "no images named").WithOp("save")
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	images, layerSizes, err := s.resolveSave(refs)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	dirs := []string{"blobs/", "blobs/sha256/"}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return fmt.Errorf("storage: save: %w", err)
		}
	}
	writeFileAt := func(name string, data []byte, mtime time.Time) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return fmt.Errorf("storage: save: %w", err)
		}
		_, err := tw.Write(data)
		if err != nil {
			return fmt.Errorf("storage: save: %w", err)
		}
		return nil
	}
	writeFile := func(name string, data []byte) error { return writeFileAt(name, data, epoch) }

	written := map[string]bool{}
	var manifest []dockerManifestEntry
	repos := map[string]map[string]string{}
	index := ocispec.Index{Versioned: ociVersioned(), MediaType: ocispec.MediaTypeImageIndex}
	for _, im := range images {
		if err := ctxErr(ctx); err != nil {
			return err
		}
		cfgHash := im.c.manifest.Config.Digest
		cfgBytes, err := s.layout.Bytes(cfgHash)
		if err != nil {
			return fmt.Errorf("storage: save %s: config: %w", im.c.rec.ID, err)
		}
		cfgName := "blobs/sha256/" + cfgHash.Hex
		if !written[cfgName] {
			// The config's time is the image's creation, as other writers
			// of the format set it, so the same images give the same bytes.
			mtime := epoch
			var cfg ocispec.Image
			if json.Unmarshal(cfgBytes, &cfg) == nil && cfg.Created != nil && cfg.Created.After(epoch) {
				mtime = *cfg.Created
			}
			if err := writeFileAt(cfgName, cfgBytes, mtime); err != nil {
				return err
			}
			written[cfgName] = true
		}
		entry := dockerManifestEntry{Config: cfgName, RepoTags: []string{}}
		ociManifest := ocispec.Manifest{
			Versioned: ociVersioned(),
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digestOf(cfgHash), Size: int64(len(cfgBytes))},
			Layers:    []ocispec.Descriptor{},
		}
		for i, diffID := range im.c.config.RootFS.DiffIDs {
			name := "blobs/sha256/" + diffID.Encoded()
			blob := im.c.manifest.Layers[i].Digest
			size := layerSizes[blob.String()]
			if !written[name] {
				if err := s.writeLayerTar(ctx, tw, name, blob, size, epoch); err != nil {
					return err
				}
				written[name] = true
			}
			entry.Layers = append(entry.Layers, name)
			ociManifest.Layers = append(ociManifest.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: diffID, Size: size})
		}
		mb, err := json.Marshal(ociManifest)
		if err != nil {
			return fmt.Errorf("storage: save: %w", err)
		}
		mh, err := s.hashBytes(mb)
		if err != nil {
			return err
		}
		if name := "blobs/sha256/" + mh.Hex; !written[name] {
			if err := writeFile(name, mb); err != nil {
				return err
			}
			written[name] = true
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digestOf(mh), Size: int64(len(mb))}
		if len(im.tags) == 0 {
			index.Manifests = append(index.Manifests, desc)
		}
		for _, t := range im.tags {
			fam := familiar(t)
			entry.RepoTags = append(entry.RepoTags, fam)
			d := desc
			tagOnly := fam[strings.LastIndex(fam, ":")+1:]
			d.Annotations = map[string]string{"io.containerd.image.name": t, ocispec.AnnotationRefName: tagOnly}
			index.Manifests = append(index.Manifests, d)
			if n, err := reference.ParseNormalizedNamed(t); err == nil {
				if tagged, ok := n.(reference.Tagged); ok && len(im.c.config.RootFS.DiffIDs) > 0 {
					repo := reference.FamiliarName(n)
					if repos[repo] == nil {
						repos[repo] = map[string]string{}
					}
					top := im.c.config.RootFS.DiffIDs[len(im.c.config.RootFS.DiffIDs)-1]
					repos[repo][tagged.Tag()] = top.Encoded()
				}
			}
		}
		manifest = append(manifest, entry)
	}
	for _, f := range []struct {
		name string
		v    any
	}{
		{"index.json", index},
		{"manifest.json", manifest},
		{"repositories", repos},
		{"oci-layout", ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}},
	} {
		data, err := json.Marshal(f.v)
		if err != nil {
			return fmt.Errorf("storage: save: %w", err)
		}
		if err := writeFile(f.name, data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("storage: save: %w", err)
	}
	return nil
}

// resolveSave resolves refs under s.mu into images (deduplicated, in the
// order first named) and a snapshot of the layer sizes they need.
func (s *Store) resolveSave(refs []string) ([]*saveImage, map[string]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, nil, err
	}
	var out []*saveImage
	byID := map[string]*saveImage{}
	add := func(c *cached, tag string) {
		im := byID[c.rec.ID]
		if im == nil {
			im = &saveImage{c: c}
			byID[c.rec.ID] = im
			out = append(out, im)
		}
		if tag != "" && !slices.Contains(im.tags, tag) {
			im.tags = append(im.tags, tag)
		}
	}
	for _, ref := range refs {
		// "busybox" (a name alone) means every tag of that repository.
		if n, err := reference.ParseNormalizedNamed(ref); err == nil && reference.IsNameOnly(n) && !prefixHex.MatchString(ref) {
			var found []string
			for _, c := range s.images {
				for _, t := range c.rec.Tags {
					if repoOf(t) == n.Name() {
						found = append(found, t)
					}
				}
			}
			slices.Sort(found)
			for _, t := range found {
				c, _, _ := s.resolveLocked(t)
				add(c, t)
			}
			if len(found) > 0 {
				continue
			}
		}
		c, named, err := s.resolveLocked(ref)
		if err != nil {
			return nil, nil, err
		}
		tag := ""
		if n, err := reference.ParseNormalizedNamed(named); err == nil {
			if _, ok := n.(reference.Tagged); ok {
				tag = named
			}
		}
		add(c, tag)
	}
	sizes := map[string]int64{}
	for _, im := range out {
		if len(im.c.manifest.Layers) != len(im.c.config.RootFS.DiffIDs) {
			return nil, nil, portlayer.Errorf(portlayer.ClassInternal, "save %s: manifest has %d layers, config %d: %w", im.c.rec.ID, len(im.c.manifest.Layers), len(im.c.config.RootFS.DiffIDs), errdefs.ErrDataLoss)
		}
		for _, l := range im.c.manifest.Layers {
			sizes[l.Digest.String()] = s.layers[l.Digest.String()].Size
		}
	}
	return out, sizes, nil
}

// writeLayerTar writes the stored layer blob, decompressed, as the tar
// member name of size bytes. When the index does not know the size (0),
// the blob is decompressed once to count it.
func (s *Store) writeLayerTar(ctx context.Context, tw *tar.Writer, name string, blob v1.Hash, size int64, mtime time.Time) error {
	open := func() (io.ReadCloser, error) {
		f, err := os.Open(s.blobPath(blob))
		if err != nil {
			return nil, fmt.Errorf("storage: save: layer %s: %w", blob, err)
		}
		return decompress(readCloser{Reader: &progressReader{ctx: ctx, r: f}, Closer: f})
	}
	if size <= 0 {
		rc, err := open()
		if err != nil {
			return err
		}
		size, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("storage: save: layer %s: %w", blob, err)
		}
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("storage: save: %w", err)
	}
	n, err := io.Copy(tw, io.LimitReader(rc, size+1))
	if err != nil {
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		return fmt.Errorf("storage: save: layer %s: %w", blob, err)
	}
	if n != size {
		return portlayer.Errorf(portlayer.ClassInternal, "layer %s is %d bytes, index says %d: %w", blob, n, size, errdefs.ErrDataLoss).WithOp("save")
	}
	return nil
}

// hashBytes returns data's sha256 digest as a v1.Hash.
func (s *Store) hashBytes(data []byte) (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(data))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("storage: save: %w", err)
	}
	return h, nil
}

// readCloser joins a reader with the closer of what it reads.
type readCloser struct {
	io.Reader
	io.Closer
}

// digestOf converts a go-containerregistry hash to an OCI digest.
func digestOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

// ociVersioned is the schemaVersion every OCI manifest and index carries.
func ociVersioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }
