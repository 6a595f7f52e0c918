package compute_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/compute"
	"github.com/vchproject/vch/internal/portlayer/volume"
)

// volumeHarness is a compute harness with a real volume store (sparse
// ext4 disks; needs e2fsprogs) whose in-use check asks compute.
func volumeHarness(t *testing.T) (*harness, *volume.Store) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := exec.LookPath("/usr/sbin/" + tool); err != nil {
				t.Skipf("%s not installed (Debian e2fsprogs)", tool)
			}
		}
	}
	var h *harness
	vs, err := volume.New(volume.Config{Root: t.TempDir(), DefaultSizeBytes: 64 << 20, InUse: func(name string) []string {
		return h.svc.VolumeUsers(name)
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h = newHarness(t, func(c *compute.Config) { c.Volumes = vs })
	return h, vs
}

func TestVolumeMounts(t *testing.T) {
	h, vs := volumeHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), ReadOnlyRootfs: true, Mounts: []portlayer.MountSpec{
		{Type: portlayer.MountVolume, Source: "data", Target: "/data/", VolumeOptions: map[string]string{"size": "32m"}, VolumeLabels: map[string]string{"k": "v"}},
		{Type: portlayer.MountVolume, Target: "/anon"},
		{Type: portlayer.MountTmpfs, Target: "/t", Options: "noexec,nosuid,nodev,size=1m"},
		{Type: portlayer.MountVolume, Source: "data2", Target: "/ro", ReadOnly: true, NoCopy: true},
	}})
	ms := c.Spec.Mounts
	if len(ms) != 4 || ms[0].Target != "/data" || ms[1].Anonymous == false || len(ms[1].Source) != 64 || ms[0].Anonymous || ms[3].Anonymous {
		t.Fatalf("recorded mounts %+v; want targets cleaned and the anonymous volume named", ms)
	}
	anon := ms[1].Source
	data, err := vs.InspectVolume(t.Context(), "data")
	if err != nil || data.SizeBytes != 32<<20 || data.Labels["k"] != "v" || data.Anonymous {
		t.Fatalf("volume data = %+v, %v", data, err)
	}
	av, err := vs.InspectVolume(t.Context(), anon)
	if err != nil || !av.Anonymous || av.SizeBytes != 64<<20 {
		t.Fatalf("anonymous volume = %+v, %v", av, err)
	}
	d2, _ := vs.InspectVolume(t.Context(), "data2")

	h.start(c.ID)
	vm := h.vm(c.ID)
	disks := vm.Spec().Disks
	wantDisks := []hypervisor.Disk{
		{Path: disks[0].Path, Format: "qcow2", Serial: wire.RootSerial},
		{Path: disks[1].Path, Format: "raw", ReadOnly: true, Serial: wire.BaseSerial},
		{Path: data.DiskPath, Format: "raw", Serial: "vch-vol-0"},
		{Path: av.DiskPath, Format: "raw", Serial: "vch-vol-1"},
		{Path: d2.DiskPath, Format: "raw", Serial: "vch-vol-2"},
	}
	if fmt.Sprint(disks) != fmt.Sprint(wantDisks) {
		t.Errorf("disks\n got %+v\nwant %+v", disks, wantDisks)
	}
	setup, _ := vm.Setup()
	wantMounts := []wire.Mount{
		{Type: "volume", Serial: "vch-vol-0", Target: "/data", CopyUp: true},
		{Type: "volume", Serial: "vch-vol-1", Target: "/anon", CopyUp: true},
		{Type: "tmpfs", Target: "/t", Options: "noexec,nosuid,nodev,size=1m"},
		{Type: "volume", Serial: "vch-vol-2", Target: "/ro", ReadOnly: true},
	}
	if fmt.Sprint(setup.Mounts) != fmt.Sprint(wantMounts) || !setup.ReadOnlyRoot {
		t.Errorf("setup mounts %+v read-only root %v\nwant %+v, true", setup.Mounts, setup.ReadOnlyRoot, wantMounts)
	}

	// In use by the container (running or not): Docker's conflict.
	err = vs.RemoveVolume(t.Context(), "data", false)
	if inUse := portlayer.AsError(err); inUse == nil || inUse.Reason != portlayer.ReasonInUse || len(inUse.Containers) != 1 || inUse.Containers[0] != c.ID {
		t.Errorf("remove in-use volume = %v", err)
	}
	if users := h.svc.VolumeUsers("data"); len(users) != 1 || users[0] != c.ID {
		t.Errorf("VolumeUsers = %v", users)
	}
	if err := h.svc.Kill(t.Context(), c.ID, 9); err != nil {
		t.Fatal(err)
	}
	h.waitExit(c.ID)
	if err := vs.RemoveVolume(t.Context(), "data", false); !errdefs.IsConflict(err) {
		t.Errorf("remove volume of a stopped container = %v, want Conflict", err)
	}
	// docker rm (without -v) keeps every volume.
	if err := h.svc.Remove(t.Context(), c.ID, false); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"data", anon, "data2"} {
		if _, err := vs.InspectVolume(t.Context(), name); err != nil {
			t.Errorf("volume %s after rm: %v", name, err)
		}
		if err := vs.RemoveVolume(t.Context(), name, false); err != nil {
			t.Errorf("remove volume %s after the container: %v", name, err)
		}
	}
}

