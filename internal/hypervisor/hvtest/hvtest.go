// Package hvtest is the conformance suite for [hypervisor.Driver]
// implementations, in the manner of containerd's snapshotter test suite:
// the contract lives in package hypervisor, and every driver proves it
// keeps it by calling [Run] from its own (VM-booting, usually e2e) tests
// with a factory for a ready driver and a bootable guest:
//
//	func TestConformance(t *testing.T) {
//		testenv.RequireVMs(t)
//		hvtest.Run(t, func(t *testing.T) hypervisor.Driver { return newDriver(t) }, image)
//	}
//
// The guest must run tether (package tether) as its agent: the suite
// talks to it with package agent to see that a channel really reaches a
// booted guest and to ask for a clean power-off.
//
// The suite checks what every caller relies on: a bad spec is refused
// (InvalidArgument, no VMM left behind); Start returns with a connected
// channel; Pid, Done, Status and Kill behave as documented (Kill ends the
// VM within a bound with an error status and is idempotent; a guest
// power-off ends it with a nil status); VMs run side by side with
// independent channels; overlays from CreateOverlay are bootable disks that
// leave their base untouched; Capabilities names the accelerator. For a
// driver whose Capabilities report Adopt, [RunAdopt] checks that another
// driver takes a running VM back: the same guest answers on the new
// channel, twice over, and Kill works on the adopted VM.
//
// It boots three VMs in all (two without Adopt), each bounded by
// [BootTimeout], so a driver under TCG passes in well under a minute.
package hvtest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/testenv"
)

// Bounds the suite holds drivers to.
const (
	// BootTimeout bounds one guest boot, from Start to a tether handshake
	// (two guests booting at once under TCG on a 2-core host take ~10 s).
	BootTimeout = 90 * time.Second
	// KillTimeout bounds Kill until Done is closed.
	KillTimeout = 10 * time.Second
	// PowerOffTimeout bounds a guest power-off until Done is closed.
	PowerOffTimeout = 30 * time.Second
)

// GuestImage is a bootable guest for the suite.
type GuestImage struct {
	// Kernel and Initrd are host paths of the guest kernel and an
	// initramfs whose /init is tether.
	Kernel, Initrd string
	// RootDisk makes a fresh root disk for tether to mount (an empty
	// filesystem will do) somewhere under dir, and returns it. The suite
	// uses it only as the read-only base of overlays.
	RootDisk func(t *testing.T, dir string) hypervisor.Disk
	// ChannelName is the virtio-serial port name the agent opens
	// (wire.PortName for tether).
	ChannelName string
	// Cmdline holds extra kernel arguments, if any.
	Cmdline string
}

// Run runs the conformance suite. newDriver returns a ready driver; it is
// called once per subtest.
func Run(t *testing.T, newDriver func(t *testing.T) hypervisor.Driver, image GuestImage) {
	t.Run("Capabilities", func(t *testing.T) { testCapabilities(t, newDriver(t)) })
	t.Run("StartInvalidSpec", func(t *testing.T) { testStartInvalidSpec(t, newDriver(t), image) })
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, newDriver(t), image) })
	if newDriver(t).Capabilities().Adopt {
		t.Run("Adopt", func(t *testing.T) { RunAdopt(t, newDriver, image) })
	}
	if newDriver(t).Capabilities().Templates {
		t.Run("Templates", func(t *testing.T) { RunTemplates(t, newDriver(t), image) })
	}
}

