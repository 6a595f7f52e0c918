// Package system serves the Engine API v1.50 "System" group: GET|HEAD
// /_ping, GET /version and GET /info. It reports vch honestly: the server
// version is vch's, the kernel is the guest kernel that container VMs boot,
// and the storage driver and runtime name the VM machinery.
package system

import (
	"context"

	"github.com/vchproject/vch/internal/portlayer"
)

// Host describes the VCH for GET /info and GET /version: the port
// layer's description of it (Name is Info.Name, RootDir
// Info.DockerRootDir, DriverStatus the lines docker info shows under the
// storage driver).
type Host = portlayer.HostInfo

// Source reports the VCH's host facts. Implemented by the wiring in cmd/vch.
type Source interface {
	// Host returns the VCH description. Errors are reported as 500 unless
	// classified.
	Host(ctx context.Context) (Host, error)
}

// containerLister is the part of portlayer.Compute that /info uses.
type containerLister interface {
	List(ctx context.Context) ([]portlayer.Container, error)
}

// imageLister is the part of portlayer.Images that /info uses.
type imageLister interface {
	List(ctx context.Context) ([]portlayer.Image, error)
}
