package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/vchproject/vch/internal/portlayer"
)

// Push uploads the image tagged ref to ref's registry with
// go-containerregistry (OCI distribution-spec push). ref names one tag
// ("127.0.0.1:5000/busybox:1"); a repository name alone pushes every tag
// the store has for it, in tag order. The registry gets the stored blobs
// and manifest unchanged, so the digest it reports for a pulled image is
// the one pulled, and the config's diff IDs (rootfs.diff_ids,
// Image.Layers) are what the registry holds. Plain HTTP and the
// --insecure-registry and whitelist policy are those of [Store.Pull].
//
// Progress statuses are fixed texts, part of the API, so a front end may
// pass them on as they are: "The push refers to repository
// [<name>]"; per layer, top first (ID: 12 hex of the diff ID),
// "Preparing", then "Layer already exists" or "Pushing" (Current/Total in
// compressed bytes) and "Pushed"; then "<tag>: digest: sha256:… size: N".
//
// Errors: InvalidArgument for a bad or digest reference; NotFound
// ("An image does not exist locally with the tag: <name>") if no image has
// the tag(s); PermissionDenied if the registry refuses the credentials or
// the whitelist forbids it; Unavailable if the registry cannot be reached;
// the context's error if ctx ends. Safe for concurrent use.
func (s *Store) Push(ctx context.Context, ref string, auth portlayer.RegistryAuth, progress portlayer.ProgressFunc) ([]portlayer.PushResult, error) {
	report := func(p portlayer.Progress) {
		if progress != nil {
			progress(p)
		}
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid reference format %q", ref)
	}
	if _, ok := named.(reference.Digested); ok {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "push %s: cannot push a digest reference", ref)
	}
	domain := reference.Domain(named)
	if err := s.cfg.Registries.allow(domain); err != nil {
		return nil, err
	}

	// Which tags, and which manifest each names, decided once under s.mu.
	type target struct {
		tag      string // normalised
		manifest string
		diffIDs  []string
	}
	var targets []target
	s.mu.Lock()
	if err := s.checkOpen(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	for _, c := range s.images {
		for _, t := range c.rec.Tags {
			if t == named.String() || reference.IsNameOnly(named) && repoOf(t) == named.Name() {
				var ids []string
				for _, d := range c.config.RootFS.DiffIDs {
					ids = append(ids, d.String())
				}
				targets = append(targets, target{tag: t, manifest: c.rec.Manifest, diffIDs: ids})
			}
		}
	}
	s.mu.Unlock()
	if len(targets) == 0 {
		return nil, &portlayer.Error{Class: portlayer.ClassNotFound, Op: "push", Kind: portlayer.KindImage, ID: reference.FamiliarName(named), Message: "storage: push: no local image is tagged " + reference.FamiliarName(named)}
	}
	slices.SortFunc(targets, func(a, b target) int {
		switch {
		case a.tag < b.tag:
			return -1
		case a.tag > b.tag:
			return 1
		}
		return 0
	})

	s.gcMu.RLock()
	defer s.gcMu.RUnlock()

	var nameOpts []name.Option
	if isLoopback(domain) || s.cfg.Registries.insecure(domain) {
		nameOpts = append(nameOpts, name.Insecure)
	}
	authr := authenticator(auth)
	base := s.cfg.Registries.transport(domain)
	report(portlayer.Progress{Status: "The push refers to repository [" + named.Name() + "]"})
	var results []portlayer.PushResult
	for _, tg := range targets {
		tagRef, err := name.NewTag(tg.tag, nameOpts...)
		if err != nil {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid reference format %q", tg.tag)
		}
		h, err := v1.NewHash(tg.manifest)
		if err != nil {
			return nil, fmt.Errorf("storage: push %s: manifest digest: %w", tg.tag, err)
		}
		img, err := s.layout.Image(h)
		if err != nil {
			return nil, fmt.Errorf("storage: push %s: read image: %w", tg.tag, err)
		}
		opts := []remote.Option{
			remote.WithContext(ctx),
			remote.WithAuth(authr),
			remote.WithTransport(base),
			remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Steps: registryRetries}),
			remote.WithUserAgent("vch"),
		}
		if err := s.pushLayers(ctx, tagRef.Context(), img, tg.diffIDs, authr, base, opts, report); err != nil {
			return nil, pushError(ctx, tg.tag, err)
		}
		if err := remote.Write(tagRef, img, opts...); err != nil {
			return nil, pushError(ctx, tg.tag, err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, fmt.Errorf("storage: push %s: %w", tg.tag, err)
		}
		res := portlayer.PushResult{Tag: tagRef.TagStr(), Digest: h.String(), Size: int64(len(raw))}
		report(portlayer.Progress{Status: fmt.Sprintf("%s: digest: %s size: %d", res.Tag, res.Digest, res.Size)})
		s.log.Info("image pushed", "ref", familiar(tg.tag), "digest", res.Digest)
		results = append(results, res)
	}
	return results, nil
}

