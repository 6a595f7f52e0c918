package compute

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// A container's mounts: volumes are extra virtio-blk disks of its VM,
// found by the guest through their serials (volumeSerial), and mounted by
// tether; tmpfs mounts are the guest's memory. An ext4 volume can be
// mounted by one running VM at a time (two kernels writing one ext4
// filesystem corrupt it), so compute claims a container's volumes for the
// life of its VM and refuses a start that would share one (Conflict).

// volumeSerial is the virtio-blk serial of a container's i-th volume disk.
func volumeSerial(i int) string { return "vch-vol-" + strconv.Itoa(i) }

// checkMounts validates a spec's mounts and fills in anonymous volumes'
// names. InvalidArgument for a relative or root target, a target used
// twice, an unknown type, a tmpfs with a source, or volumes without a
// volume store.
func (s *Service) checkMounts(spec *portlayer.ContainerSpec) error {
	seen := map[string]bool{}
	mounts := make([]portlayer.MountSpec, len(spec.Mounts))
	for i, m := range spec.Mounts {
		if !path.IsAbs(m.Target) {
			return portlayer.Invalid(portlayer.KindMount, "Target", m.Target, portlayer.ReasonNotAbsolute, "compute: mount target "+strconv.Quote(m.Target)+" is not an absolute path")
		}
		m.Target = path.Clean(m.Target)
		if m.Target == "/" {
			return portlayer.Invalid(portlayer.KindMount, "Target", m.Target, portlayer.ReasonRootTarget, "compute: a mount cannot cover the root directory")
		}
		if seen[m.Target] {
			return portlayer.Invalid(portlayer.KindMount, "Target", m.Target, portlayer.ReasonDuplicate, "compute: two mounts at "+m.Target)
		}
		seen[m.Target] = true
		if m.Subpath != "" {
			switch {
			case (m.Type != portlayer.MountVolume && m.Type != portlayer.MountImage) || m.Source == "":
				return portlayer.Invalid(portlayer.KindMount, "Subpath", m.Subpath, portlayer.ReasonExclusive, "compute: a subpath is for named volumes and images only")
			case !filepath.IsLocal(m.Subpath):
				return portlayer.Invalid(portlayer.KindMount, "Subpath", m.Subpath, portlayer.ReasonInvalid, "compute: subpath "+strconv.Quote(m.Subpath)+" is not a relative path inside the "+string(m.Type))
			}
		}
		switch m.Type {
		case portlayer.MountVolume:
			if s.cfg.Volumes == nil {
				return portlayer.Errorf(portlayer.ClassInvalidArgument, "volumes are not available")
			}
			if m.Source == "" {
				m.Source, m.Anonymous = newID(), true
			}
		case portlayer.MountTmpfs:
			if m.Source != "" {
				return portlayer.Errorf(portlayer.ClassInvalidArgument, "a tmpfs mount has no source (%q)", m.Source)
			}
		case portlayer.MountImage:
			if !imageID.MatchString(m.Source) {
				return portlayer.Invalid(portlayer.KindMount, "Source", m.Source, portlayer.ReasonInvalid, "compute: an image mount's source "+strconv.Quote(m.Source)+" is not an image ID (sha256: plus 64 hex)")
			}
			if err := s.imageMountsSupported(); err != nil {
				return err
			}
			m.ReadOnly, m.NoCopy = true, true
		case portlayer.MountBind:
			if err := s.bindsSupported(); err != nil {
				return err
			}
			if _, err := s.resolveBind(m); err != nil {
				return err
			}
			m.Source = path.Clean(m.Source)
		default:
			return portlayer.Errorf(portlayer.ClassInvalidArgument, "mount type %q is not supported", m.Type)
		}
		mounts[i] = m
	}
	if len(mounts) > 0 {
		spec.Mounts = mounts
	}
	return nil
}