// TestVolumeAtSeveralTargets: a volume mounted at several targets (with
// and without a subpath, one read-only) is one disk of the VM, and every
// mount names its serial: two devices of one ext4 image, each mounted by
// the guest, corrupt it. Subpaths that are not lexically local, or on an
// anonymous volume or a tmpfs, are refused at create.
func TestVolumeAtSeveralTargets(t *testing.T) {
	h, vs := volumeHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Mounts: []portlayer.MountSpec{
		{Type: portlayer.MountVolume, Source: "one", Target: "/a"},
		{Type: portlayer.MountVolume, Source: "two", Target: "/b"},
		{Type: portlayer.MountVolume, Source: "one", Target: "/c", ReadOnly: true},
		{Type: portlayer.MountVolume, Source: "one", Target: "/d", Subpath: "sub/dir"},
	}})
	h.start(c.ID)
	vm := h.vm(c.ID)
	one, _ := vs.InspectVolume(t.Context(), "one")
	two, _ := vs.InspectVolume(t.Context(), "two")
	var got []string
	for _, d := range vm.Spec().Disks[2:] {
		got = append(got, d.Serial+"="+d.Path)
	}
	if want := []string{"vch-vol-0=" + one.DiskPath, "vch-vol-1=" + two.DiskPath}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("volume disks %v, want %v", got, want)
	}
	setup, _ := vm.Setup()
	wantMounts := []wire.Mount{
		{Type: "volume", Serial: "vch-vol-0", Target: "/a", CopyUp: true},
		{Type: "volume", Serial: "vch-vol-1", Target: "/b", CopyUp: true},
		{Type: "volume", Serial: "vch-vol-0", Target: "/c", ReadOnly: true, CopyUp: true},
		{Type: "volume", Serial: "vch-vol-0", Target: "/d", CopyUp: true, Subpath: "sub/dir"},
	}
	if fmt.Sprint(setup.Mounts) != fmt.Sprint(wantMounts) {
		t.Errorf("setup mounts\n got %+v\nwant %+v", setup.Mounts, wantMounts)
	}

	for _, tt := range []struct {
		m      portlayer.MountSpec
		reason string
	}{
		{portlayer.MountSpec{Type: portlayer.MountVolume, Source: "one", Target: "/x", Subpath: "../etc"}, portlayer.ReasonInvalid},
		{portlayer.MountSpec{Type: portlayer.MountVolume, Source: "one", Target: "/x", Subpath: "/etc"}, portlayer.ReasonInvalid},
		{portlayer.MountSpec{Type: portlayer.MountVolume, Target: "/x", Subpath: "sub"}, portlayer.ReasonExclusive},
		{portlayer.MountSpec{Type: portlayer.MountTmpfs, Target: "/x", Subpath: "sub"}, portlayer.ReasonExclusive},
	} {
		_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("true"), Mounts: []portlayer.MountSpec{tt.m}})
		if pe := portlayer.AsError(err); pe == nil || pe.Class != portlayer.ClassInvalidArgument || pe.Field != "Subpath" || pe.Reason != tt.reason {
			t.Errorf("create with %+v: %v, want InvalidArgument Subpath %s", tt.m, err, tt.reason)
		}
	}
}