// pushLayers uploads img's layers the registry lacks, top layer first,
// the order Progress reports them in (see [Store.Push]).
func (s *Store) pushLayers(ctx context.Context, repo name.Repository, img v1.Image, diffIDs []string, auth authn.Authenticator, base http.RoundTripper, opts []remote.Option, report portlayer.ProgressFunc) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if len(layers) != len(diffIDs) {
		return portlayer.Errorf(portlayer.ClassInternal, "manifest has %d layers, config %d: %w", len(layers), len(diffIDs), errdefs.ErrDataLoss)
	}
	ids := make([]string, len(layers))
	for i := range layers {
		ids[i] = shortID(diffIDs[i])
	}
	for i := len(layers) - 1; i >= 0; i-- {
		report(portlayer.Progress{ID: ids[i], Status: "Preparing"})
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(transport.PushScope)})
	if err != nil {
		return err
	}
	client := &http.Client{Transport: rt}
	for i := len(layers) - 1; i >= 0; i-- {
		l := layers[i]
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		if exists, err := blobExists(ctx, client, repo, d); err != nil {
			return err
		} else if exists {
			report(portlayer.Progress{ID: ids[i], Status: "Layer already exists"})
			continue
		}
		updates := make(chan v1.Update, 16)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for u := range updates {
				report(portlayer.Progress{ID: ids[i], Status: "Pushing", Current: u.Complete, Total: size})
			}
		}()
		err = remote.WriteLayer(repo, l, append(opts, remote.WithProgress(updates))...)
		<-done
		if err != nil {
			return err
		}
		report(portlayer.Progress{ID: ids[i], Status: "Pushed"})
	}
	return nil
}

// blobExists asks the registry whether repo has blob d (distribution spec:
// HEAD /v2/<name>/blobs/<digest>).
func blobExists(ctx context.Context, client *http.Client, repo name.Repository, d v1.Hash) (bool, error) {
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), d)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, transport.CheckError(resp, http.StatusOK, http.StatusNotFound)
}

// authenticator turns portlayer.RegistryAuth into go-containerregistry's
// credentials; the zero value is anonymous.
func authenticator(a portlayer.RegistryAuth) authn.Authenticator {
	if a == (portlayer.RegistryAuth{}) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken})
}

// pushError classifies a registry client error from a push.
func pushError(ctx context.Context, tag string, err error) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	if errdefs.IsDataLoss(err) {
		return fmt.Errorf("storage: push %s: %w", tag, err)
	}
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
		return &portlayer.Error{Class: portlayer.ClassPermissionDenied, Op: "push", Kind: portlayer.KindImage, Name: familiar(tag), Reason: portlayer.ReasonDenied, Message: "storage: push " + familiar(tag) + ": the registry refused access", Err: err}
	}
	return pullError(ctx, familiar(tag), err)
}