// imageMountsSupported is nil when this VCH's VMs can take image mounts:
// FailedPrecondition without a rootfs store, or with a driver that keeps
// its own disks (vSphere), which would attach the image's imported disk,
// the parent of its containers' linked clones, to another VM.
func (s *Service) imageMountsSupported() error {
	if s.rootfs == nil || s.disks.store != nil {
		return portlayer.Errorf(portlayer.ClassFailedPrecondition, "image mounts are not available on this VCH's VMs")
	}
	return nil
}

// createVolumes creates the spec's volumes that do not exist yet (named
// ones on first use, so a mount needs no separate volume creation, and
// the anonymous ones). On failure
// the anonymous volumes made so far are removed again.
func (s *Service) createVolumes(ctx context.Context, spec portlayer.ContainerSpec) error {
	var made []string
	for _, m := range spec.Mounts {
		if m.Type != portlayer.MountVolume {
			continue
		}
		_, err := s.cfg.Volumes.CreateVolume(ctx, portlayer.VolumeSpec{Name: m.Source, Labels: m.VolumeLabels, Options: m.VolumeOptions, Anonymous: m.Anonymous})
		if err != nil {
			for _, name := range made {
				_ = s.cfg.Volumes.RemoveVolume(context.WithoutCancel(ctx), name, true)
			}
			return fmt.Errorf("compute: %w", err)
		}
		if m.Anonymous {
			made = append(made, m.Source)
		}
	}
	return nil
}

// removeAnonymousVolumes deletes the anonymous volumes of a removed
// container (AutoRemove); a volume another container uses stays.
func (s *Service) removeAnonymousVolumes(rec portlayer.Container) {
	if s.cfg.Volumes == nil {
		return
	}
	for _, m := range rec.Spec.Mounts {
		if m.Type == portlayer.MountVolume && m.Anonymous {
			if err := s.cfg.Volumes.RemoveVolume(context.Background(), m.Source, true); err != nil {
				s.logger.Warn("remove anonymous volume", "container", rec.ID, "volume", m.Source, "err", err)
			}
		}
	}
}

// VolumeUsers returns the IDs of the containers (any state, those being
// created included) whose mounts name volume name, sorted. It is the
// volume store's in-use check (volume.Config.InUse).
func (s *Service) VolumeUsers(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, c := range s.containers {
		c.mu.Lock()
		for _, m := range c.rec.Spec.Mounts {
			if m.Type == portlayer.MountVolume && m.Source == name {
				ids = append(ids, id)
				break
			}
		}
		c.mu.Unlock()
	}
	slices.Sort(ids)
	return ids
}

// VolumeBusyError is a start refused because a volume the container mounts
// is mounted by another running container's VM; it is a Conflict error.
type VolumeBusyError struct {
	Volume string
	// Container and Name are the running container's ID and name.
	Container, Name string
}

func (e *VolumeBusyError) Error() string {
	return fmt.Sprintf("compute: volume %q is in use by running container %s (%s): a volume is a disk of one container VM, so two running containers cannot mount it at once; stop that container first", e.Volume, e.Name, e.Container[:12])
}

// Unwrap classifies the error as Conflict.
func (e *VolumeBusyError) Unwrap() error { return errdefs.ErrConflict }

// volumeClaim is the set of volumes one container's VM holds.
type volumeClaim struct {
	token   uint64
	volumes []string
}

// claimVolumes records that container c's next VM mounts the spec's
// volumes. A volume held by another container's VM that is still
// powering off (its container has exited) is waited for; one held by a
// running, paused or starting container is a *VolumeBusyError. The token
// releases exactly this claim (a later start of the same container
// replaces it).
func (s *Service) claimVolumes(ctx context.Context, c *container, rec portlayer.Container) (uint64, error) {
	var vols []string
	for _, m := range rec.Spec.Mounts {
		if m.Type == portlayer.MountVolume {
			vols = append(vols, m.Source)
		}
	}
	for {
		s.mu.Lock()
		busy, gone, err := s.volumeHolderLocked(c.id, vols)
		if err != nil {
			s.mu.Unlock()
			return 0, err
		}
		if !busy {
			s.claimSeq++
			if len(vols) > 0 {
				s.claims[c.id] = volumeClaim{token: s.claimSeq, volumes: vols}
			}
			token := s.claimSeq
			s.mu.Unlock()
			return token, nil
		}
		s.mu.Unlock()
		select {
		case <-gone:
		case <-ctx.Done():
			return 0, fmt.Errorf("compute: start %s: %w", c.id, ctx.Err())
		}
	}
}

