package compute_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/hvfake"
	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/compute"
)

// testImage is the image every test container uses unless it names another.
var testImage = "sha256:" + strings.Repeat("1", 64)

// fakeRootfs is a portlayer.RootfsStore: every image exists (an empty file
// under dir) unless marked missing. It records every call. Safe for
// concurrent use.
type fakeRootfs struct {
	dir     string
	mu      sync.Mutex
	calls   []string
	missing map[string]bool
}

func newFakeRootfs(t *testing.T) *fakeRootfs {
	return &fakeRootfs{dir: t.TempDir(), missing: map[string]bool{}}
}

// Rootfs implements portlayer.RootfsStore.
func (f *fakeRootfs) Rootfs(ctx context.Context, imageID string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, imageID)
	if f.missing[imageID] {
		return "", fmt.Errorf("fake rootfs: no such image: %s: %w", imageID, errdefs.ErrNotFound)
	}
	path := filepath.Join(f.dir, strings.TrimPrefix(imageID, "sha256:")+".raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return "", err
	}
	return path, nil
}

func (f *fakeRootfs) setMissing(imageID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.missing[imageID] = true
}

func (f *fakeRootfs) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// syncBuffer is an io.Writer safe for concurrent use: it collects the
// service's log (shown when a test fails) and attached output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is one compute.Service over a fake driver and rootfs store.
type harness struct {
	t      *testing.T
	cfg    compute.Config
	drv    *hvfake.Driver
	rootfs *fakeRootfs
	svc    *compute.Service
	log    *syncBuffer
}

func newHarness(t *testing.T, mods ...func(*compute.Config)) *harness {
	t.Helper()
	cfg := compute.Config{
		Root:        t.TempDir(),
		Kernel:      "/boot/vmlinuz-test",
		Initrd:      "/boot/initrd-test",
		ChannelName: wire.PortName,
		BootTimeout: 10 * time.Second,
	}
	for _, m := range mods {
		m(&cfg)
	}
	h := &harness{t: t, cfg: cfg, drv: hvfake.New(), rootfs: newFakeRootfs(t), log: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("compute log:\n%s", h.log)
		}
	})
	h.svc = h.open(cfg)
	return h
}

// open starts a Service on cfg; it is shut down (running containers
// killed first, so no test waits for a stop timeout) when the test ends.
func (h *harness) open(cfg compute.Config) *compute.Service {
	h.t.Helper()
	logger := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := compute.New(cfg, h.drv, h.rootfs, logger)
	if err != nil {
		h.t.Fatalf("compute.New: %v", err)
	}
	h.t.Cleanup(func() {
		ctx := context.Background()
		// Close leaves container VMs running: end them first.
		if cs, err := svc.List(ctx); err == nil {
			for _, c := range cs {
				if svc.Kill(ctx, c.ID, 9) == nil {
					if ch, err := svc.Wait(ctx, c.ID, portlayer.WaitNotRunning); err == nil {
						select {
						case <-ch:
						case <-time.After(10 * time.Second):
						}
					}
				}
			}
		}
		if err := svc.Close(ctx); err != nil {
			h.t.Errorf("Close: %v", err)
		}
	})
	return svc
}

func (h *harness) create(spec portlayer.ContainerSpec) portlayer.Container {
	h.t.Helper()
	if spec.Image == "" {
		spec.Image = testImage
	}
	c, err := h.svc.Create(h.t.Context(), spec)
	if err != nil {
		h.t.Fatalf("Create(%+v): %v", spec, err)
	}
	return c
}

func (h *harness) start(id string) {
	h.t.Helper()
	if err := h.svc.Start(h.t.Context(), id); err != nil {
		h.t.Fatalf("Start(%s): %v", id, err)
	}
}

func (h *harness) inspect(id string) portlayer.Container {
	h.t.Helper()
	c, err := h.svc.Inspect(h.t.Context(), id)
	if err != nil {
		h.t.Fatalf("Inspect(%s): %v", id, err)
	}
	return c
}

// wait registers a waiter for cond.
func (h *harness) wait(id string, cond portlayer.WaitCondition) <-chan portlayer.WaitResult {
	h.t.Helper()
	ch, err := h.svc.Wait(h.t.Context(), id, cond)
	if err != nil {
		h.t.Fatalf("Wait(%s, %s): %v", id, cond, err)
	}
	return ch
}

