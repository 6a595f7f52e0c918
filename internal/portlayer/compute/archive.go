package compute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// statTimeout bounds a stat in the guest.
const statTimeout = 30 * time.Second

// rootDisks are a VM's copy-on-write root disk and, read-only beside it,
// the image's disk it lies over (serial wire.BaseSerial), which tether
// compares with the root for Changes and ChangesLayer (diff and
// commit). Without the image's disk (the image is gone) the VM boots,
// but diff and commit fail.
func (s *Service) rootDisks(ctx context.Context, id string, rec portlayer.Container) []hypervisor.Disk {
	disks := []hypervisor.Disk{s.disks.rw(id)}
	if s.rootfs == nil {
		return disks
	}
	local, err := s.rootfs.Rootfs(ctx, rec.Spec.Image)
	var base hypervisor.Disk
	if err == nil {
		base, err = s.disks.base(ctx, local)
	}
	if err != nil {
		s.logger.Warn("image disk not attached; diff and commit will fail", "container", id, "err", err)
		return disks
	}
	base.Serial = wire.BaseSerial
	return append(disks, base)
}

// Archives is compute's archive area: files copied into and out of a
// container's filesystem, its export and its changes against the image.
// A running container's own VM serves them; a stopped one's disks are
// read by a short-lived maintenance VM. It implements portlayer.Archives;
// get it with Service.Archives.
type Archives struct{ s *Service }

var _ portlayer.Archives = (*Archives)(nil)

// Archives returns the service's archive area.
func (s *Service) Archives() *Archives { return &Archives{s: s} }

// acquireGuest returns a guest connection to the container's filesystem:
// the running VM's, or, for a created or exited container, a VM booted on
// the same disks without the container's process (maintenance mode),
// which release powers off. While a maintenance VM runs the container
// counts as starting: a start or removal waits for it. Conflict if
// paused.
func (a *Archives) acquireGuest(ctx context.Context, idOrName string) (*container, *agent.Client, hypervisor.VM, func(), error) {
	s := a.s
	c, err := s.lookup(idOrName)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, nil, nil, portlayer.Errorf(portlayer.ClassUnavailable, "shutting down")
	}
	for {
		c.mu.Lock()
		switch {
		case c.hidden():
			c.mu.Unlock()
			return nil, nil, nil, nil, portlayer.NoSuchContainer(idOrName)
		case c.rec.State.Status == portlayer.StatusPaused:
			c.mu.Unlock()
			return nil, nil, nil, nil, portlayer.ContainerState("copy", c.id, portlayer.ReasonPaused)
		case c.rec.State.Status == portlayer.StatusRunning && c.guest != nil:
			g, vm := c.guest, c.vm
			c.mu.Unlock()
			return c, g, vm, func() {}, nil
		case c.phase == phaseStarting:
			ch := c.startDone
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, nil, nil, nil, fmt.Errorf("compute: %s: %w", c.id, ctx.Err())
			}
		}
		break
	}
	c.phase = phaseStarting
	c.startDone = make(chan struct{})
	rec, gone := c.rec, c.vmGone
	c.mu.Unlock()
	done := func() {
		c.mu.Lock()
		c.endPhase(phaseStarting)
		close(c.startDone)
		c.mu.Unlock()
	}
	if gone != nil {
		select {
		case <-gone:
		case <-ctx.Done():
			done()
			return nil, nil, nil, nil, fmt.Errorf("compute: %s: %w", c.id, ctx.Err())
		}
	}
	token, err := s.claimVolumes(ctx, c, rec)
	if err != nil {
		done()
		return nil, nil, nil, nil, err
	}
	vm, g, err := a.bootMaintenance(ctx, c, rec)
	if err != nil {
		s.releaseVolumes(c.id, token)
		done()
		return nil, nil, nil, nil, err
	}
	s.logger.Info("maintenance VM booted", "container", c.id, "vm_pid", vm.Pid())
	var once sync.Once
	release := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), powerOffTimeout)
			if err := g.PowerOff(ctx); err == nil {
				select {
				case <-vm.Done():
				case <-ctx.Done():
				}
			}
			cancel()
			_ = vm.Kill()
			<-vm.Done()
			g.Close()
			s.releaseVolumes(c.id, token)
			done()
		})
	}
	return c, g, vm, release, nil
}