// volumeHolderLocked looks for another container's VM holding one of
// vols: a *VolumeBusyError if that container runs (or starts); else busy
// with the channel that closes when its VM is gone. Caller holds s.mu.
func (s *Service) volumeHolderLocked(self string, vols []string) (bool, <-chan struct{}, error) {
	for id, cl := range s.claims {
		if id == self {
			continue
		}
		for _, v := range vols {
			if !slices.Contains(cl.volumes, v) {
				continue
			}
			other := s.containers[id]
			if other == nil {
				continue // removed; its claim ends with its VM
			}
			other.mu.Lock()
			st, starting, name, gone := other.rec.State.Status, other.phase == phaseStarting, other.rec.Spec.Name, other.vmGone
			other.mu.Unlock()
			if starting || st == portlayer.StatusRunning || st == portlayer.StatusPaused || st == portlayer.StatusRestarting || gone == nil {
				return false, nil, &VolumeBusyError{Volume: v, Container: id, Name: name}
			}
			return true, gone, nil
		}
	}
	return false, nil, nil
}

// releaseVolumes ends claim token of container id, once its VM is gone.
func (s *Service) releaseVolumes(id string, token uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl, ok := s.claims[id]; ok && cl.token == token {
		delete(s.claims, id)
	}
}

// volumeDisks returns the disks and guest mounts for the spec's mounts,
// in the spec's order; volume disks get serials vch-vol-0, -1, …, bind
// mounts the tags vch-share-0, -1, … of s.shares. A volume mounted at
// several targets is one disk whose serial those mounts share: two
// devices of one ext4 image, each mounted, corrupt it.
func (s *Service) volumeDisks(ctx context.Context, spec portlayer.ContainerSpec) ([]hypervisor.Disk, []wire.Mount, error) {
	var disks []hypervisor.Disk
	var mounts []wire.Mount
	binds := 0                     // bind mounts use the shares of s.shares, in order
	serials := map[string]string{} // volume name → its disk's serial
	for _, m := range spec.Mounts {
		switch m.Type {
		case portlayer.MountVolume:
			if serial, ok := serials[m.Source]; ok {
				mounts = append(mounts, wire.Mount{Type: wire.MountVolume, Serial: serial, Target: m.Target, ReadOnly: m.ReadOnly, CopyUp: !m.NoCopy, Subpath: m.Subpath})
				continue
			}
			if s.cfg.Volumes == nil {
				return nil, nil, portlayer.Errorf(portlayer.ClassFailedPrecondition, "volumes are not available")
			}
			v, err := s.cfg.Volumes.InspectVolume(ctx, m.Source)
			if err != nil {
				return nil, nil, fmt.Errorf("compute: volume %s: %w", m.Source, err)
			}
			format := cmp.Or(v.DiskFormat, "raw")
			if s.disks.store != nil && format == "raw" {
				// A host file, which VMs of a driver with its own
				// disk store (vSphere) cannot attach.
				return nil, nil, portlayer.Errorf(portlayer.ClassFailedPrecondition, "volume %s is a disk on the VCH's own host, which this VCH's VMs cannot attach: create it on a datastore volume store (docker volume create --opt volume-store=NAME)", m.Source)
			}
			serial := volumeSerial(len(disks))
			serials[m.Source] = serial
			disks = append(disks, hypervisor.Disk{Path: v.DiskPath, Format: format, Serial: serial})
			mounts = append(mounts, wire.Mount{Type: wire.MountVolume, Serial: serial, Target: m.Target, ReadOnly: m.ReadOnly, CopyUp: !m.NoCopy, Subpath: m.Subpath})
		case portlayer.MountImage:
			if serial, ok := serials[m.Source]; ok {
				mounts = append(mounts, wire.Mount{Type: wire.MountImage, Serial: serial, Target: m.Target, ReadOnly: true, Subpath: m.Subpath})
				continue
			}
			if err := s.imageMountsSupported(); err != nil {
				return nil, nil, err
			}
			local, err := s.rootfs.Rootfs(ctx, m.Source)
			if err != nil {
				return nil, nil, fmt.Errorf("compute: image mount %s: %w", m.Source, err)
			}
			serial := volumeSerial(len(disks))
			serials[m.Source] = serial
			disks = append(disks, hypervisor.Disk{Path: local, Format: "raw", ReadOnly: true, Serial: serial})
			mounts = append(mounts, wire.Mount{Type: wire.MountImage, Serial: serial, Target: m.Target, ReadOnly: true, Subpath: m.Subpath})
		case portlayer.MountTmpfs:
			mounts = append(mounts, wire.Mount{Type: wire.MountTmpfs, Target: m.Target, ReadOnly: m.ReadOnly, Options: m.Options})
		case portlayer.MountBind:
			mounts = append(mounts, wire.Mount{Type: wire.MountBind, Tag: shareTag(binds), Target: m.Target, ReadOnly: m.ReadOnly})
			binds++
		}
	}
	return disks, mounts, nil
}