// waitExit waits until the container is not running and returns its code.
func (h *harness) waitExit(id string) int {
	h.t.Helper()
	return recv(h.t, h.wait(id, portlayer.WaitNotRunning), "exit of "+id).ExitCode
}

// run creates and starts a container, waits for its exit and returns its
// record.
func (h *harness) run(spec portlayer.ContainerSpec) portlayer.Container {
	h.t.Helper()
	c := h.create(spec)
	h.start(c.ID)
	h.waitExit(c.ID)
	return h.inspect(c.ID)
}

// vm returns the latest VM started for the container.
func (h *harness) vm(id string) *hvfake.VM {
	h.t.Helper()
	vms := h.drv.VMs()
	for i := len(vms) - 1; i >= 0; i-- {
		if vms[i].Spec().Name == id[:12] {
			return vms[i]
		}
	}
	h.t.Fatalf("no VM for %s", id)
	return nil
}

func (h *harness) logs(id string, opts portlayer.LogOptions) []portlayer.LogMessage {
	h.t.Helper()
	ch, err := h.svc.Logs(h.t.Context(), id, opts)
	if err != nil {
		h.t.Fatalf("Logs(%s): %v", id, err)
	}
	var out []portlayer.LogMessage
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, m)
		case <-timeout:
			h.t.Fatalf("Logs(%s): channel not closed after 10 s", id)
		}
	}
}

// vmsEnd waits until every VM the driver started has ended (the exit is
// recorded before the VM powers off, so this may lag an exit).
func (h *harness) vmsEnd() {
	h.t.Helper()
	timeout := time.After(10 * time.Second)
	for _, vm := range h.drv.VMs() {
		select {
		case <-vm.Done():
		case <-timeout:
			h.t.Fatalf("VM %s still runs after 10 s", vm.Spec().Name)
		}
	}
}

// recv receives one value or fails the test after 10 s.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// notYet fails if ch delivers within d.
func notYet[T any](t *testing.T, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: got %+v too early", what, v)
	case <-time.After(d):
	}
}

func texts(msgs []portlayer.LogMessage) []string {
	out := []string{}
	for _, m := range msgs {
		out = append(out, m.Stream+":"+string(m.Data))
	}
	return out
}

