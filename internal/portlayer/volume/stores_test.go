package volume

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// TestVolumeStores: --opt volume-store=NAME (or VIC's VolumeStore, any
// case) puts the disk in that store; the default store is Root; an
// unknown store is InvalidArgument naming the stores; volumes in every
// store survive a reopen and are removed from their own store.
func TestVolumeStores(t *testing.T) {
	needE2fsprogs(t)
	root, fast := t.TempDir(), filepath.Join(t.TempDir(), "fast")
	cfg := Config{Root: root, Stores: map[string]string{"fast": fast}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Stores(); len(got) != 2 || got[DefaultStore] != root || got["fast"] != fast {
		t.Fatalf("Stores() = %v", got)
	}
	ctx := t.Context()
	def, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	if def.Mountpoint != filepath.Join(root, "plain") || def.Options != nil {
		t.Fatalf("default volume: mountpoint %s options %v", def.Mountpoint, def.Options)
	}
	for name, key := range map[string]string{"a1": "volume-store", "a2": "VolumeStore", "a3": "VOLUME_STORE"} {
		v, err := s.CreateVolume(ctx, portlayer.VolumeSpec{Name: name, Options: map[string]string{key: "fast", "size": "64m"}})
		if err != nil {
			t.Fatalf("create with %s: %v", key, err)
		}
		if v.Mountpoint != filepath.Join(fast, name) || v.Options[StoreOption] != "fast" || v.Options["size"] != "64m" || len(v.Options) != 2 {
			t.Fatalf("%s: mountpoint %s options %v", key, v.Mountpoint, v.Options)
		}
		if _, err := os.Stat(filepath.Join(fast, name, diskFile)); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.CreateVolume(ctx, portlayer.VolumeSpec{Name: "x1", Options: map[string]string{"volume-store": "slow"}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `no volume store named "slow": this VCH has default, fast`) {
		t.Fatalf("unknown store: %v", err)
	}

	s2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s2.InspectVolume(ctx, "a2")
	if err != nil || v.Mountpoint != filepath.Join(fast, "a2") {
		t.Fatalf("after reopen: %+v %v", v, err)
	}
	if err := s2.RemoveVolume(ctx, "a2", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(fast, "a2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed volume's directory: %v", err)
	}
	if vs, _ := s2.ListVolumes(ctx); len(vs) != 3 {
		t.Fatalf("list: %d volumes, want 3", len(vs))
	}

	for _, bad := range []map[string]string{{"fast": "relative/dir"}, {"a b": "/x"}, {"other": root}} {
		if _, err := New(Config{Root: t.TempDir() + "/r", Stores: bad}, nil); err == nil && bad["other"] == "" {
			t.Errorf("New with stores %v succeeded", bad)
		}
	}
	if _, err := New(Config{Root: root, Stores: map[string]string{"other": root}}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("two stores in one directory: %v", err)
	}
}

func TestParseStore(t *testing.T) {
	if n, p, err := ParseStore("fast:/srv/vch/fast/"); err != nil || n != "fast" || p != "/srv/vch/fast" {
		t.Fatalf("ParseStore = %q %q %v", n, p, err)
	}
	for _, bad := range []string{"fast", "fast:rel", ":/x", "a b:/x"} {
		if _, _, err := ParseStore(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseStore(%q) = %v", bad, err)
		}
	}
}
