package storage

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

// maxArchiveLinks bounds symlink chains inside an archive (a
// docker-archive links repeated layers to their first copy).
const maxArchiveLinks = 16

// maxMetadataBytes bounds manifest.json, index.json and config files read
// into memory, against hostile archives: 8 MiB, far above real ones (a
// config is a few KiB).
const maxMetadataBytes = 8 << 20

// archiveEntry is a regular file's position in a spooled archive.
type archiveEntry struct {
	offset, size int64
}

// spooledArchive is a tar archive copied to a temp file and indexed, so its
// members can be read in any order.
type spooledArchive struct {
	f     *os.File
	files map[string]archiveEntry
	links map[string]string // symlink name → target, both cleaned
}

// dockerManifestEntry is one element of a docker-archive manifest.json
// (Docker Image Specification v1.2, "Combined Image JSON + Filesystem
// Changeset Format": Config, RepoTags, Layers).
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Load reads an image archive (as `docker save` writes) and stores the
// images it holds, with
// the tags it records (tags move from images that had them). It accepts
// the docker-archive format (manifest.json naming each image's config and
// layer tars, layers plain or compressed, repeated layers as symlinks) and,
// when manifest.json is absent, an OCI image layout tar (index.json;
// references from "org.opencontainers.image.ref.name" annotations when they
// are full references). Images are returned in archive order. Progress
// reports "Loading layer" per layer (ID: 12 hex of the diff ID) with
// Current and Total in archive bytes. Each returned image's RepoTags are the
// tags this archive applied (what a front end reports as loaded); nil means
// the archive applied none, so the image is reported by ID. Other tags the
// image already had are kept and visible through Get.
//
// Errors: InvalidArgument for a malformed archive (not a tar, no
// manifest.json or index.json, missing members, layers that do not match
// the config); ResourceExhausted if the store's filesystem is full; the
// context's error if ctx ends. A failure keeps the images committed before
// it and leaves no blob of the others.
func (s *Store) Load(ctx context.Context, r io.Reader, progress portlayer.ProgressFunc) (_ []portlayer.Image, err error) {
	if err := s.reserve("load", 0); err != nil {
		return nil, err
	}
	defer s.afterFailedWrite(&err) // after the RUnlock below
	a, err := s.spool(ctx, r)
	if err != nil {
		return nil, err
	}
	defer func() {
		a.f.Close()
		os.Remove(a.f.Name())
	}()

	var news []newImage
	if _, ok := a.files["manifest.json"]; ok {
		news, err = s.loadDockerArchive(a)
	} else if _, ok := a.files["index.json"]; ok {
		news, err = s.loadOCIArchive(a)
	} else {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: no manifest.json (docker save) or index.json (OCI layout)")
	}
	if err != nil {
		return nil, err
	}

	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	var out []portlayer.Image
	for _, n := range news {
		var cfg ocispec.Image
		if err := json.Unmarshal(n.config, &cfg); err != nil {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: image config: %w", err)
		}
		for i, name := range n.layerFiles {
			sr, err := a.open(name)
			if err != nil {
				return nil, err
			}
			id := ""
			if i < len(cfg.RootFS.DiffIDs) {
				id = shortID(cfg.RootFS.DiffIDs[i].String())
			}
			total := sr.Size()
			report := func(n int64) {
				if progress != nil {
					progress(portlayer.Progress{ID: id, Status: "Loading layer", Current: n, Total: total})
				}
			}
			cr := &progressReader{ctx: ctx, r: sr, fn: throttle(report)}
			rc, err := decompress(io.NopCloser(cr))
			if err != nil {
				return nil, fmt.Errorf("storage: invalid archive: layer %s: %w", name, err)
			}
			l, err := s.writeLayerUncompressed(ctx, rc, nil)
			rc.Close()
			if err != nil {
				return nil, fmt.Errorf("storage: load layer %s: %w", name, err)
			}
			report(total)
			n.layers = append(n.layers, l)
		}
		c, err := s.commit(n)
		if err != nil {
			return nil, err
		}
		s.log.Info("image loaded", "image", c.rec.ID, "tags", n.tags)
		img := s.snapshot(c)
		img.RepoTags = familiarAll(n.tags)
		slices.Sort(img.RepoTags)
		out = append(out, img)
	}
	return out, nil
}