func args(s ...string) []string { return s }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestNewConfig(t *testing.T) {
	valid := compute.Config{Root: t.TempDir(), Kernel: "k", Initrd: "i", ChannelName: "c"}
	tests := []struct {
		name string
		mod  func(*compute.Config)
	}{
		{name: "no root", mod: func(c *compute.Config) { c.Root = "" }},
		{name: "no kernel", mod: func(c *compute.Config) { c.Kernel = "" }},
		{name: "no initrd", mod: func(c *compute.Config) { c.Initrd = "" }},
		{name: "no channel", mod: func(c *compute.Config) { c.ChannelName = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.mod(&cfg)
			_, err := compute.New(cfg, hvfake.New(), newFakeRootfs(t), slog.New(slog.DiscardHandler))
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("New = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestCreate(t *testing.T) {
	tests := []struct {
		name    string
		spec    portlayer.ContainerSpec
		arrange func(h *harness)
		check   func(t *testing.T, h *harness, c portlayer.Container)
		wantErr func(error) bool
	}{
		{
			name: "generated name",
			spec: portlayer.ContainerSpec{Args: args("echo")},
			check: func(t *testing.T, h *harness, c portlayer.Container) {
				if c.Spec.Name == "" || strings.HasPrefix(c.Spec.Name, "/") {
					t.Errorf("generated name %q", c.Spec.Name)
				}
				if h.inspect(c.Spec.Name).ID != c.ID {
					t.Error("generated name does not resolve")
				}
			},
		},
		{
			name: "explicit name and record",
			spec: portlayer.ContainerSpec{Name: "web", Args: args("echo"), Annotations: map[string][]byte{"docker.config": []byte(`{}`)}},
			check: func(t *testing.T, h *harness, c portlayer.Container) {
				if len(c.ID) != 64 || strings.Trim(c.ID, "0123456789abcdef") != "" {
					t.Errorf("ID %q is not 64 lowercase hex digits", c.ID)
				}
				if c.Spec.Name != "web" || c.Spec.Hostname != c.ID[:12] {
					t.Errorf("name %q hostname %q", c.Spec.Name, c.Spec.Hostname)
				}
				if c.State.Status != portlayer.StatusCreated || c.Created.IsZero() {
					t.Errorf("state %+v created %v", c.State, c.Created)
				}
				if want := filepath.Join(h.cfg.Root, "containers", c.ID, "json.log"); c.LogPath != want {
					t.Errorf("LogPath %q, want %q", c.LogPath, want)
				}
				if string(c.Spec.Annotations["docker.config"]) != `{}` {
					t.Errorf("annotations lost: %v", c.Spec.Annotations)
				}
				ov := h.drv.Overlays()
				wantBase := hypervisor.Disk{Path: filepath.Join(h.rootfs.dir, strings.Repeat("1", 64)+".raw"), Format: "raw", ReadOnly: true}
				if len(ov) != 1 || ov[0].Base != wantBase || ov[0].Path != filepath.Join(h.cfg.Root, "containers", c.ID, "rw.qcow2") {
					t.Errorf("overlays %+v, want one over %+v", ov, wantBase)
				}
				if got := h.rootfs.Calls(); len(got) != 1 || got[0] != testImage {
					t.Errorf("rootfs calls %v", got)
				}
				if len(h.drv.Specs()) != 0 {
					t.Error("Create started a VM")
				}
			},
		},
		{
			name: "leading slash is dropped",
			spec: portlayer.ContainerSpec{Name: "/web", Args: args("echo")},
			check: func(t *testing.T, h *harness, c portlayer.Container) {
				if c.Spec.Name != "web" {
					t.Errorf("name %q", c.Spec.Name)
				}
			},
		},
		{
			name:    "name conflict",
			spec:    portlayer.ContainerSpec{Name: "web", Args: args("echo")},
			arrange: func(h *harness) { h.create(portlayer.ContainerSpec{Name: "web", Args: args("echo")}) },
			wantErr: errdefs.IsAlreadyExists,
		},
		{name: "one-character name", spec: portlayer.ContainerSpec{Name: "a", Args: args("echo")}, wantErr: errdefs.IsInvalidArgument},
		{name: "name with space", spec: portlayer.ContainerSpec{Name: "a b", Args: args("echo")}, wantErr: errdefs.IsInvalidArgument},
		{name: "name with slash inside", spec: portlayer.ContainerSpec{Name: "a/b", Args: args("echo")}, wantErr: errdefs.IsInvalidArgument},
		{name: "name starting with dash", spec: portlayer.ContainerSpec{Name: "-ab", Args: args("echo")}, wantErr: errdefs.IsInvalidArgument},
		{name: "no args", spec: portlayer.ContainerSpec{Name: "x1"}, wantErr: errdefs.IsInvalidArgument},
		{name: "memory below minimum", spec: portlayer.ContainerSpec{Args: args("echo"), MemoryMiB: hypervisor.MinMemoryMiB - 1}, wantErr: errdefs.IsInvalidArgument},
		{name: "memory at minimum", spec: portlayer.ContainerSpec{Args: args("echo"), MemoryMiB: hypervisor.MinMemoryMiB}},
		{name: "memory at maximum", spec: portlayer.ContainerSpec{Args: args("echo"), MemoryMiB: hypervisor.MaxMemoryMiB}},
		{name: "memory above maximum", spec: portlayer.ContainerSpec{Args: args("echo"), MemoryMiB: hypervisor.MaxMemoryMiB + 1}, wantErr: errdefs.IsInvalidArgument},
		{name: "negative memory", spec: portlayer.ContainerSpec{Args: args("echo"), MemoryMiB: -1}, wantErr: errdefs.IsInvalidArgument},
		{name: "negative CPUs", spec: portlayer.ContainerSpec{Args: args("echo"), CPUs: -1}, wantErr: errdefs.IsInvalidArgument},
		{name: "CPUs at maximum", spec: portlayer.ContainerSpec{Args: args("echo"), CPUs: hypervisor.MaxCPUs}},
		{name: "CPUs above maximum", spec: portlayer.ContainerSpec{Args: args("echo"), CPUs: hypervisor.MaxCPUs + 1}, wantErr: errdefs.IsInvalidArgument},
		{
			name:    "image missing",
			spec:    portlayer.ContainerSpec{Name: "web", Args: args("echo"), Image: "sha256:" + strings.Repeat("9", 64)},
			arrange: func(h *harness) { h.rootfs.setMissing("sha256:" + strings.Repeat("9", 64)) },
			wantErr: errdefs.IsNotFound,
		},
		{
			name:    "writable disk fails",
			spec:    portlayer.ContainerSpec{Name: "web", Args: args("echo")},
			arrange: func(h *harness) { h.drv.FailOverlay(errors.New("disk full")) },
			wantErr: func(err error) bool { return strings.Contains(err.Error(), "disk full") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.arrange != nil {
				tt.arrange(h)
			}
			before, _ := h.svc.List(t.Context())
			spec := tt.spec
			if spec.Image == "" {
				spec.Image = testImage
			}
			c, err := h.svc.Create(t.Context(), spec)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("Create = %v, want a matching error", err)
				}
				after, _ := h.svc.List(t.Context())
				if len(after) != len(before) {
					t.Errorf("failed Create left a record: %d containers, had %d", len(after), len(before))
				}
				dirs, _ := os.ReadDir(filepath.Join(h.cfg.Root, "containers"))
				if len(dirs) != len(before) {
					t.Errorf("failed Create left %d container dirs, want %d", len(dirs), len(before))
				}
				if spec.Name != "" && !errdefs.IsAlreadyExists(err) {
					// The name must be free again.
					h.rootfs.mu.Lock()
					h.rootfs.missing = map[string]bool{}
					h.rootfs.mu.Unlock()
					h.create(portlayer.ContainerSpec{Name: "web", Args: args("echo")})
				}
				return
			}
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if !exists(filepath.Join(h.cfg.Root, "containers", c.ID, "rw.qcow2")) {
				t.Error("no writable disk")
			}
			if tt.check != nil {
				tt.check(t, h, c)
			}
		})
	}
}

func TestCreateNameConflictError(t *testing.T) {
	h := newHarness(t)
	first := h.create(portlayer.ContainerSpec{Name: "web", Args: args("echo")})
	_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Name: "/web", Image: testImage, Args: args("echo")})
	if pe := portlayer.AsError(err); pe == nil || pe.Reason != portlayer.ReasonNameInUse || pe.ID != first.ID || pe.Name != "web" || !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Create = %v, want a name_in_use error naming web and %s", err, first.ID)
	}
}

