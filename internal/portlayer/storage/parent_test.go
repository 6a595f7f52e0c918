package storage

import (
	"bytes"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

// A build's chain: base → a (empty layer) → b (a layer) tagged. rmi of the
// tag deletes b and its untagged parents, not the tagged base; an image with
// children is refused by ID and only untagged by reference.
func TestParentChain(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	base := loadBusybox(t, s)
	a, err := s.Commit(t.Context(), portlayer.CommitSpec{Parent: base.ID, Config: ocispec.ImageConfig{Env: []string{"A=1"}}, CreatedBy: "/bin/sh -c #(nop)  ENV A=1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Parent != base.ID || len(a.Layers) != len(base.Layers) {
		t.Fatalf("empty-layer commit: parent %s, %d layers (base %d)", a.Parent, len(a.Layers), len(base.Layers))
	}
	if h := a.Config.History; len(h) == 0 || !h[len(h)-1].EmptyLayer {
		t.Fatalf("history of an empty-layer commit: %+v", h)
	}
	b, err := s.Commit(t.Context(), portlayer.CommitSpec{Parent: a.ID, Layer: bytes.NewReader(smallTar(t, map[string]string{"x": "y"})), Ref: "built:latest"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Parent != a.ID || len(b.Layers) != len(base.Layers)+1 {
		t.Fatalf("layer commit: parent %s, %d layers", b.Parent, len(b.Layers))
	}
	// The parent survives a restart.
	s.Close()
	s = newStore(t, root)
	if got, err := s.Get(t.Context(), "built"); err != nil || got.Parent != a.ID {
		t.Fatalf("after restart: %+v %v", got.Parent, err)
	}
	if _, err := s.Remove(t.Context(), a.ID, true); !errdefs.IsConflict(err) || portlayer.AsError(err) == nil || portlayer.AsError(err).Reason != portlayer.ReasonHasChildren {
		t.Fatalf("rmi of a parent by ID: %v", err)
	}
	if err := s.Tag(t.Context(), a.ID, "mid:1"); err != nil {
		t.Fatal(err)
	}
	dels, err := s.Remove(t.Context(), "mid:1", false)
	if err != nil || len(dels) != 1 || dels[0].Untagged != "mid:1" {
		t.Fatalf("untag of a parent: %+v %v", dels, err)
	}
	if _, err := s.Get(t.Context(), a.ID); err != nil {
		t.Fatalf("parent deleted by untag: %v", err)
	}
	dels, err = s.Remove(t.Context(), "built", false)
	if err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, d := range dels {
		if d.Deleted != "" {
			deleted = append(deleted, d.Deleted)
		}
	}
	if !slices.Equal(deleted, []string{b.ID, a.ID}) {
		t.Fatalf("deleted %v, want child then parent %v", deleted, []string{b.ID, a.ID})
	}
	if _, err := s.Get(t.Context(), "busybox"); err != nil {
		t.Fatalf("tagged base deleted: %v", err)
	}
}
