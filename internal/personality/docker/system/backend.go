// Package system serves the Engine API v1.50 "System" group: GET|HEAD
// /_ping, GET /version and GET /info. It reports vch honestly: the server
// version is vch's, the kernel is the guest kernel that container VMs boot,
// and the storage driver and runtime name the VM machinery.
package system

import (
	"context"

	"github.com/vchproject/vch/internal/portlayer"
)

// Host describes the VCH for GET /info and GET /version.
type Host struct {
	// Name is the VCH's name (Info.Name).
	Name string
	// ID identifies the VCH (Info.ID); may be empty.
	ID string
	// Hypervisor names the driver running the VMs, e.g. "qemu".
	Hypervisor string
	// Accelerator is the accelerator in use: "kvm" or "tcg".
	Accelerator string
	// GuestKernelVersion is the uname -r of the kernel container VMs boot,
	// e.g. "6.1.0-28-cloud-amd64".
	GuestKernelVersion string
	// NCPU is the number of host CPUs available to VMs.
	NCPU int
	// MemTotalBytes is the host memory available to VMs, in bytes.
	MemTotalBytes int64
	// RootDir is the VCH's state directory on the host (Info.DockerRootDir).
	RootDir string
	// Labels are "key=value" labels of the VCH; may be nil.
	Labels []string
	// DriverStatus are extra name/value lines docker info shows under
	// the storage driver (storage quota and usage, volume stores); may
	// be nil.
	DriverStatus [][2]string
	// Warnings are shown by `docker info`; may be nil.
	Warnings []string
}

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