func TestCreateConcurrentSameName(t *testing.T) {
	h := newHarness(t)
	const n = 8
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := h.svc.Create(t.Context(), portlayer.ContainerSpec{Name: "same", Image: testImage, Args: args("echo")})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	var ok, conflict int
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errdefs.IsAlreadyExists(err):
			conflict++
		default:
			t.Errorf("Create: %v", err)
		}
	}
	if ok != 1 || conflict != n-1 {
		t.Errorf("%d created, %d conflicts; want 1 and %d", ok, conflict, n-1)
	}
}

func TestLookup(t *testing.T) {
	h := newHarness(t)
	alpha := h.create(portlayer.ContainerSpec{Name: "alpha", Args: args("echo")})
	// Create until two IDs share their first hex digit (at most 17).
	byFirst := map[byte]string{alpha.ID[0]: alpha.ID}
	ambiguous := ""
	for ambiguous == "" {
		c := h.create(portlayer.ContainerSpec{Args: args("echo")})
		if _, ok := byFirst[c.ID[0]]; ok {
			ambiguous = c.ID[:1]
		}
		byFirst[c.ID[0]] = c.ID
	}
	// A name that looks like another container's ID prefix resolves as a
	// name first, as Docker does.
	other := byFirst[ambiguous[0]]
	named := h.create(portlayer.ContainerSpec{Name: other[:6], Args: args("echo")})

	tests := []struct {
		name    string
		ref     string
		wantID  string
		wantErr func(error) bool
	}{
		{name: "full ID", ref: alpha.ID, wantID: alpha.ID},
		{name: "unique prefix", ref: alpha.ID[:12], wantID: alpha.ID},
		{name: "name", ref: "alpha", wantID: alpha.ID},
		{name: "name with slash", ref: "/alpha", wantID: alpha.ID},
		{name: "name before prefix", ref: other[:6], wantID: named.ID},
		{name: "ambiguous prefix", ref: ambiguous, wantErr: errdefs.IsInvalidArgument},
		{name: "missing name", ref: "nosuch", wantErr: errdefs.IsNotFound},
		{name: "missing ID", ref: strings.Repeat("g", 64), wantErr: errdefs.IsNotFound},
		{name: "empty", ref: "", wantErr: errdefs.IsNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := h.svc.Inspect(t.Context(), tt.ref)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("Inspect(%q) = %v, want a matching error", tt.ref, err)
				}
				return
			}
			if err != nil || c.ID != tt.wantID {
				t.Fatalf("Inspect(%q) = %s, %v; want %s", tt.ref, c.ID, err, tt.wantID)
			}
		})
	}
}