// volumeEvents publishes a volume "mount" or "unmount" event for each of
// a container's volumes.
func (s *Service) volumeEvents(action string, rec portlayer.Container) {
	if s.cfg.Events == nil {
		return
	}
	for _, m := range rec.Spec.Mounts {
		if m.Type != portlayer.MountVolume {
			continue
		}
		attrs := map[string]string{"container": rec.ID, "driver": "local"}
		if action == "mount" {
			attrs["destination"] = m.Target
			attrs["propagation"] = ""
			attrs["read/write"] = strconv.FormatBool(!m.ReadOnly)
		}
		s.cfg.Events.Publish(portlayer.Event{Type: "volume", Action: action, ID: m.Source, Attributes: attrs})
	}
}

// setupErr is the error of a guest setup that failed with err: for a
// volume's or image's subpath the guest refused (*wire.MountError), the
// port layer's typed error (MountSpec.Subpath says which; Name is the
// volume's name or the image's ID); otherwise err wrapped.
func setupErr(spec portlayer.ContainerSpec, err error) error {
	var me *wire.MountError
	if !errors.As(err, &me) {
		return fmt.Errorf("compute: guest setup: %w", err)
	}
	volume, kind := "", "volume"
	for _, m := range spec.Mounts {
		if m.Target == me.Target {
			volume = m.Source
			if m.Type == portlayer.MountImage {
				kind = "image"
			}
		}
	}
	pe := &portlayer.Error{Kind: portlayer.KindMount, Name: volume, Field: "Subpath", Value: me.Subpath, Cause: me.Errno}
	switch me.Reason {
	case wire.MountTypeMismatch:
		pe.Class, pe.Reason, pe.ID = portlayer.ClassInvalidArgument, portlayer.ReasonTypeMismatch, me.Target
		pe.Message = "compute: " + kind + " " + volume + " and target " + me.Target + " are not both directories or both files"
	case wire.SubpathEscapes:
		pe.Class, pe.Reason = portlayer.ClassInvalidArgument, portlayer.ReasonEscapes
		pe.Message = "compute: subpath " + me.Subpath + " leads out of " + kind + " " + volume
	case wire.SubpathMissing:
		pe.Class, pe.Reason = portlayer.ClassNotFound, portlayer.ReasonMissing
		pe.Message = "compute: " + kind + " " + volume + " has nothing at subpath " + me.Subpath
	default:
		pe.Class, pe.Reason = portlayer.ClassInternal, portlayer.ReasonUnresolvable
		pe.Message = "compute: subpath " + me.Subpath + " of " + kind + " " + volume + " cannot be resolved"
	}
	return pe
}
