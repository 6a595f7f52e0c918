package storage

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/vchproject/vch/internal/portlayer"
)

// Registry client limits: an unreachable or stalled registry fails the pull
// instead of hanging it (ctx still bounds the whole pull).
const (
	// registryDialTimeout bounds one TCP connect.
	registryDialTimeout = 10 * time.Second
	// registryHeaderTimeout bounds the wait for a response's headers.
	registryHeaderTimeout = 30 * time.Second
	// registryRetries is how many times a failed request is tried in all.
	registryRetries = 2
)

// pullPlatform is the only platform vch runs: its guests are x86-64 Linux.
var pullPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Pull fetches ref from its registry with go-containerregistry, choosing
// linux/amd64 from an index, and stores it tagged ref (":latest" if ref
// has neither tag nor digest) with a repo digest "name@sha256:…" of the
// manifest (or index) the registry served. Registries on loopback
// (127.0.0.0/8, ::1, localhost) and names given with an explicit plain-HTTP
// need are spoken to over plain HTTP (loopback traffic stays on the
// host); so are the registries Config.Registries lists as insecure (HTTPS
// without a certificate check first). A registry outside
// Config.Registries' whitelist is refused with PermissionDenied before any
// connection. auth are the registry credentials (portlayer.RegistryAuth),
// as for [Store.Push]; the zero value pulls anonymously. They are sent
// only to ref's registry and never logged.
//
// Progress statuses are fixed texts, part of the API, so a front end may
// pass them on as they are: "Pulling from <path>" (ID: the tag or
// digest), once the registry has served the manifest or index (an
// error before it comes with no progress at all); per layer (ID: 12 hex of the layer digest) "Pulling fs layer" or
// "Already exists", "Downloading" (Current/Total in compressed bytes),
// "Download complete", "Extracting" (verifying the diff ID),
// "Pull complete"; then "Digest: sha256:…" and "Status: Downloaded newer
// image for <ref>" or "Status: Image is up to date for <ref>".
//
// Errors: InvalidArgument for a bad reference or a layer that does not
// match its digest; NotFound (*portlayer.Error, op pull, Reason
// no_manifest, or no_platform for no linux/amd64 image) if the registry
// has no such repository, tag or linux/amd64 image; PermissionDenied if
// it refuses access (Reason denied, Name the repository; for wrong or
// missing credentials alike); Unavailable if it cannot be reached;
// ResourceExhausted ("no space left on device for the image store: …") if
// the store's filesystem fills up; the context's error if ctx ends. A
// failed pull records nothing and leaves none of its blobs. Safe for
// concurrent use.
func (s *Store) Pull(ctx context.Context, ref string, auth portlayer.RegistryAuth, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	report := func(p portlayer.Progress) {
		if progress != nil {
			progress(p)
		}
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return portlayer.Image{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid reference format %q", ref)
	}
	named = reference.TagNameOnly(named)
	fam := reference.FamiliarString(named)
	if err := s.cfg.Registries.allow(reference.Domain(named)); err != nil {
		return portlayer.Image{}, err
	}
	var nameOpts []name.Option
	if isLoopback(reference.Domain(named)) || s.cfg.Registries.insecure(reference.Domain(named)) {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ggRef, err := name.ParseReference(named.String(), nameOpts...)
	if err != nil {
		return portlayer.Image{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid reference format %q", ref)
	}

	pullID := ""
	if t, ok := named.(reference.Tagged); ok {
		pullID = t.Tag()
	} else if d, ok := named.(reference.Digested); ok {
		pullID = d.Digest().String()
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(pullPlatform),
		remote.WithAuth(authenticator(auth)),
		remote.WithTransport(s.cfg.Registries.transport(reference.Domain(named))),
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Steps: registryRetries}),
		remote.WithUserAgent("vch"),
	}
	desc, err := remote.Get(ggRef, opts...)
	if err != nil {
		return portlayer.Image{}, pullError(ctx, fam, err)
	}
	// As dockerd's puller (distribution pullTag), the first progress
	// once the registry has served the top-level manifest or index: a
	// pull that fails before (no such repository or tag, access
	// denied, an unreachable registry) has sent nothing, so a front end
	// can still answer with an error status; later failures (no
	// linux/amd64 entry, a missing blob) come after it.
	report(portlayer.Progress{ID: pullID, Status: "Pulling from " + reference.Path(named)})
	img, err := desc.Image()
	if err != nil {
		return portlayer.Image{}, pullError(ctx, fam, err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return portlayer.Image{}, pullError(ctx, fam, err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return portlayer.Image{}, pullError(ctx, fam, err)
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return portlayer.Image{}, pullError(ctx, fam, err)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return portlayer.Image{}, pullError(ctx, fam, err)
	}
	declared := manifest.Config.Size
	for _, l := range manifest.Layers {
		declared += l.Size
	}
	if err := s.reserve("pull of "+fam, declared); err != nil {
		return portlayer.Image{}, err
	}
	cfgFile, err := img.ConfigFile()
	if err != nil {
		return portlayer.Image{}, portlayer.Errorf(portlayer.ClassInvalidArgument, "pull %s: image config: %w", fam, err)
	}
	sum := sha256.Sum256(rawConfig)
	id := fmt.Sprintf("sha256:%x", sum)

	var tags, digests []string
	if _, ok := named.(reference.Tagged); ok {
		tags = []string{named.String()}
	}
	canonical, err := reference.WithDigest(reference.TrimNamed(named), digest.Digest(desc.Digest.String()))
	if err == nil {
		digests = []string{canonical.String()}
	}

	c, upToDate, err := s.storePulled(ctx, id, img, manifest, cfgFile, fam, report,
		newImage{config: rawConfig, manifest: rawManifest, mediaType: mediaType, tags: tags, digests: digests})
	if err != nil {
		return portlayer.Image{}, noSpace(err)
	}
	report(portlayer.Progress{Status: "Digest: " + desc.Digest.String()})
	if upToDate {
		report(portlayer.Progress{Status: "Status: Image is up to date for " + fam})
	} else {
		report(portlayer.Progress{Status: "Status: Downloaded newer image for " + fam})
	}
	s.log.Info("image pulled", "image", id, "ref", fam, "digest", desc.Digest.String())
	return s.snapshot(c), nil
}

// storePulled records the pulled image: more references if the store has
// it, else its layers and record. If that fails after blobs were written,
// they are removed again (once no other writer holds s.gcMu), so a failed
// pull, e.g. on a full disk, leaves no blob behind.
func (s *Store) storePulled(ctx context.Context, id string, img v1.Image, m *v1.Manifest, cfg *v1.ConfigFile, fam string, report portlayer.ProgressFunc, n newImage) (c *cached, upToDate bool, err error) {
	wrote := false
	defer func() {
		if err != nil && wrote {
			s.collectGarbage()
		}
	}()
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()

	s.mu.Lock()
	existing := s.images[id]
	upToDate = existing != nil && (len(n.tags) == 0 || contains(existing.rec.Tags, n.tags[0]))
	s.mu.Unlock()

	if existing != nil {
		c, err = s.addRefs(id, n.tags, n.digests)
		return c, upToDate, err
	}
	wrote = true
	if n.layers, err = s.pullLayers(ctx, img, m, cfg, fam, report); err != nil {
		return nil, false, err
	}
	c, err = s.commit(n)
	return c, false, err
}

// pullLayers downloads the layers the store lacks, verifying each blob's
// digest and each layer's diff ID against the config.
func (s *Store) pullLayers(ctx context.Context, img v1.Image, m *v1.Manifest, cfg *v1.ConfigFile, fam string, report portlayer.ProgressFunc) ([]storedLayer, error) {
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "pull %s: config lists %d layers, manifest %d", fam, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	layers := make([]storedLayer, len(m.Layers))
	have := make([]bool, len(m.Layers))
	for i, d := range m.Layers {
		short := shortID(d.Digest.String())
		s.mu.Lock()
		info, ok := s.layers[d.Digest.String()]
		s.mu.Unlock()
		if ok && s.hasBlob(d.Digest) && info.DiffID == cfg.RootFS.DiffIDs[i].String() {
			layers[i] = storedLayer{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType, DiffID: cfg.RootFS.DiffIDs[i], USize: info.Size}
			have[i] = true
			report(portlayer.Progress{ID: short, Status: "Already exists"})
			continue
		}
		report(portlayer.Progress{ID: short, Status: "Pulling fs layer"})
	}
	for i, d := range m.Layers {
		if have[i] {
			continue
		}
		short := shortID(d.Digest.String())
		layer, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, pullError(ctx, fam, err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			return nil, pullError(ctx, fam, err)
		}
		report(portlayer.Progress{ID: short, Status: "Downloading", Current: 0, Total: d.Size})
		err = s.writeBlobVerified(ctx, rc, d.Digest, d.Size, throttle(func(n int64) {
			report(portlayer.Progress{ID: short, Status: "Downloading", Current: n, Total: d.Size})
		}))
		rc.Close()
		if err != nil {
			if errdefs.IsInvalidArgument(err) || ctx.Err() != nil {
				return nil, err
			}
			return nil, pullError(ctx, fam, err)
		}
		report(portlayer.Progress{ID: short, Status: "Download complete"})
		diffID, usize, err := s.verifyLayer(ctx, d, func(n int64) {
			report(portlayer.Progress{ID: short, Status: "Extracting", Current: n, Total: d.Size})
		})
		if err != nil {
			return nil, err
		}
		if diffID != cfg.RootFS.DiffIDs[i] {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "pull %s: filesystem layer verification failed for digest %s", fam, d.Digest)
		}
		layers[i] = storedLayer{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType, DiffID: diffID, USize: usize}
		report(portlayer.Progress{ID: short, Status: "Pull complete"})
	}
	return layers, nil
}

// verifyLayer decompresses a stored layer blob to learn its diff ID and
// uncompressed size; onBytes gets compressed bytes read so far.
func (s *Store) verifyLayer(ctx context.Context, d v1.Descriptor, onBytes func(int64)) (v1.Hash, int64, error) {
	f, err := os.Open(s.blobPath(d.Digest))
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("storage: open layer %s: %w", d.Digest, err)
	}
	rc, err := decompress(io.NopCloser(&progressReader{ctx: ctx, r: f, fn: throttle(onBytes)}))
	if err != nil {
		f.Close()
		return v1.Hash{}, 0, err
	}
	defer f.Close()
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		if ctx.Err() != nil {
			return v1.Hash{}, 0, ctxErr(ctx)
		}
		return v1.Hash{}, 0, portlayer.Errorf(portlayer.ClassInvalidArgument, "layer %s: %w", d.Digest, err)
	}
	onBytes(d.Size)
	return hashOf(h), n, nil
}