func TestMissingContainer(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	ops := map[string]func() error{
		"Start":  func() error { return h.svc.Start(ctx, "nosuch") },
		"Stop":   func() error { return h.svc.Stop(ctx, "nosuch", nil) },
		"Kill":   func() error { return h.svc.Kill(ctx, "nosuch", 9) },
		"Remove": func() error { return h.svc.Remove(ctx, "nosuch", true) },
		"Rename": func() error { return h.svc.Rename(ctx, "nosuch", "other") },
		"Wait":   func() error { _, err := h.svc.Wait(ctx, "nosuch", portlayer.WaitNotRunning); return err },
		"Logs":   func() error { _, err := h.svc.Logs(ctx, "nosuch", portlayer.LogOptions{}); return err },
		"Attach": func() error {
			_, err := h.svc.Attach(ctx, "nosuch", portlayer.AttachOptions{Stream: true})
			return err
		},
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			if err := op(); !errdefs.IsNotFound(err) {
				t.Fatalf("%s = %v, want NotFound", name, err)
			}
		})
	}
}

func TestList(t *testing.T) {
	h := newHarness(t)
	if cs, err := h.svc.List(t.Context()); err != nil || len(cs) != 0 {
		t.Fatalf("List = %v, %v; want empty", cs, err)
	}
	var ids []string
	for range 3 {
		ids = append(ids, h.create(portlayer.ContainerSpec{Args: args("echo")}).ID)
		time.Sleep(time.Millisecond) // distinct Created times
	}
	cs, err := h.svc.List(t.Context())
	if err != nil || len(cs) != 3 {
		t.Fatalf("List = %d, %v", len(cs), err)
	}
	for i, c := range cs {
		if c.ID != ids[len(ids)-1-i] {
			t.Errorf("List[%d] = %s, want %s (newest first)", i, c.ID, ids[len(ids)-1-i])
		}
	}
}

func TestRename(t *testing.T) {
	tests := []struct {
		name    string
		newName string
		wantErr func(error) bool
		want    string
	}{
		{name: "plain", newName: "renamed", want: "renamed"},
		{name: "leading slash", newName: "/renamed", want: "renamed"},
		{name: "same name", newName: "old", want: "old"},
		{name: "taken", newName: "other", wantErr: errdefs.IsAlreadyExists},
		{name: "invalid", newName: "x y", wantErr: errdefs.IsInvalidArgument},
		{name: "empty", newName: "", wantErr: errdefs.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.create(portlayer.ContainerSpec{Name: "old", Args: args("echo")})
			other := h.create(portlayer.ContainerSpec{Name: "other", Args: args("echo")})
			err := h.svc.Rename(t.Context(), "old", tt.newName)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("Rename = %v, want a matching error", err)
				}
				if pe := portlayer.AsError(err); errdefs.IsAlreadyExists(err) && (pe == nil || pe.Reason != portlayer.ReasonNameInUse || pe.ID != other.ID) {
					t.Errorf("Rename = %v, want a name_in_use error naming %s", err, other.ID)
				}
				if h.inspect("old").ID != c.ID {
					t.Error("failed rename changed the name")
				}
				return
			}
			if err != nil {
				t.Fatalf("Rename: %v", err)
			}
			if h.inspect(tt.want).ID != c.ID {
				t.Errorf("%q does not resolve to the container", tt.want)
			}
			if tt.want != "old" {
				if _, err := h.svc.Inspect(t.Context(), "old"); !errdefs.IsNotFound(err) {
					t.Errorf("old name still resolves: %v", err)
				}
				// The old name is free again.
				h.create(portlayer.ContainerSpec{Name: "old", Args: args("echo")})
			}
			// The new name is persisted.
			if err := h.svc.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			svc := h.open(h.cfg)
			if got, err := svc.Inspect(t.Context(), c.ID); err != nil || got.Spec.Name != tt.want {
				t.Errorf("after reload: name %q, %v; want %q", got.Spec.Name, err, tt.want)
			}
		})
	}
}

