package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/testenv"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// bootFiles writes a dummy kernel and initrd to dir (validate only stats them).
func bootFiles(t *testing.T, dir string) (kernel, initrd string) {
	t.Helper()
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, []byte("dummy"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return kernel, initrd
}

// classOf names the errdefs class of err, for messages.
func classOf(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errdefs.IsInvalidArgument(err):
		return "InvalidArgument"
	case errdefs.IsUnavailable(err):
		return "Unavailable"
	default:
		return "unclassified"
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := bootFiles(t, dir)
	good := hypervisor.Spec{
		Name: "v1", Kernel: kernel, Initrd: initrd, MemoryMiB: 256, CPUs: 1,
		ChannelName: "org.vch.tether.0", RuntimeDir: dir,
		Disks: []hypervisor.Disk{{Path: "/img.raw", Format: "raw", ReadOnly: true}, {Path: "/rw.qcow2", Format: "qcow2"}},
	}
	for _, tc := range []struct {
		name   string
		mutate func(*hypervisor.Spec)
		class  string   // "nil", "InvalidArgument" or "Unavailable"
		msg    []string // substrings the message must have
	}{
		{"valid", func(*hypervisor.Spec) {}, "nil", nil},
		{"min_memory", func(s *hypervisor.Spec) { s.MemoryMiB = hypervisor.MinMemoryMiB }, "nil", nil},
		{"max_memory_cpus", func(s *hypervisor.Spec) { s.MemoryMiB, s.CPUs = hypervisor.MaxMemoryMiB, hypervisor.MaxCPUs }, "nil", nil},
		{"no_disks", func(s *hypervisor.Spec) { s.Disks = nil }, "nil", nil},
		{"no_name", func(s *hypervisor.Spec) { s.Name = "" }, "InvalidArgument", []string{"name"}},
		{"name_with_comma", func(s *hypervisor.Spec) { s.Name = "web,1" }, "InvalidArgument", []string{`"web,1"`}},
		{"name_with_equals", func(s *hypervisor.Spec) { s.Name = "a=b" }, "InvalidArgument", []string{`"a=b"`}},
		{"zero_memory", func(s *hypervisor.Spec) { s.MemoryMiB = 0 }, "InvalidArgument", []string{"memory 0 MiB", "64..65536"}},
		{"memory_too_small", func(s *hypervisor.Spec) { s.MemoryMiB = hypervisor.MinMemoryMiB - 1 }, "InvalidArgument", []string{"memory 63 MiB"}},
		{"memory_too_big", func(s *hypervisor.Spec) { s.MemoryMiB = hypervisor.MaxMemoryMiB + 1 }, "InvalidArgument", []string{"memory 65537 MiB"}},
		{"zero_cpus", func(s *hypervisor.Spec) { s.CPUs = 0 }, "InvalidArgument", []string{"0 vCPUs", "1..64"}},
		{"too_many_cpus", func(s *hypervisor.Spec) { s.CPUs = hypervisor.MaxCPUs + 1 }, "InvalidArgument", []string{"65 vCPUs"}},
		{"no_channel", func(s *hypervisor.Spec) { s.ChannelName = "" }, "InvalidArgument", []string{"channel name"}},
		{"bad_disk_format", func(s *hypervisor.Spec) { s.Disks[1].Format = "vmdk" }, "InvalidArgument", []string{"/rw.qcow2", `"vmdk"`}},
		{"empty_disk_format", func(s *hypervisor.Spec) { s.Disks[0].Format = "" }, "InvalidArgument", []string{"/img.raw", `format ""`}},
		{"disk_serial", func(s *hypervisor.Spec) { s.Disks[1].Serial = "vch-vol_19-abcdefghi" }, "nil", nil},
		{"disk_serial_too_long", func(s *hypervisor.Spec) { s.Disks[1].Serial = "vch-vol-0123456789abc" }, "InvalidArgument", []string{"/rw.qcow2", "serial", "at most 20"}},
		{"disk_serial_comma", func(s *hypervisor.Spec) { s.Disks[1].Serial = "a,b" }, "InvalidArgument", []string{`serial "a,b"`}},
		{"share", func(s *hypervisor.Spec) { s.Shares = []hypervisor.Share{{Tag: "vch-share-0", Path: dir}} }, "nil", nil},
		{"share_no_tag", func(s *hypervisor.Spec) { s.Shares = []hypervisor.Share{{Path: dir}} }, "InvalidArgument", []string{"tag"}},
		{"share_same_tag", func(s *hypervisor.Spec) { s.Shares = []hypervisor.Share{{Tag: "t", Path: dir}, {Tag: "t", Path: dir}} }, "InvalidArgument", []string{"unique"}},
		{"share_relative", func(s *hypervisor.Spec) { s.Shares = []hypervisor.Share{{Tag: "t", Path: "rel"}} }, "InvalidArgument", []string{"absolute"}},
		{"share_missing", func(s *hypervisor.Spec) {
			s.Shares = []hypervisor.Share{{Tag: "t", Path: filepath.Join(dir, "nosuch")}}
		}, "InvalidArgument", []string{"not a directory"}},
		{"missing_kernel", func(s *hypervisor.Spec) { s.Kernel = filepath.Join(dir, "nokernel") }, "Unavailable", []string{"nokernel", "no such file"}},
		{"missing_initrd", func(s *hypervisor.Spec) { s.Initrd = filepath.Join(dir, "noinitrd") }, "Unavailable", []string{"noinitrd", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := good
			spec.Disks = append([]hypervisor.Disk(nil), good.Disks...)
			tc.mutate(&spec)
			err := validate(spec)
			if got := classOf(err); got != tc.class {
				t.Fatalf("validate: %v (%s), want %s", err, got, tc.class)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
		})
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		class string
		msg   []string
	}{
		{"unknown_accel", Config{Accel: "hvf"}, "InvalidArgument", []string{`"hvf"`, "auto, kvm or tcg"}},
		{"missing_binary", Config{Binary: "/nonexistent/qemu"}, "Unavailable", []string{"/nonexistent/qemu", "qemu-system-x86"}},
		{"missing_img_binary", Config{ImgBinary: "/nonexistent/qemu-img"}, "Unavailable", []string{"/nonexistent/qemu-img", "qemu-utils"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(tc.cfg, discard())
			if got := classOf(err); got != tc.class {
				t.Fatalf("New: %v (%s), want %s", err, got, tc.class)
			}
			if d != nil {
				t.Errorf("New returned a driver with an error")
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	testenv.RequireBinary(t, "qemu-system-x86_64")
	testenv.RequireBinary(t, "qemu-img")
	d, err := New(Config{Accel: AccelTCG}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if c := d.Capabilities(); c.Accelerator != AccelTCG || !c.Pause {
		t.Errorf("Capabilities = %+v, want tcg with pause", c)
	}
	if !filepath.IsAbs(d.cfg.Binary) || !filepath.IsAbs(d.cfg.ImgBinary) {
		t.Errorf("binaries not resolved to absolute paths: %q %q", d.cfg.Binary, d.cfg.ImgBinary)
	}
	if d.cfg.ConnectTimeout <= 0 {
		t.Errorf("ConnectTimeout default = %v", d.cfg.ConnectTimeout)
	}
}

// socketDir makes a directory under tmp whose tether.sock path is n bytes long.
func socketDir(t *testing.T, tmp string, n int) string {
	t.Helper()
	pad := n - len(tmp) - len("/") - len("/tether.sock")
	if pad < 1 {
		t.Skipf("TMPDIR %s too long for this test", tmp)
	}
	dir := filepath.Join(tmp, strings.Repeat("d", pad))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := len(filepath.Join(dir, "tether.sock")); got != n {
		t.Fatalf("socket path length %d, want %d", got, n)
	}
	return dir
}

func TestStartRuntimeDirTooLong(t *testing.T) {
	testenv.RequireBinary(t, "qemu-system-x86_64")
	testenv.RequireBinary(t, "qemu-img")
	d, err := New(Config{Accel: AccelTCG}, discard())
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	kernel, initrd := bootFiles(t, tmp)
	spec := hypervisor.Spec{Name: "long", Kernel: kernel, Initrd: initrd, MemoryMiB: 128, CPUs: 1, ChannelName: "c"}

	spec.RuntimeDir = socketDir(t, tmp, maxSocketPath+1)
	_, err = d.Start(t.Context(), spec)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "too long for a unix socket") || !strings.Contains(err.Error(), spec.RuntimeDir) {
		t.Fatalf("Start with a %d-byte socket path: %v (%s), want InvalidArgument naming the dir", maxSocketPath+1, err, classOf(err))
	}
	if _, err := os.Stat(filepath.Join(spec.RuntimeDir, "tether.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused Start left a socket behind: %v", err)
	}
}

func TestStartAtSocketPathLimit(t *testing.T) {
	testenv.RequireBinary(t, "qemu-system-x86_64")
	testenv.RequireBinary(t, "qemu-img")
	d, err := New(Config{Accel: AccelTCG}, discard())
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	kernel, initrd := bootFiles(t, tmp)
	spec := hypervisor.Spec{Name: "limit", Kernel: kernel, Initrd: initrd, MemoryMiB: 128, CPUs: 1, ChannelName: "c"}
	spec.RuntimeDir = socketDir(t, tmp, maxSocketPath)
	// At the limit the path is accepted and QEMU runs. It connects the
	// channel before it reads the dummy kernel, so Start may succeed (and
	// the VM then ends at once) or see QEMU exit first (Unavailable).
	vm, err := d.Start(t.Context(), spec)
	switch {
	case err == nil:
		defer vm.Kill()
		select {
		case <-vm.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("QEMU with a dummy kernel still running after 10 s")
		}
		if err := vm.Status().Err; err == nil || !strings.Contains(err.Error(), "kernel") {
			t.Errorf("status of a VM with a dummy kernel: %v, want QEMU's kernel error", err)
		}
	case !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "kernel"):
		t.Errorf("Start with a %d-byte socket path and a dummy kernel: %v (%s), want success or Unavailable from QEMU's kernel check", maxSocketPath, err, classOf(err))
	}
}

func TestCreateOverlay(t *testing.T) {
	testenv.RequireBinary(t, "qemu-system-x86_64")
	img := testenv.RequireBinary(t, "qemu-img")
	d, err := New(Config{Accel: AccelTCG}, discard())
	if err != nil {
		t.Fatal(err)
	}
	const baseSize = 64 << 20
	dir := filepath.Join(t.TempDir(), "images,1") // QEMU's comma quoting must not leak into the backing name
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.raw")
	// A fully allocated base: a copy would show up in the overlay's size on disk.
	data := make([]byte, baseSize)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	if err := os.WriteFile(base, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir) // a relative base path must end up absolute in the overlay

	type info struct {
		Format        string `json:"format"`
		VirtualSize   int64  `json:"virtual-size"`
		BackingFile   string `json:"backing-filename"`
		BackingFormat string `json:"backing-filename-format"`
	}
	for _, tc := range []struct {
		name     string
		size     int64
		wantSize int64
	}{
		{"base_size", 0, baseSize},
		{"grown", 2 * baseSize, 2 * baseSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rw.qcow2")
			disk, err := d.CreateOverlay(t.Context(), hypervisor.Disk{Path: "base.raw", Format: "raw", ReadOnly: true}, path, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if disk != (hypervisor.Disk{Path: path, Format: "qcow2"}) {
				t.Errorf("CreateOverlay = %+v, want a writable qcow2 at %s", disk, path)
			}
			out, err := exec.Command(img, "info", "--output=json", path).Output()
			if err != nil {
				t.Fatalf("qemu-img info: %v", err)
			}
			var got info
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			want := info{Format: "qcow2", VirtualSize: tc.wantSize, BackingFile: base, BackingFormat: "raw"}
			if got != want {
				t.Errorf("qemu-img info = %+v, want %+v", got, want)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			onDisk := st.Sys().(*syscall.Stat_t).Blocks * 512
			if st.Size() > 1<<20 || onDisk > 1<<20 {
				t.Errorf("overlay is %d bytes (%d on disk) over a %d-byte base: looks like a copy", st.Size(), onDisk, baseSize)
			}
		})
	}

	t.Run("missing_base", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rw.qcow2")
		_, err := d.CreateOverlay(t.Context(), hypervisor.Disk{Path: filepath.Join(dir, "nobase.raw"), Format: "raw"}, path, 0)
		if err == nil || !strings.Contains(err.Error(), "nobase.raw") {
			t.Errorf("CreateOverlay over a missing base: %v, want an error naming it", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failed CreateOverlay left %s: %v", path, err)
		}
	})
}

// fakeQEMU writes a shell script standing in for QEMU: it records its pid
// in dir/pid and runs body.
func fakeQEMU(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "fake-qemu")
	script := "#!/bin/sh\necho $$ > " + filepath.Join(dir, "pid") + "\n" + body + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStartSupervision drives Start's failure paths with a fake VMM: one
// that exits at once, and one that never connects the channel (stopped by
// ConnectTimeout or by the context). Each must be Unavailable or the
// context's error, and no fake VMM may outlive the failed Start.
func TestStartSupervision(t *testing.T) {
	testenv.RequireBinary(t, "qemu-img")
	for _, tc := range []struct {
		name    string
		body    string
		timeout time.Duration // ConnectTimeout
		ctx     time.Duration // 0: no deadline
		check   func(error) bool
		msg     string
	}{
		{"exits_at_start", "echo 'qemu-system-x86_64: boom' >&2; exit 1", 10 * time.Second, 0, errdefs.IsUnavailable, "boom"},
		{"never_connects", "exec sleep 60", 300 * time.Millisecond, 0, errdefs.IsUnavailable, "not connected within 300ms"},
		{"context_ends", "exec sleep 60", 10 * time.Second, 300 * time.Millisecond, func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, "deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := New(Config{Binary: fakeQEMU(t, dir, tc.body), Accel: AccelTCG, ConnectTimeout: tc.timeout}, discard())
			if err != nil {
				t.Fatal(err)
			}
			kernel, initrd := bootFiles(t, dir)
			rt, err := os.MkdirTemp("", "qt")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(rt)
			ctx := t.Context()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			start := time.Now()
			vm, err := d.Start(ctx, hypervisor.Spec{Name: tc.name, Kernel: kernel, Initrd: initrd, MemoryMiB: 128, CPUs: 1, ChannelName: "c", RuntimeDir: rt})
			if err == nil {
				vm.Kill()
				t.Fatal("Start succeeded with a VMM that never connects")
			}
			if !tc.check(err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Start: %v (%s), want it to mention %q", err, classOf(err), tc.msg)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("Start took %v to fail", el)
			}
			if _, err := os.Stat(filepath.Join(rt, "tether.sock")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed Start left its socket: %v", err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "pid"))
			if err != nil {
				t.Fatalf("fake VMM did not run: %v", err)
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			deadline := time.Now().Add(5 * time.Second)
			for syscall.Kill(pid, 0) != syscall.ESRCH {
				if time.Now().After(deadline) {
					t.Fatalf("fake VMM pid %d still there 5 s after Start failed", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
