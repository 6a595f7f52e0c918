package computetest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/hvfake"
	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/compute"
)

// Image is an image ID the in-process services' containers can use:
// their rootfs store makes an empty disk for any image.
var Image = "sha256:" + strings.Repeat("1", 64)

// EmptyRootfs is a compute.RootfsStore whose every image is an empty file
// in Dir.
type EmptyRootfs struct{ Dir string }

// Rootfs writes the empty file for imageID and returns its path;
// NotFound, as an image store would answer, for an ID that is no plain
// file name (empty, ".", "..", or holding '/'), so no file is made
// outside Dir.
func (r EmptyRootfs) Rootfs(_ context.Context, imageID string) (string, error) {
	name := strings.TrimPrefix(imageID, "sha256:")
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", portlayer.Errorf(portlayer.ClassNotFound, "no such image: %s", imageID)
	}
	p := filepath.Join(r.Dir, name+".raw")
	return p, os.WriteFile(p, nil, 0o600)
}

// NewService is an in-process compute service for tests: cfg with a
// temporary Root, stand-in kernel and initrd paths, tether's channel name
// and a 10 s boot timeout where they are zero, on driver (hvfake.New()
// when nil) and an EmptyRootfs. When the test ends its containers are
// removed (forced) and the service is closed.
func NewService(tb testing.TB, cfg compute.Config, driver hypervisor.Driver) *compute.Service {
	tb.Helper()
	if cfg.Root == "" {
		cfg.Root = tb.TempDir()
	}
	if cfg.Kernel == "" {
		cfg.Kernel, cfg.Initrd = "/boot/vmlinuz-test", "/boot/initrd-test"
	}
	if cfg.ChannelName == "" {
		cfg.ChannelName = wire.PortName
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 10 * time.Second
	}
	if driver == nil {
		driver = hvfake.New()
	}
	svc, err := compute.New(cfg, driver, EmptyRootfs{tb.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		RemoveAll(svc)
		_ = svc.Close(context.Background())
	})
	return svc
}

// RemoveAll removes every container of svc, running or not, ignoring
// errors.
func RemoveAll(svc *compute.Service) {
	ctx := context.Background()
	if cs, err := svc.List(ctx); err == nil {
		for _, c := range cs {
			_ = svc.Remove(ctx, c.ID, true)
		}
	}
}

// ExecsOf is svc as the exec contract's target: its containers and its
// exec area (Service.Execs).
func ExecsOf(svc *compute.Service) ExecTarget {
	return struct {
		*compute.Service
		*compute.Execs
	}{svc, svc.Execs()}
}

// ArchivesOf is svc as the archive contract's target: its containers and
// its archive area (Service.Archives).
func ArchivesOf(svc *compute.Service) ArchiveTarget {
	return struct {
		*compute.Service
		*compute.Archives
	}{svc, svc.Archives()}
}
