package storage

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

func deletes(recs []portlayer.ImageDelete) string {
	var out []string
	for _, r := range recs {
		if r.Untagged != "" {
			out = append(out, "Untagged: "+r.Untagged)
		}
		if r.Deleted != "" {
			out = append(out, "Deleted: "+r.Deleted)
		}
	}
	return strings.Join(out, "\n")
}

func TestRemove(t *testing.T) {
	type step struct {
		ref    string
		force  bool
		want   string // records, with ID for the image ID
		errIs  func(error) bool
		errMsg string // with ID and SHORT substituted
		// reason, ref and container are the typed error's fields.
		reason, ref_, container string
	}
	tests := []struct {
		name  string
		tags  []string // extra tags besides busybox:latest
		inUse bool
		steps []step
	}{
		{name: "untag last tag deletes", steps: []step{
			{ref: "busybox", want: "Untagged: busybox:latest\nDeleted: ID"},
		}},
		{name: "untag one of two", tags: []string{"busybox:1"}, steps: []step{
			{ref: "busybox:1", want: "Untagged: busybox:1"},
			{ref: "busybox", want: "Untagged: busybox:latest\nDeleted: ID"},
		}},
		{name: "by ID with two tags needs force", tags: []string{"other:2"}, steps: []step{
			{ref: "SHORT", errIs: errdefs.IsConflict, errMsg: "image SHORT has several references", reason: portlayer.ReasonReferenced},
			{ref: "SHORT", force: true, want: "Untagged: busybox:latest\nUntagged: other:2\nDeleted: ID"},
		}},
		{name: "by ID single tag", steps: []step{
			{ref: "ID", want: "Untagged: busybox:latest\nDeleted: ID"},
		}},
		{name: "in use by reference", inUse: true, steps: []step{
			{ref: "busybox", errIs: errdefs.IsConflict, errMsg: "image SHORT is used by container abc123def456", reason: portlayer.ReasonInUse, ref_: "busybox", container: "abc123def456"},
			{ref: "busybox", force: true, want: "Untagged: busybox:latest"},
			{ref: "ID", errIs: errdefs.IsConflict, errMsg: "image SHORT is used by container abc123def456", reason: portlayer.ReasonInUse, container: "abc123def456"},
		}},
		{name: "missing", steps: []step{
			{ref: "nosuch", errIs: errdefs.IsNotFound, errMsg: "no such image: nosuch:latest"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			var id string
			s, err := New(Config{Root: root, InUse: func(imageID string) (string, bool) {
				return "abc123def4567890", tt.inUse && imageID == id
			}}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			img := loadBusybox(t, s)
			id = img.ID
			for _, tag := range tt.tags {
				if err := s.Tag(t.Context(), "busybox", tag); err != nil {
					t.Fatal(err)
				}
			}
			short := shortID(id)
			sub := func(x string) string {
				return strings.ReplaceAll(strings.ReplaceAll(x, "SHORT", short), "ID", id)
			}
			for i, st := range tt.steps {
				ref := st.ref
				switch ref {
				case "ID":
					ref = id
				case "SHORT":
					ref = short
				}
				recs, err := s.Remove(t.Context(), ref, st.force)
				if st.errIs != nil {
					if !st.errIs(err) || err.Error() != sub(st.errMsg) {
						t.Fatalf("step %d: err = %v, want %q", i, err, sub(st.errMsg))
					}
					if pe := portlayer.AsError(err); pe == nil || pe.Kind != portlayer.KindImage || pe.Reason != st.reason || pe.Name != st.ref_ || strings.Join(pe.Containers, "") != st.container {
						t.Fatalf("step %d: typed error %+v, want reason %q ref %q container %q", i, pe, st.reason, st.ref_, st.container)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got := deletes(recs); got != strings.ReplaceAll(st.want, "ID", id) {
					t.Fatalf("step %d: records\n%s\nwant\n%s", i, got, sub(st.want))
				}
			}
		})
	}
}

func TestRemoveGC(t *testing.T) {
	s := newStore(t, t.TempDir())
	img := loadBusybox(t, s)
	// A second image sharing no layers, and one sharing busybox's layer.
	other, err := s.Import(t.Context(), bytes.NewReader(smallTar(t, map[string]string{"a": "b"})), "other", portlayer.ImportOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	disk, err := s.Rootfs(t.Context(), img.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(t.Context(), "busybox", "copy"); err != nil {
		t.Fatal(err)
	}
	blobs := func() int {
		ents, _ := os.ReadDir(s.path("oci", "blobs", "sha256"))
		return len(ents)
	}
	before := blobs()
	if _, err := s.Remove(t.Context(), "busybox", false); err != nil {
		t.Fatal(err)
	}
	if blobs() != before {
		t.Fatal("untag removed blobs")
	}
	recs, err := s.Remove(t.Context(), "copy", false)
	if err != nil || recs[len(recs)-1].Deleted != img.ID {
		t.Fatalf("remove copy: %v %v", recs, err)
	}
	if got := blobs(); got != 3 {
		t.Fatalf("%d blobs left, want 3 (other's manifest, config, layer)", got)
	}
	if _, err := os.Stat(disk); !os.IsNotExist(err) {
		t.Fatalf("rootfs disk not removed: %v", err)
	}
	if _, err := s.Get(t.Context(), other.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), img.ID); !errdefs.IsNotFound(err) {
		t.Fatalf("deleted image still found: %v", err)
	}
	// Loading it again works (blobs written afresh).
	img2 := loadBusybox(t, s)
	if img2.ID != img.ID {
		t.Fatal(fmt.Sprint("reload ID differs: ", img2.ID))
	}
}

// TestOpenLogsNoWarnings checks that opening a store, new or used, logs no
// warning (a new root has no blob directory for the start-up GC yet).
func TestOpenLogsNoWarnings(t *testing.T) {
	used := t.TempDir()
	s := newStore(t, used)
	loadBusybox(t, s)
	s.Close()
	for _, tt := range []struct{ name, root string }{{"new root", t.TempDir()}, {"used root", used}} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := New(Config{Root: tt.root}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if logs.Len() != 0 {
				t.Fatalf("warnings:\n%s", logs.String())
			}
		})
	}
}