// bootMaintenance boots the container's disks, volumes and binds without
// networks and without a process.
func (a *Archives) bootMaintenance(ctx context.Context, c *container, rec portlayer.Container) (hypervisor.VM, *agent.Client, error) {
	s := a.s
	if err := os.MkdirAll(c.runDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("compute: %w", err)
	}
	volDisks, mounts, err := s.volumeDisks(ctx, rec.Spec)
	if err != nil {
		return nil, nil, err
	}
	shares, err := s.shares(rec.Spec)
	if err != nil {
		return nil, nil, err
	}
	spec := hypervisor.Spec{
		Name: c.id[:12], Kernel: s.cfg.Kernel, Initrd: s.cfg.Initrd,
		MemoryMiB: s.cfg.DefaultMemoryMiB, CPUs: 1, ChannelName: s.cfg.ChannelName,
		Disks:      append(s.rootDisks(ctx, c.id, rec), volDisks...),
		RuntimeDir: c.runDir,
		Shares:     shares,
	}
	if len(shares) > 0 {
		spec.Kernel, spec.Initrd = s.cfg.ShareKernel, s.cfg.ShareInitrd
	}
	vm, err := s.vms.Start(ctx, spec)
	if err != nil {
		return nil, nil, fmt.Errorf("compute: start maintenance VM: %w", err)
	}
	bootCtx, cancel := context.WithTimeout(ctx, s.cfg.BootTimeout)
	defer cancel()
	g, err := agent.Dial(bootCtx, vm.Channel())
	if err == nil {
		// No identity files (nothing runs); the mounts so that volumes and
		// binds are where the container has them.
		err = g.Setup(bootCtx, wire.Setup{TimeUnixNano: time.Now().UnixNano(), Mounts: mounts, ReadOnlyRoot: rec.Spec.ReadOnlyRootfs})
		if err != nil {
			g.Close()
		}
	}
	if err != nil {
		_ = vm.Kill()
		<-vm.Done()
		var me *wire.MountError
		if errors.As(err, &me) {
			return nil, nil, setupErr(rec.Spec, err) // a volume subpath: the start's typed error
		}
		return nil, nil, fmt.Errorf("compute: maintenance VM: %w (console: %s)", err, consoleTail(c.runDir))
	}
	return vm, g, nil
}

// archiveErr adds context to a failed archive operation. The guest's own
// refusals (agent.ArchiveError: a missing path, not a directory, a
// hostile archive) are returned as they are: their text is the guest's,
// meant for users, and they carry their class.
func archiveErr(c *container, op string, err error) error {
	var ae *agent.ArchiveError
	if errors.As(err, &ae) {
		return err
	}
	return fmt.Errorf("compute: %s in %s: %w", op, c.id, err)
}

func pathStat(st wire.PathStat) portlayer.PathStat {
	return portlayer.PathStat{Name: st.Name, Size: st.Size, Mode: fs.FileMode(st.Mode), Mtime: time.Unix(0, st.MtimeUnixNano).UTC(), LinkTarget: st.LinkTarget}
}

// StatPath implements portlayer.Archives.
func (a *Archives) StatPath(ctx context.Context, idOrName, path string) (portlayer.PathStat, error) {
	c, g, _, release, err := a.acquireGuest(ctx, idOrName)
	if err != nil {
		return portlayer.PathStat{}, err
	}
	defer release()
	sctx, cancel := context.WithTimeout(ctx, statTimeout)
	defer cancel()
	st, err := g.StatPath(sctx, path)
	if err != nil {
		return portlayer.PathStat{}, archiveErr(c, "stat "+path, err)
	}
	return pathStat(st), nil
}

// releasingReader releases the guest (a maintenance VM) when closed.
type releasingReader struct {
	io.ReadCloser
	release func()
}

func (r *releasingReader) Close() error {
	err := r.ReadCloser.Close()
	r.release()
	return err
}

// GetArchive implements portlayer.Archives.
func (a *Archives) GetArchive(ctx context.Context, idOrName, path string) (portlayer.PathStat, io.ReadCloser, error) {
	c, g, _, release, err := a.acquireGuest(ctx, idOrName)
	if err != nil {
		return portlayer.PathStat{}, nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, statTimeout)
	st, err := g.StatPath(sctx, path)
	cancel()
	if err != nil {
		release()
		return portlayer.PathStat{}, nil, archiveErr(c, "stat "+path, err)
	}
	rc, err := g.GetArchive(ctx, wire.ArchiveGet{Path: path})
	if err != nil {
		release()
		return portlayer.PathStat{}, nil, archiveErr(c, "archive "+path, err)
	}
	return pathStat(st), &releasingReader{rc, release}, nil
}

