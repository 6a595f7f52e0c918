package storage

import (
	"context"
	"slices"
	"strings"

	"github.com/distribution/reference"

	"github.com/vchproject/vch/internal/portlayer"
)

// Get resolves ref to an image; ref is one of: a full ID
// ("sha256:" plus 64 hex, or the 64 hex alone), a reference
// ("busybox" meaning docker.io/library/busybox:latest, "name@sha256:…" for
// a pulled digest), or a unique ID prefix with or without "sha256:".
// NotFound (portlayer.NoSuchImage, its ID the reference normalised:
// "busybox:latest") if nothing matches or a prefix is ambiguous.
func (s *Store) Get(ctx context.Context, ref string) (portlayer.Image, error) {
	if err := ctxErr(ctx); err != nil {
		return portlayer.Image{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return portlayer.Image{}, err
	}
	c, _, err := s.resolveLocked(ref)
	if err != nil {
		return portlayer.Image{}, err
	}
	return c.image(s.layers), nil
}

// List returns every image, newest (by config creation time) first, ties by
// ID. Untagged images are included with empty RepoTags.
func (s *Store) List(ctx context.Context) ([]portlayer.Image, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	out := make([]portlayer.Image, 0, len(s.images))
	for _, c := range s.images {
		out = append(out, c.image(s.layers))
	}
	slices.SortFunc(out, func(a, b portlayer.Image) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Tag points the reference target (":latest" if it has no tag) at the image
// src resolves to, moving it from any image that had it (one image a tag).
// NotFound if src does not resolve; InvalidArgument if target is not a
// valid tag reference (digest references cannot be created).
func (s *Store) Tag(ctx context.Context, src, target string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	t, err := parseTag(target)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	c, _, err := s.resolveLocked(src)
	if err != nil {
		return err
	}
	s.untagLocked(t.String())
	c.rec.Tags = appendSorted(c.rec.Tags, t.String())
	return s.persist()
}

// resolveLocked finds the image for ref; named is the normalised reference
// when ref matched a tag or digest reference, "" when it matched an ID.
// Called with s.mu held.
func (s *Store) resolveLocked(ref string) (c *cached, named string, err error) {
	if hex, ok := strings.CutPrefix(ref, "sha256:"); ok {
		if c := s.byIDPrefix(hex); c != nil {
			return c, "", nil
		}
		return nil, "", noSuchImage(ref)
	}
	if fullHex.MatchString(ref) {
		if c := s.images["sha256:"+ref]; c != nil {
			return c, "", nil
		}
		return nil, "", noSuchImage(ref)
	}
	n, perr := reference.ParseNormalizedNamed(ref)
	if perr == nil {
		n = reference.TagNameOnly(n)
		want := n.String()
		for _, c := range s.images {
			if slices.Contains(c.rec.Tags, want) || slices.Contains(c.rec.Digests, want) {
				return c, want, nil
			}
		}
	}
	if prefixHex.MatchString(ref) {
		if c := s.byIDPrefix(ref); c != nil {
			return c, "", nil
		}
	}
	if perr != nil {
		return nil, "", portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid reference format %q", ref)
	}
	return nil, "", noSuchImage(reference.FamiliarString(n))
}

// byIDPrefix returns the one image whose ID hex starts with prefix, or nil
// if none or several do.
func (s *Store) byIDPrefix(prefix string) *cached {
	if !prefixHex.MatchString(prefix) {
		return nil
	}
	var found *cached
	for id, c := range s.images {
		if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), prefix) {
			if found != nil {
				return nil
			}
			found = c
		}
	}
	return found
}

func noSuchImage(what string) error {
	return portlayer.NoSuchImage(what)
}
