package hvtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
)

// RunTemplates checks hypervisor.Templater for a driver whose
// Capabilities report Templates, with tether as the guest: a template
// saved once restores two VMs side by side, each on its own overlay disk,
// each waking (agent.Wake) and then answering its own session; a
// spec of another shape is FailedPrecondition, as is an empty directory;
// a template whose state is damaged never yields a guest that answers.
// It boots one VM and restores three.
func RunTemplates(t *testing.T, d hypervisor.Driver, image GuestImage) {
	tp, ok := d.(hypervisor.Templater)
	if !ok {
		t.Fatal("Capabilities().Templates is set but the driver is no hypervisor.Templater")
	}
	dir := t.TempDir()
	base := image.RootDisk(t, dir)
	base.ReadOnly = true
	shape := baseSpec(t, image)
	shape.Cmdline = joinArgs(shape.Cmdline, wire.TemplateCmdline)
	shape.Disks = []hypervisor.Disk{{Path: base.Path, Format: base.Format, Serial: wire.RootSerial}}
	tdir := filepath.Join(dir, "template")
	if err := os.Mkdir(tdir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), BootTimeout)
	defer cancel()
	if err := tp.SaveTemplate(ctx, shape, tdir, agent.AwaitTemplate); err != nil {
		logRuntimeFiles(t, shape.RuntimeDir)
		t.Fatalf("SaveTemplate: %v", err)
	}
	if left := vmmProcesses(shape.RuntimeDir); len(left) > 0 {
		t.Errorf("SaveTemplate left its VMM running: %q", left)
	}

	restore := func(t *testing.T, i int, tdir string) (hypervisor.Spec, hypervisor.VM, error) {
		spec := baseSpec(t, image)
		spec.Cmdline = shape.Cmdline
		overlay, err := d.CreateOverlay(ctx, base, filepath.Join(dir, fmt.Sprintf("clone%d.img", i)), 0)
		if err != nil {
			t.Fatalf("CreateOverlay: %v", err)
		}
		overlay.Serial = wire.RootSerial
		spec.Disks = []hypervisor.Disk{overlay}
		vm, err := tp.Restore(ctx, spec, tdir)
		if err == nil {
			t.Cleanup(func() {
				vm.Kill()
				<-vm.Done()
				if t.Failed() {
					logRuntimeFiles(t, spec.RuntimeDir)
				}
			})
		}
		return spec, vm, err
	}

	t.Run("Clones", func(t *testing.T) {
		var clients []*agent.Client
		for i := range 2 {
			spec, vm, err := restore(t, i, tdir)
			if err != nil {
				t.Fatalf("Restore %d: %v", i, err)
			}
			if err := agent.Wake(ctx, vm.Channel(), nil); err != nil {
				t.Fatalf("Wake %s: %v", spec.Name, err)
			}
			c, err := agent.Dial(ctx, vm.Channel())
			if err != nil {
				t.Fatalf("handshake with restored %s: %v", spec.Name, err)
			}
			defer c.Close()
			clients = append(clients, c)
		}
		for i, c := range clients {
			if err := c.Setup(ctx, wire.Setup{Hostname: fmt.Sprintf("clone%d", i)}); err != nil {
				t.Errorf("clone %d: setup: %v", i, err)
			}
		}
	})

	t.Run("OtherShape", func(t *testing.T) {
		spec := baseSpec(t, image)
		spec.Cmdline = shape.Cmdline
		spec.MemoryMiB = shape.MemoryMiB * 2
		spec.Disks = shape.Disks
		if vm, err := tp.Restore(ctx, spec, tdir); !errdefs.IsFailedPrecondition(err) {
			if err == nil {
				vm.Kill()
			}
			t.Errorf("Restore of a %d MiB spec from a %d MiB template: %v, want FailedPrecondition", spec.MemoryMiB, shape.MemoryMiB, err)
		}
		if vm, err := tp.Restore(ctx, spec, t.TempDir()); !errdefs.IsFailedPrecondition(err) {
			if err == nil {
				vm.Kill()
			}
			t.Errorf("Restore from an empty directory: %v, want FailedPrecondition", err)
		}
	})

	t.Run("DamagedState", func(t *testing.T) {
		bad := filepath.Join(dir, "damaged")
		if err := os.CopyFS(bad, os.DirFS(tdir)); err != nil {
			t.Fatal(err)
		}
		states, _ := filepath.Glob(filepath.Join(bad, "*"))
		for _, f := range states {
			if st, err := os.Stat(f); err == nil && !st.IsDir() && st.Size() > 4096 && st.Size() < 16<<20 {
				if err := os.WriteFile(f, []byte("not a saved VM\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		wctx, wcancel := context.WithTimeout(ctx, 2*PowerOffTimeout)
		defer wcancel()
		_, vm, err := restore(t, 9, bad)
		if err != nil {
			t.Logf("Restore of a damaged template: %v", err)
			return
		}
		if err := agent.Wake(wctx, vm.Channel(), nil); err == nil {
			t.Fatal("a VM restored from a damaged state answered its wake")
		} else if !errdefs.IsUnavailable(err) {
			t.Errorf("Wake of a damaged restore: %v, want Unavailable", err)
		}
	})
}

// joinArgs appends kernel arguments.
func joinArgs(a, b string) string {
	if a == "" {
		return b
	}
	return a + " " + b
}