// spool copies r to Root/tmp and indexes its members.
func (s *Store) spool(ctx context.Context, r io.Reader) (*spooledArchive, error) {
	f, err := os.CreateTemp(s.path("tmp"), "load-")
	if err != nil {
		return nil, fmt.Errorf("storage: temp archive: %w", err)
	}
	a := &spooledArchive{f: f, files: map[string]archiveEntry{}, links: map[string]string{}}
	fail := func(err error) (*spooledArchive, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	if _, err := io.Copy(f, &progressReader{ctx: ctx, r: r}); err != nil {
		if ctx.Err() != nil {
			return fail(ctxErr(ctx))
		}
		return fail(fmt.Errorf("storage: read archive: %w", err))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(fmt.Errorf("storage: read archive: %w", err))
	}
	// tar.Reader reads headers block by block from a plain reader, so the
	// count after Next is the member's data offset.
	cr := &countReader{r: f}
	tr := tar.NewReader(cr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: %w", err))
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "/"))
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			a.files[name] = archiveEntry{offset: cr.n, size: hdr.Size}
		case tar.TypeSymlink:
			target := hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			a.links[name] = path.Clean(strings.TrimPrefix(target, "/"))
		case tar.TypeLink:
			a.links[name] = path.Clean(strings.TrimPrefix(hdr.Linkname, "/"))
		}
	}
	if len(a.files) == 0 {
		return fail(portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: no files"))
	}
	return a, nil
}

// open returns a reader for member name, following links inside the archive.
func (a *spooledArchive) open(name string) (*io.SectionReader, error) {
	name = path.Clean(strings.TrimPrefix(name, "/"))
	for range maxArchiveLinks {
		if e, ok := a.files[name]; ok {
			return io.NewSectionReader(a.f, e.offset, e.size), nil
		}
		target, ok := a.links[name]
		if !ok {
			break
		}
		name = target
	}
	return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: member %q missing", name)
}

// readSmall reads a metadata member fully.
func (a *spooledArchive) readSmall(name string) ([]byte, error) {
	sr, err := a.open(name)
	if err != nil {
		return nil, err
	}
	if sr.Size() > maxMetadataBytes {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: %s is %d bytes, limit %d", name, sr.Size(), maxMetadataBytes)
	}
	return io.ReadAll(sr)
}

func (s *Store) loadDockerArchive(a *spooledArchive) ([]newImage, error) {
	raw, err := a.readSmall("manifest.json")
	if err != nil {
		return nil, err
	}
	var entries []dockerManifestEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: manifest.json: %w", err)
	}
	if len(entries) == 0 {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: manifest.json lists no images")
	}
	var out []newImage
	for _, e := range entries {
		var tags []string
		for _, t := range e.RepoTags {
			tagged, err := parseTag(t)
			if err != nil {
				return nil, portlayer.Errorf(portlayer.ClassOf(err), "invalid archive: RepoTags: %w", err)
			}
			tags = append(tags, tagged.String())
		}
		config, err := a.readSmall(e.Config)
		if err != nil {
			return nil, err
		}
		out = append(out, newImage{config: config, tags: tags, layerFiles: e.Layers})
	}
	return out, nil
}

func (s *Store) loadOCIArchive(a *spooledArchive) ([]newImage, error) {
	raw, err := a.readSmall("index.json")
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: index.json: %w", err)
	}
	var out []newImage
	for _, d := range idx.Manifests {
		n, err := s.ociManifest(a, d, 0)
		if err != nil {
			return nil, err
		}
		if n == nil {
			continue
		}
		ref := d.Annotations[ocispec.AnnotationRefName]
		if r := d.Annotations["io.containerd.image.name"]; r != "" {
			ref = r
		}
		if ref != "" && strings.ContainsAny(ref, "/:") {
			if t, err := parseTag(ref); err == nil {
				n.tags = []string{t.String()}
			}
		}
		out = append(out, *n)
	}
	return out, nil
}

// ociManifest reads the image behind descriptor d, choosing linux/amd64
// inside nested indexes; nil if an index holds no such image.
func (s *Store) ociManifest(a *spooledArchive, d ocispec.Descriptor, depth int) (*newImage, error) {
	if depth > 4 {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: indexes nested too deep")
	}
	h, err := v1.NewHash(d.Digest.String())
	if err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: digest %q", d.Digest)
	}
	raw, err := a.readSmall(path.Join("blobs", h.Algorithm, h.Hex))
	if err != nil {
		return nil, err
	}
	switch d.MediaType {
	case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
		var idx ocispec.Index
		if err := json.Unmarshal(raw, &idx); err != nil {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: index %s: %w", h, err)
		}
		for _, m := range idx.Manifests {
			if m.Platform != nil && (m.Platform.OS != "linux" || m.Platform.Architecture != "amd64") {
				continue
			}
			return s.ociManifest(a, m, depth+1)
		}
		return nil, nil
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: manifest %s: %w", h, err)
	}
	ch, err := v1.NewHash(m.Config.Digest.String())
	if err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: config digest")
	}
	config, err := a.readSmall(path.Join("blobs", ch.Algorithm, ch.Hex))
	if err != nil {
		return nil, err
	}
	n := &newImage{config: config}
	for _, l := range m.Layers {
		lh, err := v1.NewHash(l.Digest.String())
		if err != nil {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid archive: layer digest")
		}
		n.layerFiles = append(n.layerFiles, path.Join("blobs", lh.Algorithm, lh.Hex))
	}
	return n, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