// PutArchive implements portlayer.Archives. An archive of 4 MiB or more
// reaches the guest on the VM's transfer disk where the driver has one,
// written under the VCH root as it arrives (transfer.go); others, and
// what passes 1 GiB, on the guest channel.
func (a *Archives) PutArchive(ctx context.Context, idOrName, path string, r io.Reader, opts portlayer.PutArchiveOptions) error {
	c, g, vm, release, err := a.acquireGuest(ctx, idOrName)
	if err != nil {
		return err
	}
	defer release()
	rec := c.record()
	put := wire.ArchivePut{Path: path, NoOverwriteDirNonDir: opts.NoOverwriteDirNonDir, CopyUIDGID: opts.CopyUIDGID, User: rec.Spec.User}
	if err := a.s.putArchive(ctx, c, g, vm, put, r); err != nil {
		return archiveErr(c, "extract to "+path, err)
	}
	return nil
}

// Export implements portlayer.Archives.
func (a *Archives) Export(ctx context.Context, idOrName string) (io.ReadCloser, error) {
	c, g, _, release, err := a.acquireGuest(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	rc, err := g.GetArchive(ctx, wire.ArchiveGet{Mode: wire.ArchiveModeExport})
	if err != nil {
		release()
		return nil, archiveErr(c, "export", err)
	}
	return &releasingReader{rc, release}, nil
}

// Changes implements portlayer.Archives.
func (a *Archives) Changes(ctx context.Context, idOrName string) ([]portlayer.Change, error) {
	c, g, _, release, err := a.acquireGuest(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	defer release()
	list, err := g.Changes(ctx)
	if err != nil {
		return nil, archiveErr(c, "changes", err)
	}
	out := make([]portlayer.Change, 0, len(list))
	for _, ch := range list {
		out = append(out, portlayer.Change{Path: ch.Path, Kind: portlayer.ChangeKind(ch.Kind)})
	}
	return out, nil
}

// changesFile, in a container's run directory, holds the changes layer
// taken when the main process of a CaptureChanges container exited; the
// next start deletes it.
const changesFile = "changes.tar"

// captureChanges writes the exited process's changes layer to the run
// directory while the guest still runs and reports whether it did. A
// failure is logged: ChangesLayer then boots a maintenance VM as for any
// stopped container.
func (s *Service) captureChanges(c *container, g *agent.Client) bool {
	ctx, cancel := context.WithTimeout(context.Background(), captureTimeout)
	defer cancel()
	final := filepath.Join(c.runDir, changesFile)
	err := func() error {
		rc, err := g.GetArchive(ctx, wire.ArchiveGet{Mode: wire.ArchiveModeChanges})
		if err != nil {
			return err
		}
		defer rc.Close()
		f, err := os.CreateTemp(c.runDir, changesFile+".*")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		if _, err := io.Copy(f, rc); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(f.Name(), final)
	}()
	if err != nil {
		s.logger.Warn("changes not captured at exit", "container", c.id, "err", err)
		return false
	}
	return true
}

// captureTimeout bounds the capture of a changes layer at exit.
const captureTimeout = 10 * time.Minute

// ChangesLayer implements portlayer.Archives. For an exited container
// created with CaptureChanges it returns the layer taken at the exit
// without booting a VM.
func (a *Archives) ChangesLayer(ctx context.Context, idOrName string) (portlayer.Container, io.ReadCloser, error) {
	s := a.s
	if c, err := s.lookup(idOrName); err == nil {
		c.mu.Lock()
		exited := c.rec.State.Status == portlayer.StatusExited && c.phase != phaseStarting && c.phase != phaseRemoved
		c.mu.Unlock()
		if exited {
			if f, err := os.Open(filepath.Join(c.runDir, changesFile)); err == nil {
				return c.record(), f, nil
			}
		}
	}
	c, g, _, release, err := a.acquireGuest(ctx, idOrName)
	if err != nil {
		return portlayer.Container{}, nil, err
	}
	rc, err := g.GetArchive(ctx, wire.ArchiveGet{Mode: wire.ArchiveModeChanges})
	if err != nil {
		release()
		return portlayer.Container{}, nil, archiveErr(c, "commit", err)
	}
	return c.record(), &releasingReader{rc, release}, nil
}
