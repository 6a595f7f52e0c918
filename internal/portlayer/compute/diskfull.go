package compute

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// When the filesystem under Config.Root (which holds the containers'
// root disks, and the volumes in a VCH's default layout) fills up, a
// container VM's next write to its disk fails on the host. The VMM then
// stops the whole VM rather than fail the guest's write
// (hypervisor.DiskStaller), so nothing the container wrote is lost; the
// port layer shows it paused, with State.Error saying why, and runs it
// again once the filesystem has room.
const (
	// diskWatchInterval is how often the filesystem's free space is read
	// (one statfs(2)); VMs are asked only while it is low.
	diskWatchInterval = 2 * time.Second
	// diskLowWaterBytes is the free space, in bytes, below which running
	// VMs are asked whether they stopped, and at or above which the VMs
	// stopped for lack of space are run again.
	diskLowWaterBytes = 256 << 20
)

// freeBytes is the space, in bytes, an unprivileged writer may still use
// on the filesystem under dir (statfs(2) f_bavail).
func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("compute: statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// diskFullError is State.Error of a container whose VM stopped for lack
// of space on the host, free bytes left.
func diskFullError(root string, free uint64) string {
	return fmt.Sprintf("paused: the VCH's disk is full (%d MiB free on the filesystem of %s); the container runs again, nothing lost, once %d MiB are free",
		free>>20, root, diskLowWaterBytes>>20)
}

// watchDisk runs checkDisk every diskWatchInterval until Close.
func (s *Service) watchDisk() {
	defer s.wg.Done()
	t := time.NewTicker(diskWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.checkDisk()
	}
}

// checkDisk marks the running containers whose VM stopped on a full disk
// paused, and runs again those it marked once there is room.
func (s *Service) checkDisk() {
	free, err := freeBytes(s.cfg.Root)
	if err != nil {
		s.logger.Warn("free space unknown", "err", err)
		return
	}
	s.mu.Lock()
	all := s.allLocked()
	s.mu.Unlock()
	for _, c := range all {
		c.mu.Lock()
		vm, status := c.vm, c.rec.State.Status
		stalled := vm != nil && c.stalledVM == vm
		c.mu.Unlock()
		ds, ok := vm.(hypervisor.DiskStaller)
		if !ok {
			continue
		}
		switch {
		case stalled && free >= diskLowWaterBytes:
			s.resumeStalled(c, vm)
		case !stalled && status == portlayer.StatusRunning && free < diskLowWaterBytes:
			ctx, cancel := context.WithTimeout(context.Background(), qmpBound)
			st, err := ds.DiskStalled(ctx)
			cancel()
			if err == nil && st {
				s.markStalled(c, vm, free)
			}
		}
	}
}

// qmpBound bounds one question to a VMM.
const qmpBound = 5 * time.Second

// markStalled records c, whose VM vm stopped on a full disk, as paused.
func (s *Service) markStalled(c *container, vm hypervisor.VM, free uint64) {
	c.mu.Lock()
	if c.vm != vm || c.rec.State.Status != portlayer.StatusRunning {
		c.mu.Unlock()
		return
	}
	c.stalledVM = vm
	c.rec.State.Status = portlayer.StatusPaused
	c.rec.State.Error = diskFullError(s.cfg.Root, free)
	rec := c.rec
	c.mu.Unlock()
	s.logger.Error("container VM stopped: the disk is full", "container", c.id, "free_bytes", free, "root", s.cfg.Root)
	if err := s.recs.put(rec); err != nil {
		s.logger.Warn("persist disk-full pause", "container", c.id, "err", err)
	}
	s.event("pause", rec, map[string]string{"reason": "disk full"})
}

// resumeStalled runs c's VM vm again (its failed write is retried) and
// records it running; if the disk fills again, the next check finds it
// stopped again.
func (s *Service) resumeStalled(c *container, vm hypervisor.VM) {
	p, ok := vm.(hypervisor.Pauser)
	if !ok {
		return
	}
	c.mu.Lock()
	if c.vm != vm || c.stalledVM != vm || c.rec.State.Status != portlayer.StatusPaused {
		c.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), qmpBound)
	defer cancel()
	if err := p.Resume(ctx); err != nil {
		c.mu.Unlock()
		s.logger.Warn("container VM not resumed after the disk had room again", "container", c.id, "err", err)
		return
	}
	c.stalledVM = nil
	c.rec.State.Status = portlayer.StatusRunning
	c.rec.State.Error = ""
	rec, g := c.rec, c.guest
	c.mu.Unlock()
	if err := s.recs.put(rec); err != nil {
		s.logger.Warn("persist resumed state", "container", c.id, "err", err)
	}
	s.logger.Info("container VM runs again: the disk has room", "container", c.id)
	s.event("unpause", rec, map[string]string{"reason": "disk has room"})
	if g != nil {
		// It stood still while stopped, as after an unpause.
		if err := g.SetClock(ctx); err != nil {
			s.logger.Warn("guest clock not reset after a disk-full pause", "container", c.id, "err", err)
		}
	}
}
