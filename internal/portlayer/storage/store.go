package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

// Config configures a [Store].
type Config struct {
	// Root is the directory the store owns (created if missing, mode 0700).
	// Required. Nothing is written outside it.
	Root string `toml:"root" json:"root"`
	// InUse reports whether a container uses the image with the given ID
	// ("sha256:" plus 64 hex) and, if so, one such container's ID. Set by
	// the wiring in cmd/vch; nil means no image is ever in use.
	InUse func(imageID string) (containerID string, inUse bool) `toml:"-" json:"-"`
	// Registries is the pull policy: a whitelist and the insecure
	// registries. The zero value allows all, insecure only on loopback.
	Registries Registries `toml:"registries" json:"registries"`
	// Reserve, when set, is asked before an operation adds data (pull:
	// the manifest's declared layer and config sizes; load, import and
	// commit: 0, as their size is not known in advance) whether the VCH
	// may take that many more bytes: the storage quota. Its error
	// (ResourceExhausted) fails the operation before anything is written.
	Reserve func(what string, size int64) error `toml:"-" json:"-"`
}

// reserve asks Config.Reserve, if set.
func (s *Store) reserve(what string, size int64) error {
	if s.cfg.Reserve == nil {
		return nil
	}
	if err := s.cfg.Reserve(what, size); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// indexVersion is the schema version of images.json; bumped on incompatible
// changes so an older binary refuses a newer file instead of misreading it.
const indexVersion = 1

// indexFile is the on-disk index, Root/images.json.
type indexFile struct {
	Version int       `json:"version"`
	Images  []*record `json:"images"`
	// Layers maps a layer blob digest to facts learnt when it was stored.
	Layers map[string]layerInfo `json:"layers"`
}

// record is one image as persisted.
type record struct {
	// ID is the config digest, "sha256:" plus 64 hex.
	ID string `json:"id"`
	// Manifest is the digest of the image manifest blob.
	Manifest string `json:"manifest"`
	// MediaType is the manifest's media type.
	MediaType string `json:"mediaType"`
	// Tags are normalised tagged references, sorted.
	Tags []string `json:"tags,omitempty"`
	// Digests are normalised "repo@sha256:…" references, sorted.
	Digests []string `json:"digests,omitempty"`
	// Size is the sum of uncompressed layer sizes in bytes.
	Size int64 `json:"size"`
	// Added is when the image entered the store.
	Added time.Time `json:"added"`
	// Parent is the ID of the image this one was committed on (a
	// container's commit, each step of a build); empty for pulled, loaded
	// and imported images.
	Parent string `json:"parent,omitempty"`
}

// layerInfo is what the store knows about a stored layer blob.
type layerInfo struct {
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

// cached is a record with its parsed config and manifest.
type cached struct {
	rec    *record
	config ocispec.Image
	// extra holds the config's non-OCI "config" members (see decodeConfig).
	extra    map[string]json.RawMessage
	manifest v1.Manifest
}

// Store is the image store. It implements [portlayer.Images]; all methods
// are safe for concurrent use.
type Store struct {
	cfg    Config
	log    *slog.Logger
	layout layout.Path

	// gcMu is held shared by writers from their first blob write until
	// their record is committed, and exclusively by blob garbage collection.
	gcMu sync.RWMutex
	// blankMu serialises BlankRootfs's first build.
	blankMu sync.Mutex

	mu     sync.Mutex // guards the fields below
	closed bool
	images map[string]*cached      // by ID
	layers map[string]layerInfo    // by layer blob digest
	builds map[string]*rootfsBuild // by image ID
}

var (
	_ portlayer.Images           = (*Store)(nil)
	_ portlayer.RootfsStore      = (*Store)(nil)
	_ portlayer.BlankRootfsStore = (*Store)(nil)
)

// New opens (or creates) the store at cfg.Root and reloads its index, so
// images survive a restart. Left-over work files in Root/tmp, rootfs disks
// of deleted images and blobs no image references are removed.
// InvalidArgument if Root is empty; other errors are I/O or a corrupt index.
func New(cfg Config, logger *slog.Logger) (*Store, error) {
	if cfg.Root == "" {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "root directory not set")
	}
	if err := cfg.Registries.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("storage: root: %w", err)
	}
	cfg.Root = root
	s := &Store{
		cfg:    cfg,
		log:    logger.With("component", "storage"),
		images: map[string]*cached{},
		layers: map[string]layerInfo{},
		builds: map[string]*rootfsBuild{},
	}
	for _, d := range []string{root, s.path("oci"), s.path("rootfs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("storage: create %s: %w", d, err)
		}
	}
	if err := os.RemoveAll(s.path("tmp")); err != nil {
		return nil, fmt.Errorf("storage: clean tmp: %w", err)
	}
	if err := os.MkdirAll(s.path("tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("storage: create tmp: %w", err)
	}
	if _, err := os.Stat(s.path("oci", "index.json")); errors.Is(err, fs.ErrNotExist) {
		if s.layout, err = layout.Write(s.path("oci"), empty.Index); err != nil {
			return nil, fmt.Errorf("storage: create OCI layout: %w", err)
		}
	} else if s.layout, err = layout.FromPath(s.path("oci")); err != nil {
		return nil, fmt.Errorf("storage: open OCI layout: %w", err)
	}
	if err := s.reload(); err != nil {
		return nil, err
	}
	s.removeStaleRootfs()
	// Blobs of pulls or loads cut short by a crash belong to no image.
	s.mu.Lock()
	s.gcLocked()
	s.mu.Unlock()
	return s, nil
}

// Close releases the store. It is idempotent; methods called afterwards
// fail with FailedPrecondition.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.cfg.Root}, elem...)...)
}

