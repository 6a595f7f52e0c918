package storage

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/match"

	"github.com/vchproject/vch/internal/portlayer"
)

// Remove untags or deletes an image. The rules keep what is still
// needed, an image containers use or other images are built on, and
// delete an image with its last reference (they are the Engine API's
// image removal rules, v1.50, which image users know):
//
//   - By reference ("busybox", "busybox:1", "name@sha256:…"): the reference
//     is untagged (Untagged: "busybox:latest"); removing a repository's last
//     tag also drops its digest references. When no reference is left the
//     image is deleted (Deleted: "sha256:…") unless a container uses it, in
//     which case it stays, untagged. Conflict (Reason in_use) if that
//     reference is the image's only one, a container uses the image and
//     force is false.
//   - By ID or ID prefix: all references are untagged and the image
//     deleted. Without force, Conflict if references span several tags or
//     repositories (Reason referenced) or a container uses the image
//     (Reason in_use). A used image is never deleted, even with
//     force: its disk backs the container's.
//
// An image that is another's Parent is only untagged by reference, and
// refused by ID (Conflict, Reason has_children). Deleting an image also
// deletes its untagged parents that no other image or container needs,
// always (there is no option to keep them: no "noprune").
// Deleting an image removes its rootfs disk and garbage-collects blobs no
// other image references. Records are in the order of a removal report:
// Untagged lines, then Deleted. NotFound (portlayer.NoSuchImage) if
// ref does not resolve. Waits for pulls and loads in progress to commit.
func (s *Store) Remove(ctx context.Context, ref string, force bool) ([]portlayer.ImageDelete, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	// Ask compute first, without our lock, so its callback may call us.
	s.mu.Lock()
	c, _, err := s.resolveLocked(ref)
	if err == nil {
		err = s.checkOpen()
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	container, inUse := "", false
	if s.cfg.InUse != nil {
		container, inUse = s.cfg.InUse(c.rec.ID)
	}
	// The parents a deletion may take along, asked about in advance too.
	s.mu.Lock()
	var ancestors []string
	for p := c.rec.Parent; p != "" && len(ancestors) < maxAncestors; {
		pc := s.images[p]
		if pc == nil {
			break
		}
		ancestors = append(ancestors, p)
		p = pc.rec.Parent
	}
	s.mu.Unlock()
	ancestorInUse := map[string]bool{}
	for _, p := range ancestors {
		if s.cfg.InUse != nil {
			_, ancestorInUse[p] = s.cfg.InUse(p)
		}
	}

	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	c2, named, err := s.resolveLocked(ref)
	if err != nil {
		return nil, err
	}
	if c2 != c {
		return nil, portlayer.Errorf(portlayer.ClassConflict, "%s changed during removal", ref)
	}
	id := c.rec.ID
	short := shortID(id)
	var records []portlayer.ImageDelete

	if named != "" {
		if !force && inUse && singleReference(c.rec) {
			return nil, portlayer.ImageConflict("remove", short, ref, portlayer.ReasonInUse, shortID(container))
		}
		wasTag := slices.Contains(c.rec.Tags, named)
		c.rec.Tags = slices.DeleteFunc(c.rec.Tags, func(t string) bool { return t == named })
		c.rec.Digests = slices.DeleteFunc(c.rec.Digests, func(d string) bool { return d == named })
		records = append(records, portlayer.ImageDelete{Untagged: familiar(named)})
		// A repository's last tag takes its digest references with it.
		repo := repoOf(named)
		if wasTag && !slices.ContainsFunc(c.rec.Tags, func(t string) bool { return repoOf(t) == repo }) {
			c.rec.Digests = slices.DeleteFunc(c.rec.Digests, func(d string) bool {
				if repoOf(d) == repo {
					records = append(records, portlayer.ImageDelete{Untagged: familiar(d)})
					return true
				}
				return false
			})
		}
		if len(c.rec.Tags)+len(c.rec.Digests) > 0 || inUse || s.hasChildrenLocked(id) {
			return records, s.persist()
		}
	} else {
		if !force && !singleReference(c.rec) {
			return nil, portlayer.ImageConflict("remove", short, "", portlayer.ReasonReferenced, "")
		}
		if s.hasChildrenLocked(id) {
			return nil, portlayer.ImageConflict("remove_forced", short, "", portlayer.ReasonHasChildren, "")
		}
		if inUse {
			if !force {
				return nil, portlayer.ImageConflict("remove", short, "", portlayer.ReasonInUse, shortID(container))
			}
			return nil, portlayer.ImageConflict("remove_forced", short, "", portlayer.ReasonInUse, shortID(container))
		}
		for _, r := range append(slices.Clone(c.rec.Tags), c.rec.Digests...) {
			records = append(records, portlayer.ImageDelete{Untagged: familiar(r)})
		}
		c.rec.Tags, c.rec.Digests = nil, nil
	}

	delete(s.images, id)
	if err := s.persist(); err != nil {
		return nil, err
	}
	records = append(records, portlayer.ImageDelete{Deleted: id})
	s.dropFilesLocked(c)
	// Untagged parents nothing else needs go too (see Remove), nearest
	// first.
	for _, p := range ancestors {
		pc := s.images[p]
		if pc == nil || len(pc.rec.Tags)+len(pc.rec.Digests) > 0 || ancestorInUse[p] || s.hasChildrenLocked(p) {
			break
		}
		delete(s.images, p)
		if err := s.persist(); err != nil {
			s.images[p] = pc
			s.log.Warn("cannot delete parent image", "image", p, "error", err)
			break
		}
		records = append(records, portlayer.ImageDelete{Deleted: p})
		s.dropFilesLocked(pc)
	}
	s.gcLocked()
	return records, nil
}

// maxAncestors bounds the parent chain a removal walks (a build of that
// many steps still has all its intermediates removed).
const maxAncestors = 1000

// hasChildrenLocked reports whether some image was committed on id.
// Called with s.mu held.
func (s *Store) hasChildrenLocked(id string) bool {
	for _, c := range s.images {
		if c.rec.Parent == id {
			return true
		}
	}
	return false
}

// dropFilesLocked removes what a deleted image had besides blobs: its
// rootfs disk and its OCI index entry. Called with s.mu held; failures are
// logged (they waste space, break nothing).
func (s *Store) dropFilesLocked(c *cached) {
	id := c.rec.ID
	if err := os.Remove(s.path("rootfs", strings.TrimPrefix(id, "sha256:")+".ext4")); err != nil && !os.IsNotExist(err) {
		s.log.Warn("cannot remove rootfs disk", "image", id, "error", err)
	}
	if h, err := v1.NewHash(c.rec.Manifest); err == nil {
		if err := s.layout.RemoveDescriptors(match.Digests(h)); err != nil {
			s.log.Warn("cannot update OCI index.json", "image", id, "error", err)
		}
	}
	s.log.Info("image deleted", "image", id)
}

// singleReference reports whether the image has at most one tag and all
// its references are in one repository (see Remove: what a removal
// without force allows).
func singleReference(r *record) bool {
	if len(r.Tags) > 1 {
		return false
	}
	repo := ""
	for _, ref := range append(slices.Clone(r.Tags), r.Digests...) {
		switch rp := repoOf(ref); {
		case repo == "":
			repo = rp
		case rp != repo:
			return false
		}
	}
	return true
}

// collectGarbage deletes blobs no image references, waiting for writers in
// progress to commit first.
func (s *Store) collectGarbage() {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gcLocked()
}

// afterFailedWrite is deferred by writers before they take s.gcMu shared
// (so it runs after they release it): if *errp is set, blobs the failed
// operation wrote and no image references are deleted, and a full disk
// becomes ResourceExhausted.
func (s *Store) afterFailedWrite(errp *error) {
	if *errp == nil {
		return
	}
	s.collectGarbage()
	*errp = noSpace(*errp)
}

// gcLocked deletes blobs and layer facts that no image references. Called
// with s.gcMu held exclusively and s.mu held. Failures are logged: a blob
// left behind wastes space but breaks nothing.
func (s *Store) gcLocked() {
	keep := map[string]bool{}
	for _, c := range s.images {
		keep[c.rec.Manifest] = true
		keep[c.manifest.Config.Digest.String()] = true
		for _, l := range c.manifest.Layers {
			keep[l.Digest.String()] = true
		}
	}
	for d := range s.layers {
		if !keep[d] {
			delete(s.layers, d)
		}
	}
	dir := s.path("oci", "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return // a new store: no blob written yet
	}
	if err != nil {
		s.log.Warn("blob gc: cannot list blobs", "error", err)
		return
	}
	removed := 0
	for _, e := range entries {
		if keep["sha256:"+e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			s.log.Warn("blob gc: cannot remove blob", "blob", e.Name(), "error", err)
			continue
		}
		removed++
	}
	if err := s.persist(); err != nil {
		s.log.Warn("blob gc: cannot persist index", "error", err)
	}
	s.log.Debug("blob gc", "removed", removed)
}
