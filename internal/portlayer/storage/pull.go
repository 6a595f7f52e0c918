package storage

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// Pull is not implemented yet.
func (s *Store) Pull(ctx context.Context, ref string, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	return portlayer.Image{}, fmt.Errorf("storage: pull: %w", errdefs.ErrNotImplemented)
}

// Remove is not implemented yet.
func (s *Store) Remove(ctx context.Context, ref string, force bool) ([]portlayer.ImageDelete, error) {
	return nil, fmt.Errorf("storage: remove: %w", errdefs.ErrNotImplemented)
}
