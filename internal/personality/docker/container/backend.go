// Package container serves the Engine API v1.50 "Container" group: create,
// list, inspect, start, stop, restart, kill, wait, remove, rename, logs,
// attach (and a no-op resize). Handlers apply Docker's semantics (image
// config defaults, ENTRYPOINT/CMD rules, names, status texts, stream
// framing) and call the port layer, which owns the containers.
package container

import (
	"context"

	"github.com/vchproject/vch/internal/portlayer"
)

// The routes use these port-layer methods:
//
//   - portlayer.Compute: all of it (Create, Start, Stop, Kill, Wait,
//     Remove, Inspect, List, Rename).
//   - portlayer.Interaction: Attach, Logs.
//   - portlayer.Images: Get only, to read an image's config at create.
type imageGetter interface {
	Get(ctx context.Context, ref string) (portlayer.Image, error)
}

// Annotation keys under which the Docker Config and HostConfig JSON are
// kept in portlayer.ContainerSpec.Annotations, so inspect can show them.
const (
	AnnotationConfig     = "docker.config"
	AnnotationHostConfig = "docker.hostconfig"
)