// TestImageMounts: an image mount is the image's rootfs disk attached
// read-only (one disk for an image at several targets, after the
// volumes' disks in the spec's order), mounted read-only and never
// copied up; the image counts as in use while the container exists; a
// source that is not an image ID, and a subpath that leads out, are
// refused at create.
func TestImageMounts(t *testing.T) {
	h, vs := volumeHarness(t)
	other := "sha256:" + strings.Repeat("2", 64)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Mounts: []portlayer.MountSpec{
		{Type: portlayer.MountImage, Source: other, Target: "/img"},
		{Type: portlayer.MountVolume, Source: "vol", Target: "/v"},
		{Type: portlayer.MountImage, Source: other, Target: "/etc/app", Subpath: "etc"},
	}})
	if id, ok := h.svc.ImageInUse(other); !ok || id != c.ID {
		t.Errorf("ImageInUse(mounted image) = %q, %v; want %s", id, ok, c.ID)
	}
	if m := c.Spec.Mounts[0]; !m.ReadOnly || !m.NoCopy {
		t.Errorf("image mount recorded as %+v, want read-only and no copy-up", m)
	}
	h.start(c.ID)
	vm := h.vm(c.ID)
	v, _ := vs.InspectVolume(t.Context(), "vol")
	var got []string
	for _, d := range vm.Spec().Disks[2:] {
		got = append(got, fmt.Sprintf("%s=%s ro=%t", d.Serial, d.Path, d.ReadOnly))
	}
	want := []string{
		"vch-vol-0=" + filepath.Join(h.rootfs.dir, strings.Repeat("2", 64)+".raw") + " ro=true",
		"vch-vol-1=" + v.DiskPath + " ro=false",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("disks %v, want %v", got, want)
	}
	setup, _ := vm.Setup()
	wantMounts := []wire.Mount{
		{Type: "image", Serial: "vch-vol-0", Target: "/img", ReadOnly: true},
		{Type: "volume", Serial: "vch-vol-1", Target: "/v", CopyUp: true},
		{Type: "image", Serial: "vch-vol-0", Target: "/etc/app", ReadOnly: true, Subpath: "etc"},
	}
	if fmt.Sprint(setup.Mounts) != fmt.Sprint(wantMounts) {
		t.Errorf("setup mounts\n got %+v\nwant %+v", setup.Mounts, wantMounts)
	}
	if err := h.svc.Remove(t.Context(), c.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.svc.ImageInUse(other); ok {
		t.Error("image still in use after its only mounting container was removed")
	}

	// A mounted image that is gone by the create (a removal raced it)
	// fails the create, not a later start.
	gone := "sha256:" + strings.Repeat("3", 64)
	h.rootfs.setMissing(gone)
	if _, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("true"), Mounts: []portlayer.MountSpec{{Type: portlayer.MountImage, Source: gone, Target: "/x"}}}); !errdefs.IsNotFound(err) {
		t.Errorf("create mounting a missing image: %v, want NotFound", err)
	}

	for _, tt := range []struct {
		m             portlayer.MountSpec
		field, reason string
	}{
		{portlayer.MountSpec{Type: portlayer.MountImage, Source: "busybox", Target: "/x"}, "Source", portlayer.ReasonInvalid},
		{portlayer.MountSpec{Type: portlayer.MountImage, Source: other, Target: "/x", Subpath: "../etc"}, "Subpath", portlayer.ReasonInvalid},
	} {
		_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("true"), Mounts: []portlayer.MountSpec{tt.m}})
		if pe := portlayer.AsError(err); pe == nil || pe.Class != portlayer.ClassInvalidArgument || pe.Field != tt.field || pe.Reason != tt.reason {
			t.Errorf("create with %+v: %v, want InvalidArgument %s %s", tt.m, err, tt.field, tt.reason)
		}
	}
}

// TestVolumeExclusive: a volume is one running VM's disk. A second
// container using it cannot start while the first runs (Conflict); once
// the first has stopped it can.
func TestVolumeExclusive(t *testing.T) {
	h, _ := volumeHarness(t)
	mounts := []portlayer.MountSpec{{Type: portlayer.MountVolume, Source: "shared", Target: "/d"}}
	a := h.create(portlayer.ContainerSpec{Name: "first", Args: args("sleep"), Mounts: mounts})
	b := h.create(portlayer.ContainerSpec{Args: args("sleep"), Mounts: mounts})
	h.start(a.ID)
	err := h.svc.Start(t.Context(), b.ID)
	var busy *compute.VolumeBusyError
	if !errors.As(err, &busy) || !errdefs.IsConflict(err) || busy.Container != a.ID || busy.Volume != "shared" {
		t.Fatalf("second start = %v, want a Conflict VolumeBusyError naming %s", err, a.ID)
	}
	if !strings.Contains(err.Error(), `volume "shared" is in use by running container first`) {
		t.Errorf("message %q", err)
	}
	if st := h.inspect(b.ID).State.Status; st != portlayer.StatusCreated {
		t.Errorf("refused container is %s, want created", st)
	}
	// docker run --rm of a refused container: removed, so the CLI's
	// removal wait ends.
	rm := h.create(portlayer.ContainerSpec{Args: args("sleep"), Mounts: mounts, AutoRemove: true})
	removed := h.wait(rm.ID, portlayer.WaitRemoved)
	if err := h.svc.Start(t.Context(), rm.ID); !errdefs.IsConflict(err) {
		t.Errorf("start of an auto-remove container = %v, want Conflict", err)
	}
	recv(t, removed, "removal of the refused auto-remove container")
	// The same container may restart with its own volume.
	if err := h.svc.Stop(t.Context(), a.ID, new(time.Duration)); err != nil {
		t.Fatal(err)
	}
	h.start(a.ID)
	if err := h.svc.Kill(t.Context(), a.ID, 9); err != nil {
		t.Fatal(err)
	}
	h.waitExit(a.ID)
	// The first container's VM may still be powering off: the start waits.
	h.start(b.ID)
	// Root, the image's disk (for diff) and the volume.
	if got := h.vm(b.ID).Spec().Disks; len(got) != 3 || got[1].Serial != "vch-base" || got[2].Serial != "vch-vol-0" {
		t.Errorf("disks %+v", got)
	}
}