func (s *Store) checkOpen() error {
	if s.closed {
		return portlayer.Errorf(portlayer.ClassFailedPrecondition, "store is closed")
	}
	return nil
}

// reload reads images.json and each image's config and manifest blobs.
func (s *Store) reload() error {
	data, err := os.ReadFile(s.path("images.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage: read index: %w", err)
	}
	var idx indexFile
	if err := json.Unmarshal(data, &idx); err != nil {
		return portlayer.Errorf(portlayer.ClassInternal, "parse index: %v: %w", err, errdefs.ErrDataLoss)
	}
	if idx.Version != indexVersion {
		return portlayer.Errorf(portlayer.ClassFailedPrecondition, "index version %d, want %d", idx.Version, indexVersion)
	}
	for k, v := range idx.Layers {
		s.layers[k] = v
	}
	for _, rec := range idx.Images {
		c, err := s.loadCached(rec)
		if err != nil {
			s.log.Warn("dropping image with unreadable blobs", "image", rec.ID, "error", err)
			continue
		}
		s.images[rec.ID] = c
	}
	return nil
}

func (s *Store) loadCached(rec *record) (*cached, error) {
	h, err := v1.NewHash(rec.Manifest)
	if err != nil {
		return nil, err
	}
	mb, err := s.layout.Bytes(h)
	if err != nil {
		return nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, err
	}
	cb, err := s.layout.Bytes(m.Config.Digest)
	if err != nil {
		return nil, err
	}
	cfg, extra, err := decodeConfig(cb)
	if err != nil {
		return nil, err
	}
	return &cached{rec: rec, config: cfg, extra: extra, manifest: m}, nil
}

// ociConfigFields are the members of an image config's "config" object
// that the OCI image-spec (config.md) defines; others are kept as extras.
var ociConfigFields = map[string]bool{
	"User": true, "ExposedPorts": true, "Env": true, "Entrypoint": true, "Cmd": true,
	"Volumes": true, "WorkingDir": true, "Labels": true, "StopSignal": true,
}

// decodeConfig parses an image config blob and returns, besides it, the
// members of its "config" object that OCI does not define (the Docker
// image config's Healthcheck, OnBuild, Shell, ArgsEscaped), verbatim; nil
// if none.
func decodeConfig(raw []byte) (ocispec.Image, map[string]json.RawMessage, error) {
	var cfg ocispec.Image
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, nil, err
	}
	var top struct {
		Config map[string]json.RawMessage `json:"config"`
	}
	if json.Unmarshal(raw, &top) != nil {
		return cfg, nil, nil
	}
	var extra map[string]json.RawMessage
	for k, v := range top.Config {
		if ociConfigFields[k] || string(v) == "null" {
			continue
		}
		if extra == nil {
			extra = map[string]json.RawMessage{}
		}
		extra[k] = v
	}
	return cfg, extra, nil
}

// persist writes images.json atomically (temp file, fsync, rename). Called
// with s.mu held.
func (s *Store) persist() error {
	idx := indexFile{Version: indexVersion, Layers: s.layers}
	for _, c := range s.images {
		idx.Images = append(idx.Images, c.rec)
	}
	slices.SortFunc(idx.Images, func(a, b *record) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	data, err := json.MarshalIndent(&idx, "", "\t")
	if err != nil {
		return fmt.Errorf("storage: encode index: %w", err)
	}
	if err := writeFileAtomic(s.path("images.json"), data); err != nil {
		return fmt.Errorf("storage: write index: %w", err)
	}
	return nil
}

// writeFileAtomic replaces name with data so that a crash leaves either the
// old or the new content.
func writeFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), name); err != nil {
		return err
	}
	return syncDir(filepath.Dir(name))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// image converts a cached record into the contract's value; layers gives
// the uncompressed layer sizes (the store's s.layers, read under s.mu).
func (c *cached) image(layers map[string]layerInfo) portlayer.Image {
	img := portlayer.Image{
		ID:          c.rec.ID,
		RepoTags:    familiarAll(c.rec.Tags),
		RepoDigests: familiarAll(c.rec.Digests),
		Config:      c.config,
		Size:        c.rec.Size,
		Parent:      c.rec.Parent,
		ConfigExtra: maps.Clone(c.extra),
	}
	slices.Sort(img.RepoTags)
	slices.Sort(img.RepoDigests)
	for i, d := range c.config.RootFS.DiffIDs {
		img.Layers = append(img.Layers, d.String())
		var size int64
		if i < len(c.manifest.Layers) {
			size = layers[c.manifest.Layers[i].Digest.String()].Size
		}
		img.LayerSizes = append(img.LayerSizes, size)
	}
	if c.config.Created != nil {
		img.Created = *c.config.Created
	} else {
		img.Created = c.rec.Added
	}
	return img
}

// ctxErr wraps a context's error for return.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}