// RunAdopt checks hypervisor.Adopter: a VM started by one driver is
// adopted by another (newDriver is called for each, as a restarted daemon
// makes a new driver), its guest answers on the new channel with the
// state it had, a second adoption works as the first (of a VM paused at
// the time, when the driver can pause), Kill on the adopted VM ends it,
// and a VM that has ended is NotFound.
func RunAdopt(t *testing.T, newDriver func(t *testing.T) hypervisor.Driver, image GuestImage) {
	dir := t.TempDir()
	base := image.RootDisk(t, dir)
	base.ReadOnly = true
	first := newDriver(t)
	spec := baseSpec(t, image)
	ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
	defer cancel()
	overlay, err := first.CreateOverlay(ctx, base, filepath.Join(dir, "rw.img"), 0)
	if err != nil {
		t.Fatalf("CreateOverlay: %v", err)
	}
	spec.Disks = []hypervisor.Disk{overlay}
	vm, err := first.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		_ = vm.Kill()
		if !closedWithin(vm.Done(), KillTimeout) {
			t.Errorf("cleanup: VM %s not done %s after Kill", spec.Name, KillTimeout)
		}
		if t.Failed() {
			logRuntimeFiles(t, spec.RuntimeDir)
		}
	})
	g, err := agent.Dial(ctx, vm.Channel())
	if err != nil {
		t.Fatalf("guest handshake: %v", err)
	}
	if err := g.Setup(ctx, wire.Setup{Hostname: "adopted"}); err != nil {
		t.Fatalf("Setup: %v", err)
	}

	adopt := func(t *testing.T) (hypervisor.VM, *agent.Client) {
		t.Helper()
		a, ok := newDriver(t).(hypervisor.Adopter)
		if !ok {
			t.Fatal("Capabilities().Adopt is true but the driver is no hypervisor.Adopter")
		}
		ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
		defer cancel()
		// Only Name and RuntimeDir may matter.
		av, err := a.Adopt(ctx, hypervisor.Spec{Name: spec.Name, RuntimeDir: spec.RuntimeDir})
		if err != nil {
			t.Fatalf("Adopt: %v", err)
		}
		if av.Pid() != vm.Pid() {
			t.Errorf("adopted Pid() = %d, want the VMM's %d", av.Pid(), vm.Pid())
		}
		if av.Channel() == nil {
			t.Fatal("adopted Channel() is nil")
		}
		ag, err := agent.Dial(ctx, av.Channel())
		if err != nil {
			t.Fatalf("guest handshake on the adopted channel: %v", err)
		}
		// The same guest, with its state: a v2 agent lists its processes.
		if _, err := ag.Processes(ctx); err != nil {
			t.Errorf("Processes on the adopted channel: %v", err)
		}
		return av, ag
	}

	var av hypervisor.VM
	var ag *agent.Client
	t.Run("AdoptOnce", func(t *testing.T) {
		g.Close() // the first daemon goes away
		av, ag = adopt(t)
		select {
		case <-vm.Done():
			t.Errorf("the VM ended when its first channel closed: %v", vm.Status().Err)
		default:
		}
	})
	if ag == nil {
		t.FailNow()
	}
	// A VM paused when its channel closes is adopted too (returned
	// running): a frozen guest misses its channel's close, which the
	// driver must make up for.
	t.Run("AdoptTwicePaused", func(t *testing.T) {
		if p, ok := av.(hypervisor.Pauser); ok && first.Capabilities().Pause {
			ctx, cancel := context.WithTimeout(t.Context(), PowerOffTimeout)
			defer cancel()
			if err := p.Pause(ctx); err != nil {
				t.Fatalf("Pause: %v", err)
			}
		}
		ag.Close()
		av, ag = adopt(t)
	})
	t.Run("KillAdopted", func(t *testing.T) {
		pid := av.Pid()
		if err := av.Kill(); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		if !closedWithin(av.Done(), KillTimeout) {
			t.Fatalf("Done not closed %s after Kill", KillTimeout)
		}
		if err := av.Status().Err; err == nil {
			t.Error("Status().Err = nil after Kill, want why the VMM ended")
		}
		if err := av.Kill(); err != nil {
			t.Errorf("second Kill: %v, want nil", err)
		}
		waited := make(chan struct{})
		go func() { ag.Wait(); close(waited) }()
		if !closedWithin(waited, KillTimeout) {
			t.Errorf("adopted guest connection still open %s after Kill", KillTimeout)
		}
		// The first driver reaps its child; then the PID is gone.
		deadline := time.Now().Add(KillTimeout)
		for pid > 0 && syscall.Kill(pid, 0) != syscall.ESRCH {
			if time.Now().After(deadline) {
				t.Errorf("VMM pid %d still exists %s after Kill", pid, KillTimeout)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("AdoptEnded", func(t *testing.T) {
		a := newDriver(t).(hypervisor.Adopter)
		ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
		defer cancel()
		if v, err := a.Adopt(ctx, hypervisor.Spec{Name: spec.Name, RuntimeDir: spec.RuntimeDir}); !errdefs.IsNotFound(err) {
			if v != nil {
				_ = v.Kill()
			}
			t.Errorf("Adopt of an ended VM: %v, want NotFound", err)
		}
	})
}

func testCapabilities(t *testing.T, d hypervisor.Driver) {
	if c := d.Capabilities(); c.Accelerator == "" {
		t.Errorf("Capabilities().Accelerator is empty: %+v", c)
	}
}

// runtimeDir makes a short private directory (unix socket paths are
// limited to 107 bytes, so t.TempDir's long names will not do).
func runtimeDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// baseSpec is a valid spec for image in a fresh runtime directory, named
// after that directory so it is unique on this host.
func baseSpec(t *testing.T, image GuestImage) hypervisor.Spec {
	dir := runtimeDir(t)
	return hypervisor.Spec{
		Name: filepath.Base(dir), Kernel: image.Kernel, Initrd: image.Initrd, Cmdline: image.Cmdline,
		MemoryMiB: 256, CPUs: 1, ChannelName: image.ChannelName, RuntimeDir: dir,
	}
}

// vmmProcesses lists host processes whose command line mentions any of
// marks: a local VMM started for the spec would.
func vmmProcesses(marks ...string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		for _, m := range marks {
			if m != "" && strings.Contains(cmdline, m) {
				found = append(found, filepath.Base(filepath.Dir(p))+": "+cmdline)
				break
			}
		}
	}
	return found
}

func testStartInvalidSpec(t *testing.T, d hypervisor.Driver, image GuestImage) {
	cases := append(commonInvalidSpecs(),
		invalidSpec{"bad_disk_format", func(s *hypervisor.Spec) {
			s.Disks = []hypervisor.Disk{{Path: filepath.Join(s.RuntimeDir, "disk.vmdk"), Format: "vmdk"}}
		}, errdefs.IsInvalidArgument, "InvalidArgument"},
		invalidSpec{"missing_kernel", func(s *hypervisor.Spec) { s.Kernel = filepath.Join(s.RuntimeDir, "no-such-kernel") }, errdefs.IsUnavailable, "Unavailable"},
	)
	startInvalidSpecs(t, d, func(t *testing.T) hypervisor.Spec { return baseSpec(t, image) }, cases, nil)
}

// invalidSpec is one bad spec Start must refuse: mutate spoils a valid
// spec, is tells the error class wanted (named class).
type invalidSpec struct {
	name   string
	mutate func(*hypervisor.Spec)
	is     func(error) bool
	class  string
}

// commonInvalidSpecs are the bad specs every driver refuses the same way,
// whatever its disks and boot files are.
func commonInvalidSpecs() []invalidSpec {
	return []invalidSpec{
		{"no_name", func(s *hypervisor.Spec) { s.Name = "" }, errdefs.IsInvalidArgument, "InvalidArgument"},
		{"memory_too_small", func(s *hypervisor.Spec) { s.MemoryMiB = hypervisor.MinMemoryMiB - 1 }, errdefs.IsInvalidArgument, "InvalidArgument"},
		{"memory_too_big", func(s *hypervisor.Spec) { s.MemoryMiB = hypervisor.MaxMemoryMiB + 1 }, errdefs.IsInvalidArgument, "InvalidArgument"},
		{"no_cpus", func(s *hypervisor.Spec) { s.CPUs = 0 }, errdefs.IsInvalidArgument, "InvalidArgument"},
		{"too_many_cpus", func(s *hypervisor.Spec) { s.CPUs = hypervisor.MaxCPUs + 1 }, errdefs.IsInvalidArgument, "InvalidArgument"},
		{"no_channel", func(s *hypervisor.Spec) { s.ChannelName = "" }, errdefs.IsInvalidArgument, "InvalidArgument"},
	}
}

// startInvalidSpecs starts each case's spoiled spec (from valid) and
// wants its error class, and nothing of the spec left behind within
// KillTimeout: leftovers lists what is (nil: host processes whose command
// line mentions the spec's RuntimeDir or Name, as a local VMM's would).
func startInvalidSpecs(t *testing.T, d hypervisor.Driver, valid func(t *testing.T) hypervisor.Spec, cases []invalidSpec, leftovers func(t *testing.T, spec hypervisor.Spec) []string) {
	if leftovers == nil {
		leftovers = func(_ *testing.T, spec hypervisor.Spec) []string {
			return vmmProcesses(spec.RuntimeDir, spec.Name) // both unique to this spec; an empty mark matches nothing
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := valid(t)
			tc.mutate(&spec)
			ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
			defer cancel()
			vm, err := d.Start(ctx, spec)
			if err == nil {
				vm.Kill()
				<-vm.Done()
				t.Fatalf("Start accepted a bad spec %+v", spec)
			}
			if !tc.is(err) {
				t.Errorf("Start: %v; want %s", err, tc.class)
			}
			deadline := time.Now().Add(KillTimeout)
			for {
				left := leftovers(t, spec)
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("a refused Start left these behind: %q", left)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// started is one VM of the lifecycle test.
type started struct {
	spec   hypervisor.Spec
	vm     hypervisor.VM
	client *agent.Client
}

// closedWithin reports whether c is closed within d.
func closedWithin(c <-chan struct{}, d time.Duration) bool {
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

// logRuntimeFiles logs the tail of every log file a driver kept in dir.
func logRuntimeFiles(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("%s:\n%s", l, b)
	}
}

// testLifecycle boots two VMs, each on its own overlay over one base disk,
// then ends one by a guest power-off and the other by Kill.
func testLifecycle(t *testing.T, d hypervisor.Driver, image GuestImage) {
	dir := t.TempDir()
	base := image.RootDisk(t, dir)
	base.ReadOnly = true
	baseSum := testenv.FileSHA256(t, base.Path)

	vms := make([]*started, 2)
	for i := range vms {
		spec := baseSpec(t, image)
		ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
		overlay, err := d.CreateOverlay(ctx, base, filepath.Join(dir, fmt.Sprintf("rw%d.img", i)), 0)
		if err != nil {
			cancel()
			t.Fatalf("CreateOverlay: %v", err)
		}
		if overlay.ReadOnly || overlay.Path == "" || overlay.Format == "" {
			t.Errorf("CreateOverlay returned %+v, want a writable disk", overlay)
		}
		spec.Disks = []hypervisor.Disk{overlay}
		vm, err := d.Start(ctx, spec)
		cancel()
		if err != nil {
			t.Fatalf("Start %s: %v", spec.Name, err)
		}
		vms[i] = &started{spec: spec, vm: vm}
		t.Cleanup(func() {
			vm.Kill()
			if !closedWithin(vm.Done(), KillTimeout) {
				t.Errorf("cleanup: VM %s not done %s after Kill", spec.Name, KillTimeout)
			}
			if t.Failed() {
				logRuntimeFiles(t, spec.RuntimeDir)
			}
		})
	}
	a, b := vms[0], vms[1]

	t.Run("Running", func(t *testing.T) {
		for _, s := range vms {
			if s.vm.Pid() <= 0 {
				t.Errorf("%s: Pid() = %d while running, want > 0", s.spec.Name, s.vm.Pid())
			} else if err := syscall.Kill(s.vm.Pid(), 0); err != nil {
				t.Errorf("%s: VMM pid %d: %v", s.spec.Name, s.vm.Pid(), err)
			}
			if s.vm.Channel() == nil {
				t.Errorf("%s: Channel() is nil after Start", s.spec.Name)
			}
			select {
			case <-s.vm.Done():
				t.Errorf("%s: Done closed while running: %v", s.spec.Name, s.vm.Status().Err)
			default:
			}
		}
		if a.vm.Pid() == b.vm.Pid() {
			t.Errorf("two VMs share VMM pid %d", a.vm.Pid())
		}
	})

	// Both guests boot at once; a handshake on each channel shows each
	// reaches its own booted guest, whose root is its overlay (tether
	// mounts the root disk before it serves the channel).
	t.Run("Channels", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
		defer cancel()
		var wg sync.WaitGroup
		errs := make([]error, len(vms))
		for i, s := range vms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.client, errs[i] = agent.Dial(ctx, s.vm.Channel())
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: guest handshake: %v", vms[i].spec.Name, err)
			}
		}
	})
	if a.client == nil || b.client == nil {
		t.Fatal("guests did not answer; the rest needs them")
	}
	t.Run("TransferDisk", func(t *testing.T) { testTransferDisk(t, d, a, dir) })

	t.Run("PowerOff", func(t *testing.T) {
		before := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), PowerOffTimeout)
		defer cancel()
		if err := a.client.PowerOff(ctx); err != nil {
			t.Fatalf("guest PowerOff: %v", err)
		}
		if !closedWithin(a.vm.Done(), PowerOffTimeout) {
			t.Fatalf("Done not closed %s after the guest powered off", PowerOffTimeout)
		}
		st := a.vm.Status()
		if st.Err != nil {
			t.Errorf("Status().Err = %v after a guest power-off, want nil", st.Err)
		}
		if st.At.Before(before) || st.At.After(time.Now()) {
			t.Errorf("Status().At = %v, want between %v and now", st.At, before)
		}
		if err := a.vm.Kill(); err != nil {
			t.Errorf("Kill after the VM ended: %v, want nil", err)
		}
		waited := make(chan struct{})
		go func() { a.client.Wait(); close(waited) }()
		if !closedWithin(waited, KillTimeout) {
			t.Errorf("guest connection still open %s after the VM ended", KillTimeout)
		}
	})

	// The other VM did not notice: its channel still answers.
	t.Run("Independent", func(t *testing.T) {
		select {
		case <-b.vm.Done():
			t.Fatalf("%s ended with the other VM: %v", b.spec.Name, b.vm.Status().Err)
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), PowerOffTimeout)
		defer cancel()
		if err := b.client.Setup(ctx, wire.Setup{Hostname: "hvtest"}); err != nil {
			t.Errorf("request on the second VM's channel: %v", err)
		}
	})

	t.Run("Kill", func(t *testing.T) {
		pid := b.vm.Pid()
		if err := b.vm.Kill(); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		if !closedWithin(b.vm.Done(), KillTimeout) {
			t.Fatalf("Done not closed %s after Kill", KillTimeout)
		}
		if err := b.vm.Status().Err; err == nil {
			t.Error("Status().Err = nil after Kill, want why the VMM ended")
		} else {
			t.Logf("status after Kill: %v", err)
		}
		if err := b.vm.Kill(); err != nil {
			t.Errorf("second Kill: %v, want nil", err)
		}
		if pid > 0 {
			if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
				t.Errorf("VMM pid %d after Done: kill(0) = %v, want ESRCH (reaped)", pid, err)
			}
		}
		if left := vmmProcesses(b.spec.RuntimeDir); len(left) > 0 {
			t.Errorf("processes left after Kill: %q", left)
		}
	})

	t.Run("OverlayLeavesBase", func(t *testing.T) {
		if testenv.FileSHA256(t, base.Path) != baseSum {
			t.Errorf("base disk %s changed under its overlays", base.Path)
		}
	})
}