// TestAutoRemoveVolumes: docker run --rm removes the container's
// anonymous volumes and keeps named ones.
func TestAutoRemoveVolumes(t *testing.T) {
	h, vs := volumeHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("exit", "0"), AutoRemove: true, Mounts: []portlayer.MountSpec{
		{Type: portlayer.MountVolume, Source: "keep", Target: "/k"},
		{Type: portlayer.MountVolume, Target: "/a"},
	}})
	removed := h.wait(c.ID, portlayer.WaitRemoved)
	h.start(c.ID)
	recv(t, removed, "removal")
	deadline := time.Now().Add(5 * time.Second)
	for {
		list, _ := vs.ListVolumes(t.Context())
		if len(list) == 1 && list[0].Name == "keep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("volumes after --rm: %+v; want only keep", list)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCreateVolumeFailure: a create that fails after its volumes were made
// removes the anonymous ones; bad mounts are InvalidArgument.
func TestCreateVolumeFailure(t *testing.T) {
	h, vs := volumeHarness(t)
	h.drv.FailOverlay(errors.New("disk full"))
	_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("sleep"), Mounts: []portlayer.MountSpec{
		{Type: portlayer.MountVolume, Source: "named", Target: "/n"},
		{Type: portlayer.MountVolume, Target: "/a"},
	}})
	if err == nil {
		t.Fatal("create succeeded")
	}
	list, _ := vs.ListVolumes(t.Context())
	if len(list) != 1 || list[0].Name != "named" {
		t.Errorf("volumes after failed create: %+v; want the named one only", list)
	}

	for _, tc := range []struct {
		name   string
		mounts []portlayer.MountSpec
		msg    string
	}{
		{"relative", []portlayer.MountSpec{{Type: portlayer.MountVolume, Target: "rel"}}, "Target/not_absolute/rel"},
		{"root", []portlayer.MountSpec{{Type: portlayer.MountTmpfs, Target: "/"}}, "Target/root_target//"},
		{"duplicate", []portlayer.MountSpec{{Type: portlayer.MountTmpfs, Target: "/x"}, {Type: portlayer.MountVolume, Target: "/x/"}}, "Target/duplicate//x"},
		{"tmpfs source", []portlayer.MountSpec{{Type: portlayer.MountTmpfs, Source: "s", Target: "/x"}}, "no source"},
		{"unknown type", []portlayer.MountSpec{{Type: "npipe", Target: "/x"}}, `mount type "npipe" is not supported`},
		{"bad volume name", []portlayer.MountSpec{{Type: portlayer.MountVolume, Source: "b/c", Target: "/x"}}, "Name/invalid_name/b/c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("sleep"), Mounts: tc.mounts})
			if !errdefs.IsInvalidArgument(err) || (!strings.Contains(err.Error(), tc.msg) && fieldReason(err) != tc.msg) {
				t.Errorf("create = %v, want InvalidArgument containing %q or with that field/reason/value", err, tc.msg)
			}
		})
	}
	if cs, _ := h.svc.List(t.Context()); len(cs) != 0 {
		t.Errorf("containers left: %d", len(cs))
	}
	plain := newHarness(t)
	_, err = plain.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("sleep"), Mounts: []portlayer.MountSpec{{Type: portlayer.MountVolume, Target: "/v"}}})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("volume mount without a volume store = %v, want InvalidArgument", err)
	}
}

