package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/hvfake"
	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/portlayer/compute"
	"github.com/vchproject/vch/internal/portlayer/computetest"
	"github.com/vchproject/vch/internal/portlayer/network"
)

// overAPI is a client of a real server (a unix socket, every request and
// response validated against the document) over b.
func overAPI(t *testing.T, b api.Backend) *client.Client {
	t.Helper()
	c, err := client.New("unix://"+serve(t, b), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestExecContract runs the exec contract on the in-process compute
// service and through the client and a real server, the same cases.
func TestExecContract(t *testing.T) {
	t.Run("InProcess", func(t *testing.T) {
		computetest.RunExecs(t, testImage, func(t *testing.T) computetest.ExecTarget { return computetest.ExecsOf(newCompute(t)) })
	})
	t.Run("OverAPI", func(t *testing.T) {
		computetest.RunExecs(t, testImage, func(t *testing.T) computetest.ExecTarget {
			svc := newCompute(t)
			return overAPI(t, api.Backend{Compute: svc, Pauser: svc, Execs: svc.Execs()})
		})
	})
}

// TestArchiveContract runs the archive contract on the in-process
// compute service and through the client and a real server.
func TestArchiveContract(t *testing.T) {
	t.Run("InProcess", func(t *testing.T) {
		computetest.RunArchives(t, testImage, func(t *testing.T) computetest.ArchiveTarget { return computetest.ArchivesOf(newCompute(t)) })
	})
	t.Run("OverAPI", func(t *testing.T) {
		computetest.RunArchives(t, testImage, func(t *testing.T) computetest.ArchiveTarget {
			svc := newCompute(t)
			return overAPI(t, api.Backend{Compute: svc, Pauser: svc, Archives: svc.Archives()})
		})
	})
}

// TestNetworkContract runs the network contract on the in-process
// network area and compute service and through the client and a real
// server. The network area is real (bridges and taps), in a network
// namespace each case creates and deletes; it needs root.
func TestNetworkContract(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	t.Run("InProcess", func(t *testing.T) {
		computetest.RunNetworks(t, testImage, func(t *testing.T) computetest.NetworkTarget {
			svc, nets := newNetworked(t)
			return networkedTarget{Compute: svc, Pauser: svc, Networks: nets, NetworkConnector: svc}
		})
	})
	t.Run("OverAPI", func(t *testing.T) {
		computetest.RunNetworks(t, testImage, func(t *testing.T) computetest.NetworkTarget {
			svc, nets := newNetworked(t)
			return overAPI(t, api.Backend{Compute: svc, Pauser: svc, Networks: nets, NetworkConnector: svc})
		})
	})
}

// networkedTarget is the in-process port layer of the network contract:
// compute for containers and their attachments, the network area for
// networks.
type networkedTarget struct {
	portlayer.Compute
	portlayer.Pauser
	portlayer.Networks
	portlayer.NetworkConnector
}

// noPorts publishes nothing (the contract publishes no ports).
type noPorts struct{}

func (noPorts) Publish(_ string, _ netip.Addr, ports []portlayer.PortBinding) ([]portlayer.PortBinding, error) {
	return ports, nil
}
func (noPorts) Unpublish(string) {}
func (noPorts) Close() error     { return nil }

// newNetworked is a compute service on the fake hypervisor with a real
// network area in a network namespace of the test's own (no egress
// proxy, no published ports): the namespace is deleted when the test
// ends, after the containers' VMs and their taps.
func newNetworked(t *testing.T) (*compute.Service, *network.Service) {
	t.Helper()
	ns := fmt.Sprintf("vchpltest-%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
	nets, err := network.New(network.Config{Root: t.TempDir(), Namespace: ns, NoEgress: true},
		func(network.Dialer) network.PortPublisher { return noPorts{} }, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nets.Close(); err != nil {
			t.Errorf("close the network area: %v", err)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("network namespace %s left behind (%v)", ns, err)
		}
	})
	vms := &tapHolder{Driver: hvfake.New()}
	t.Cleanup(vms.release)
	svc := computetest.NewService(t, compute.Config{Network: nets, Networks: nets}, vms)
	return svc, nets
}

// tapHolder is the fake hypervisor holding its VMs' NIC devices open
// while the VM runs, as a VMM holds the taps it was given: compute
// closes its own copies once a VM has started, and a tap no one holds
// is deleted, so a running container's spare NIC would be gone when a
// connect joins it to a network.
type tapHolder struct {
	*hvfake.Driver

	mu   sync.Mutex
	held map[*os.File]bool
}

// Start implements hypervisor.Driver: the fake's VM, with a duplicate of
// every NIC's device kept until the VM ends.
func (d *tapHolder) Start(ctx context.Context, spec hypervisor.Spec) (hypervisor.VM, error) {
	var files []*os.File
	for _, nic := range spec.NICs {
		if nic.File == nil {
			continue
		}
		f, err := dupFile(nic.File)
		if err != nil {
			closeAll(files)
			return nil, err
		}
		files = append(files, f)
	}
	vm, err := d.Driver.Start(ctx, spec)
	if err != nil {
		closeAll(files)
		return nil, err
	}
	d.mu.Lock()
	if d.held == nil {
		d.held = map[*os.File]bool{}
	}
	for _, f := range files {
		d.held[f] = true
	}
	d.mu.Unlock()
	go func() {
		<-vm.Done()
		d.drop(files)
	}()
	return vm, nil
}

// drop closes files if still held.
func (d *tapHolder) drop(files []*os.File) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range files {
		if d.held[f] {
			delete(d.held, f)
			f.Close()
		}
	}
}

// release closes every device still held (the test ends).
func (d *tapHolder) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for f := range d.held {
		f.Close()
	}
	d.held = nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// dupFile duplicates f's descriptor (close-on-exec), leaving f's mode
// alone.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}