// testTransferDisk: a file the host makes the transfer disk's image
// reaches the guest (tether unpacks a tar from it into the root), the
// placeholder goes back, and an image larger than the disk is refused.
func testTransferDisk(t *testing.T, d hypervisor.Driver, s *started, dir string) {
	if !d.Capabilities().TransferDisk {
		t.Skip("the driver has no transfer disk")
	}
	tr, ok := s.vm.(hypervisor.Transferrer)
	if !ok {
		t.Fatal("Capabilities().TransferDisk is true but the VM is no hypervisor.Transferrer")
	}
	ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
	defer cancel()
	big := filepath.Join(dir, "too-big.img")
	if err := os.WriteFile(big, nil, 0o600); err != nil || os.Truncate(big, hypervisor.TransferDiskBytes+1) != nil {
		t.Fatal("cannot make the oversized image")
	}
	if err := tr.LoadTransfer(ctx, big); !errdefs.IsInvalidArgument(err) {
		t.Errorf("LoadTransfer of %d bytes: %v, want InvalidArgument", hypervisor.TransferDiskBytes+1, err)
	}
	if err := s.client.Setup(ctx, wire.Setup{Hostname: "transfer"}); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	content := bytes.Repeat([]byte("transfer disk\n"), 300000) // 4.2 MB
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	tw.WriteHeader(&tar.Header{Name: "transferred", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write(content)
	tw.Close()
	img := filepath.Join(dir, "transfer.tar")
	if err := os.WriteFile(img, archive.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tr.LoadTransfer(ctx, img); err != nil {
		t.Fatalf("LoadTransfer: %v", err)
	}
	up, err := s.client.PutArchiveDisk(ctx, wire.ArchivePutDisk{ArchivePut: wire.ArchivePut{Path: "/"}, Serial: hypervisor.TransferDiskSerial})
	if err != nil {
		t.Fatalf("PutArchiveDisk: %v", err)
	}
	if err := up.Mark(int64(archive.Len())); err != nil {
		t.Fatalf("Mark: %v", err)
	}
	if err := up.Finish(true); err != nil {
		t.Fatalf("unpack from the transfer disk: %v", err)
	}
	if err := tr.LoadTransfer(ctx, ""); err != nil {
		t.Errorf("LoadTransfer of the placeholder: %v", err)
	}
	rc, err := s.client.GetArchive(ctx, wire.ArchiveGet{Path: "/transferred"})
	if err != nil {
		t.Fatalf("GetArchive: %v", err)
	}
	defer rc.Close()
	tarR := tar.NewReader(rc)
	if _, err := tarR.Next(); err != nil {
		t.Fatalf("the file read back: %v", err)
	}
	if got, err := io.ReadAll(tarR); err != nil || !bytes.Equal(got, content) {
		t.Errorf("the file read back: %d bytes (%v), want the %d sent", len(got), err, len(content))
	}
}
