package storage

import (
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// v1Image presents a stored image as a go-containerregistry image, reading
// blobs from the OCI layout on demand.
func (s *Store) v1Image(c *cached) (v1.Image, error) {
	return partial.CompressedToImage(&storeImage{s: s, c: c})
}

type storeImage struct {
	s *Store
	c *cached
}

func (i *storeImage) RawConfigFile() ([]byte, error) {
	return i.s.layout.Bytes(i.c.manifest.Config.Digest)
}

func (i *storeImage) MediaType() (types.MediaType, error) {
	return types.MediaType(i.c.rec.MediaType), nil
}

func (i *storeImage) RawManifest() ([]byte, error) {
	h, err := v1.NewHash(i.c.rec.Manifest)
	if err != nil {
		return nil, err
	}
	return i.s.layout.Bytes(h)
}

func (i *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.c.manifest.Config.Digest {
		return &storeLayer{s: i.s, desc: i.c.manifest.Config}, nil
	}
	for n, d := range i.c.manifest.Layers {
		if d.Digest == h {
			l := &storeLayer{s: i.s, desc: d}
			if n < len(i.c.config.RootFS.DiffIDs) {
				l.diffID, _ = v1.NewHash(i.c.config.RootFS.DiffIDs[n].String())
			}
			return l, nil
		}
	}
	return nil, os.ErrNotExist
}

// storeLayer is a stored blob as a full v1.Layer, so go-containerregistry
// uses the store's own decompression (gzip, zstd or none, by magic bytes).
type storeLayer struct {
	s      *Store
	desc   v1.Descriptor
	diffID v1.Hash
}

var _ v1.Layer = (*storeLayer)(nil)

func (l *storeLayer) Digest() (v1.Hash, error) { return l.desc.Digest, nil }
func (l *storeLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *storeLayer) Size() (int64, error)     { return l.desc.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) {
	return l.desc.MediaType, nil
}
func (l *storeLayer) Compressed() (io.ReadCloser, error) {
	return os.Open(l.s.blobPath(l.desc.Digest))
}
func (l *storeLayer) Uncompressed() (io.ReadCloser, error) {
	return l.s.openUncompressed(l.desc.Digest)
}
