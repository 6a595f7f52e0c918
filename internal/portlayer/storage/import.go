package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

// Import creates a one-layer image from the tar stream r (plain, gzip or
// zstd), with opts.Config supplying Cmd, Env and the rest and
// opts.Platform its platform (linux/amd64 when zero): what Engine API
// v1.50's POST /images/create?fromSrc=- asks for.
// The image is tagged ref when ref is not empty (":latest" if it has no
// tag); the tag moves from any image that had it. Progress reports
// "Importing" with Current in uncompressed bytes.
//
// Errors: InvalidArgument for a bad ref or compressed stream;
// ResourceExhausted if the store's filesystem is full; the context's error
// if ctx ends. Nothing is left behind on any error.
func (s *Store) Import(ctx context.Context, r io.Reader, ref string, opts portlayer.ImportOptions, progress portlayer.ProgressFunc) (_ portlayer.Image, err error) {
	var tags []string
	if ref != "" {
		t, err := parseTag(ref)
		if err != nil {
			return portlayer.Image{}, err
		}
		tags = []string{t.String()}
	}
	if err := s.reserve("import", 0); err != nil {
		return portlayer.Image{}, err
	}
	rc, err := decompress(io.NopCloser(r))
	if err != nil {
		return portlayer.Image{}, err
	}
	defer rc.Close()

	defer s.afterFailedWrite(&err) // after the RUnlock below
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	l, err := s.writeLayerUncompressed(ctx, rc, throttle(func(n int64) {
		if progress != nil {
			progress(portlayer.Progress{Status: "Importing", Current: n})
		}
	}))
	if err != nil {
		return portlayer.Image{}, err
	}
	now := time.Now().UTC()
	plat := opts.Platform
	if plat.OS == "" && plat.Architecture == "" {
		plat = ocispec.Platform{Architecture: "amd64", OS: "linux"}
	}
	cfg := ocispec.Image{
		Created:  &now,
		Platform: plat,
		Config:   opts.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.Digest(l.DiffID.String())}},
		History:  []ocispec.History{{Created: &now, Comment: "Imported from -"}},
	}
	raw, err := json.Marshal(&cfg)
	if err != nil {
		return portlayer.Image{}, fmt.Errorf("storage: encode config: %w", err)
	}
	c, err := s.commit(newImage{config: raw, layers: []storedLayer{l}, tags: tags})
	if err != nil {
		return portlayer.Image{}, err
	}
	s.log.Info("image imported", "image", c.rec.ID, "ref", ref)
	return s.snapshot(c), nil
}

// snapshot copies an image value out under the lock.
func (s *Store) snapshot(c *cached) portlayer.Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.image(s.layers)
}

// throttle limits fn to about ten calls a second (plus none dropped at the
// very start), so progress consumers are not flooded.
func throttle(fn func(int64)) func(int64) {
	var last time.Time
	return func(n int64) {
		if now := time.Now(); now.Sub(last) >= 100*time.Millisecond {
			last = now
			fn(n)
		}
	}
}