func TestImageInUse(t *testing.T) {
	h := newHarness(t)
	other := "sha256:" + strings.Repeat("2", 64)
	c := h.create(portlayer.ContainerSpec{Args: args("echo")})
	if id, ok := h.svc.ImageInUse(testImage); !ok || id != c.ID {
		t.Errorf("ImageInUse(used) = %s, %v; want %s, true", id, ok, c.ID)
	}
	if id, ok := h.svc.ImageInUse(other); ok {
		t.Errorf("ImageInUse(unused) = %s, true", id)
	}
	h.run(portlayer.ContainerSpec{Image: other, Args: args("exit", "1")})
	if _, ok := h.svc.ImageInUse(other); !ok {
		t.Error("an exited container does not count as using its image")
	}
	if err := h.svc.Remove(t.Context(), c.ID, false); err != nil {
		t.Fatal(err)
	}
	if id, ok := h.svc.ImageInUse(testImage); ok {
		t.Errorf("ImageInUse after Remove = %s, true", id)
	}
}

// TestPersistence closes the service and opens a new one on the same root:
// every record comes back as it was.
func TestPersistence(t *testing.T) {
	h := newHarness(t)
	created := h.create(portlayer.ContainerSpec{Name: "created", Args: args("echo"), Env: []string{"A=1"}})
	exited := h.run(portlayer.ContainerSpec{Name: "exited", Args: args("echo", "kept", ";", "exit", "3")})
	failed := h.create(portlayer.ContainerSpec{Name: "failed", Args: args("nosuch")})
	if err := h.svc.Start(t.Context(), failed.ID); err == nil {
		t.Fatal("Start of a missing command succeeded")
	}
	failed = h.inspect(failed.ID)
	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	svc := h.open(h.cfg)
	for _, want := range []portlayer.Container{created, exited, failed} {
		got, err := svc.Inspect(t.Context(), want.Spec.Name)
		if err != nil {
			t.Fatalf("%s after reload: %v", want.Spec.Name, err)
		}
		if got.ID != want.ID || got.State.Status != want.State.Status || got.State.ExitCode != want.State.ExitCode ||
			got.State.Error != want.State.Error || !got.Created.Equal(want.Created) || got.LogPath != want.LogPath ||
			strings.Join(got.Spec.Env, ",") != strings.Join(want.Spec.Env, ",") {
			t.Errorf("%s after reload:\n got %+v\nwant %+v", want.Spec.Name, got, want)
		}
	}
	ch, err := svc.Logs(t.Context(), "exited", portlayer.LogOptions{Stdout: true, Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch, "log message"); string(m.Data) != "kept\n" {
		t.Errorf("log after reload: %q", m.Data)
	}
	// A reloaded container runs again.
	if err := svc.Start(t.Context(), "exited"); err != nil {
		t.Fatalf("Start after reload: %v", err)
	}
	if r := recv(t, mustWait(t, svc, "exited", portlayer.WaitNotRunning), "exit"); r.ExitCode != 3 {
		t.Errorf("exit code %d after reload, want 3", r.ExitCode)
	}
}

// TestReloadRunning simulates a daemon crash: a copy of the records taken
// while a container runs is opened by a new service, which must report the
// container exited with 137 (nothing re-adopts its VM yet).
func mustWait(t *testing.T, svc *compute.Service, id string, cond portlayer.WaitCondition) <-chan portlayer.WaitResult {
	t.Helper()
	ch, err := svc.Wait(t.Context(), id, cond)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return ch
}

func TestStartAfterClose(t *testing.T) {
	h := newHarness(t)
	c := h.create(portlayer.ContainerSpec{Args: args("sleep")})
	if err := h.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := h.svc.Start(t.Context(), c.ID)
	running := len(h.drv.Running())
	for _, vm := range h.drv.Running() {
		_ = vm.Kill()
	}
	if err == nil || running != 0 {
		t.Fatalf("Start after Close = %v with %d VMs running: want Unavailable and no VM", err, running)
	}
	if !errdefs.IsUnavailable(err) {
		t.Errorf("Start after Close = %v, want Unavailable", err)
	}
}

// fieldReason is "Field/Reason/Value" of err's *portlayer.Error, "" for
// an untyped error.
func fieldReason(err error) string {
	pe := portlayer.AsError(err)
	if pe == nil {
		return ""
	}
	return pe.Field + "/" + pe.Reason + "/" + pe.Value
}