// TestBindMounts: a bind mount is a host directory shared with the VM,
// which then boots the share kernel; sources outside the allowed roots,
// files, and missing sources (unless created) are refused.
func TestBindMounts(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *compute.Config) {
		c.ShareKernel, c.ShareInitrd, c.BindRoots = "/boot/vmlinux-share", "/boot/initrd-share", []string{root}
	})
	c := h.create(portlayer.ContainerSpec{Args: args("sleep"), Mounts: []portlayer.MountSpec{
		{Type: portlayer.MountBind, Source: root + "/made/here/", Target: "/h", CreateHostDir: true},
		{Type: portlayer.MountBind, Source: root, Target: "/ro", ReadOnly: true},
		{Type: portlayer.MountTmpfs, Target: "/t"},
	}})
	if st, err := os.Stat(filepath.Join(root, "made", "here")); err != nil || !st.IsDir() {
		t.Fatalf("bind source not created: %v", err)
	}
	h.start(c.ID)
	vm := h.vm(c.ID)
	spec := vm.Spec()
	wantShares := []hypervisor.Share{{Tag: "vch-share-0", Path: filepath.Join(root, "made", "here")}, {Tag: "vch-share-1", Path: root, ReadOnly: true}}
	if spec.Kernel != "/boot/vmlinux-share" || spec.Initrd != "/boot/initrd-share" || fmt.Sprint(spec.Shares) != fmt.Sprint(wantShares) {
		t.Errorf("VM kernel %s initrd %s shares %+v; want the share kernel and %+v", spec.Kernel, spec.Initrd, spec.Shares, wantShares)
	}
	setup, _ := vm.Setup()
	wantMounts := []wire.Mount{
		{Type: "bind", Tag: "vch-share-0", Target: "/h"},
		{Type: "bind", Tag: "vch-share-1", Target: "/ro", ReadOnly: true},
		{Type: "tmpfs", Target: "/t"},
	}
	if fmt.Sprint(setup.Mounts) != fmt.Sprint(wantMounts) {
		t.Errorf("setup mounts %+v, want %+v", setup.Mounts, wantMounts)
	}
	// A container without bind mounts keeps the default kernel.
	plain := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	h.start(plain.ID)
	if k := h.vm(plain.ID).Spec().Kernel; k != h.cfg.Kernel {
		t.Errorf("kernel of a container without binds = %s", k)
	}

	for _, tc := range []struct {
		name  string
		m     portlayer.MountSpec
		class func(error) bool
		msg   string
	}{
		{"outside the roots", portlayer.MountSpec{Source: outside}, errdefs.IsPermissionDenied, "allows bind mounts under " + root + " only"},
		{"link out of the roots", portlayer.MountSpec{Source: root + "/escape"}, errdefs.IsPermissionDenied, "refused"},
		{"new dir out of the roots", portlayer.MountSpec{Source: root + "/escape/new", CreateHostDir: true}, errdefs.IsPermissionDenied, "refused"},
		{"missing", portlayer.MountSpec{Source: root + "/nosuch"}, errdefs.IsInvalidArgument, "Source/missing/" + root + "/nosuch"},
		{"file", portlayer.MountSpec{Source: root + "/file"}, errdefs.IsInvalidArgument, "can share host directories only"},
		{"relative", portlayer.MountSpec{Source: "rel"}, errdefs.IsInvalidArgument, "Source/not_absolute/rel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.m.Type, tc.m.Target = portlayer.MountBind, "/x"
			_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("sleep"), Mounts: []portlayer.MountSpec{tc.m}})
			if !tc.class(err) || (!strings.Contains(err.Error(), tc.msg) && fieldReason(err) != tc.msg) {
				t.Errorf("create = %v, want %q", err, tc.msg)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Error("a directory was made outside the allowed roots")
	}

	bind := []portlayer.MountSpec{{Type: portlayer.MountBind, Source: root, Target: "/x"}}
	noKernel := newHarness(t, func(c *compute.Config) { c.BindRoots = []string{root} })
	if _, err := noKernel.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("sleep"), Mounts: bind}); !errdefs.IsNotImplemented(err) {
		t.Errorf("bind mount without a share kernel = %v, want NotImplemented", err)
	}
	noRoots := newHarness(t, func(c *compute.Config) { c.ShareKernel, c.ShareInitrd = "k", "i" })
	if _, err := noRoots.svc.Create(t.Context(), portlayer.ContainerSpec{Image: testImage, Args: args("sleep"), Mounts: bind}); !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "--allow-bind-mounts") {
		t.Errorf("bind mount without allowed roots = %v, want PermissionDenied naming --allow-bind-mounts", err)
	}
}