// addRefs points more references at an existing image.
func (s *Store) addRefs(id string, tags, digests []string) (*cached, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	c := s.images[id]
	if c == nil {
		return nil, noSuchImage(id)
	}
	undo := s.saveStateLocked()
	for _, t := range tags {
		s.untagLocked(t)
		c.rec.Tags = appendSorted(c.rec.Tags, t)
	}
	for _, d := range digests {
		c.rec.Digests = appendSorted(c.rec.Digests, d)
	}
	if err := s.persist(); err != nil {
		undo()
		return nil, err
	}
	return c, nil
}

// pullError classifies a registry client error: typed for not found,
// denied and no platform, else the client's text with its class.
func pullError(ctx context.Context, fam string, err error) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		notFound := terr.StatusCode == http.StatusNotFound
		reason, cause := portlayer.ReasonNoManifest, ""
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.NameUnknownErrorCode:
				reason = portlayer.ReasonNoRepository
				fallthrough
			case transport.ManifestUnknownErrorCode:
				notFound, cause = true, d.Message
			}
		}
		switch {
		case notFound && reason == portlayer.ReasonNoRepository:
			return &portlayer.Error{Class: portlayer.ClassNotFound, Op: "pull", Kind: portlayer.KindImage, ID: fam, Name: repoOf(fam), Reason: reason, Message: "repository " + repoOf(fam) + " not found", Cause: cause, Err: err}
		case notFound:
			return &portlayer.Error{Class: portlayer.ClassNotFound, Op: "pull", Kind: portlayer.KindImage, ID: fam, Reason: reason, Message: "manifest for " + fam + " not found", Cause: cause, Err: err}
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
			return &portlayer.Error{Class: portlayer.ClassPermissionDenied, Op: "pull", Kind: portlayer.KindImage, ID: fam, Name: repoOf(fam), Reason: portlayer.ReasonDenied, Message: "the registry refused access to " + repoOf(fam), Err: err}
		}
		return newTextError(errdefs.ErrUnavailable, err.Error(), err)
	}
	if strings.Contains(err.Error(), "no child with platform") {
		return &portlayer.Error{Class: portlayer.ClassNotFound, Op: "pull", Kind: portlayer.KindImage, ID: fam, Reason: portlayer.ReasonNoPlatform, Message: "no manifest for linux/amd64 in " + fam, Err: err}
	}
	var nerr net.Error
	var operr *net.OpError
	if errors.As(err, &nerr) || errors.As(err, &operr) {
		return newTextError(errdefs.ErrUnavailable, err.Error(), err)
	}
	return newTextError(errdefs.ErrUnknown, err.Error(), err)
}

// registryTransport is an HTTP transport with bounded connects and waits.
func registryTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: registryDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = registryDialTimeout
	t.ResponseHeaderTimeout = registryHeaderTimeout
	return t
}

// isLoopback reports whether a registry host[:port] is on this machine,
// where plain HTTP needs no configuration: the traffic stays on the host.
func isLoopback(domain string) bool {
	host := domain
	if h, _, err := net.SplitHostPort(domain); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
