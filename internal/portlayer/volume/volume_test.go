package volume

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

func needE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := findTool(tool); err != nil {
			t.Skipf("%s not installed (Debian e2fsprogs)", tool)
		}
	}
}

type recorder struct {
	mu     sync.Mutex
	events []portlayer.Event
}

func (r *recorder) Publish(e portlayer.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) actions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Type+" "+e.Action+" "+e.ID)
	}
	return out
}

func TestCreateInspectListRemove(t *testing.T) {
	needE2fsprogs(t)
	root := t.TempDir()
	users := map[string][]string{}
	var mu sync.Mutex
	ev := &recorder{}
	s, err := New(Config{Root: root, InUse: func(name string) []string {
		mu.Lock()
		defer mu.Unlock()
		return users[name]
	}, Events: ev}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	v, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "data", Labels: map[string]string{"k": "v"}, Options: map[string]string{"size": "64m"}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != "data" || v.Driver != "local" || v.SizeBytes != 64<<20 || v.Labels["k"] != "v" || v.Anonymous {
		t.Errorf("created %+v", v)
	}
	if v.Mountpoint != filepath.Join(root, "data") || v.DiskPath != filepath.Join(root, "data", "disk.ext4") {
		t.Errorf("paths %q %q", v.Mountpoint, v.DiskPath)
	}
	st, err := os.Stat(v.DiskPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 64<<20 {
		t.Errorf("disk size %d, want %d", st.Size(), 64<<20)
	}
	// The new volume is empty: no lost+found.
	debugfs, _ := findTool("debugfs")
	out, err := exec.Command(debugfs, "-R", "ls /", v.DiskPath).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v: %s", err, out)
	}
	if strings.Contains(string(out), "lost+found") {
		t.Errorf("new volume has lost+found: %s", out)
	}

	// Creating it again returns it unchanged (Docker's idempotent create).
	again, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "data", Labels: map[string]string{"k": "other"}})
	if err != nil || again.Labels["k"] != "v" || !again.CreatedAt.Equal(v.CreatedAt) {
		t.Errorf("second create = %+v, %v", again, err)
	}

	anon, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(anon.Name) != 64 || !anon.Anonymous || anon.SizeBytes != DefaultSizeBytes {
		t.Errorf("anonymous volume %+v", anon)
	}
	if st, err := os.Stat(anon.DiskPath); err != nil || st.Size() != DefaultSizeBytes {
		t.Errorf("anonymous disk: %v", err)
	}

	list, err := s.ListVolumes(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list = %v, %v", list, err)
	}
	if list[0].Name > list[1].Name {
		t.Errorf("list not sorted by name: %s, %s", list[0].Name, list[1].Name)
	}

	// In use: Docker's text, Conflict, force does not override.
	mu.Lock()
	users["data"] = []string{"bbb", "aaa"}
	mu.Unlock()
	for _, force := range []bool{false, true} {
		err = s.RemoveVolume(ctx, "data", force)
		inUse := portlayer.AsError(err)
		if inUse == nil || !errdefs.IsConflict(err) || inUse.Reason != portlayer.ReasonInUse || inUse.Kind != portlayer.KindVolume {
			t.Fatalf("remove in-use volume (force %v) = %v, want a Conflict in_use", force, err)
		}
		if want := "aaa bbb"; strings.Join(inUse.Containers, " ") != want {
			t.Errorf("containers = %v, want %q", inUse.Containers, want)
		}
	}
	mu.Lock()
	delete(users, "data")
	mu.Unlock()

	// Reopen: volumes survive a restart.
	s2, err := New(Config{Root: root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.InspectVolume(ctx, "data")
	if err != nil || got.SizeBytes != 64<<20 || got.Labels["k"] != "v" || !got.CreatedAt.Equal(v.CreatedAt) {
		t.Errorf("after reopen: %+v, %v", got, err)
	}
	if got, err := s2.InspectVolume(ctx, anon.Name); err != nil || !got.Anonymous {
		t.Errorf("anonymous after reopen: %+v, %v", got, err)
	}

	if err := s.RemoveVolume(ctx, "data", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("volume directory left after remove: %v", err)
	}
	_, err = s.InspectVolume(ctx, "data")
	if pe := portlayer.AsError(err); !errdefs.IsNotFound(err) || pe == nil || pe.Kind != portlayer.KindVolume || pe.ID != "data" {
		t.Errorf("inspect removed = %v", err)
	}
	if err := s.RemoveVolume(ctx, "data", false); !errdefs.IsNotFound(err) {
		t.Errorf("remove missing = %v, want NotFound", err)
	}
	if err := s.RemoveVolume(ctx, "data", true); err != nil {
		t.Errorf("remove missing with force = %v, want nil", err)
	}
	want := []string{"volume create data", "volume create " + anon.Name, "volume destroy data"}
	if got := ev.actions(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestCreateInvalid(t *testing.T) {
	s, err := New(Config{Root: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		spec portlayer.VolumeSpec
		want string
	}{
		{"one character", portlayer.VolumeSpec{Name: "a"}, "a Name too_short a"},
		{"slash", portlayer.VolumeSpec{Name: "b/c"}, "b/c Name invalid_name b/c"},
		{"leading dot", portlayer.VolumeSpec{Name: ".tmp"}, ".tmp Name invalid_name .tmp"},
		{"dot dot", portlayer.VolumeSpec{Name: ".."}, ".. Name invalid_name .."},
		{"unknown option", portlayer.VolumeSpec{Name: "x1", Options: map[string]string{"foo": "1"}}, "x1 Options unknown foo"},
		{"bad size", portlayer.VolumeSpec{Name: "x2", Options: map[string]string{"size": "lots"}}, `create x2: invalid size option "lots"`},
		{"too small", portlayer.VolumeSpec{Name: "x3", Options: map[string]string{"size": "1m"}}, `a volume's size must be between 16MiB and 1TiB`},
		{"too large", portlayer.VolumeSpec{Name: "x4", Options: map[string]string{"size": "2t"}}, `a volume's size must be between`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CreateVolume(t.Context(), tc.spec)
			typed := ""
			if pe := portlayer.AsError(err); pe != nil {
				typed = fmt.Sprint(pe.ID, " ", pe.Field, " ", pe.Reason, " ", pe.Value)
			}
			if !errdefs.IsInvalidArgument(err) || (typed != tc.want && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("err = %v, want InvalidArgument with %q", err, tc.want)
			}
		})
	}
	if list, _ := s.ListVolumes(t.Context()); len(list) != 0 {
		t.Errorf("volumes left after failed creates: %v", list)
	}
	entries, _ := os.ReadDir(filepath.Join(s.cfg.Root, tmpDir))
	if len(entries) != 0 {
		t.Errorf("work files left: %v", entries)
	}
}

func TestNewCleansWork(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, tmpDir, "create-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A directory without a record (a crash during remove) is skipped.
	if err := os.MkdirAll(filepath.Join(root, "half"), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Root: root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, tmpDir, "create-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir not cleaned: %v", err)
	}
	if list, _ := s.ListVolumes(t.Context()); len(list) != 0 {
		t.Errorf("volumes = %v, want none", list)
	}
	for _, size := range []int64{1, MaxSizeBytes + 1} {
		if _, err := New(Config{Root: root, DefaultSizeBytes: size}, nil); !errdefs.IsInvalidArgument(err) {
			t.Errorf("default size %d: err = %v, want InvalidArgument", size, err)
		}
	}
}
