package vch

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
)

// TestEngineID: the VCH's ID is a UUID, made once and kept under its root
// (GET /info's ID, as dockerd's engine-id); a damaged file is replaced.
func TestEngineID(t *testing.T) {
	root := t.TempDir()
	id, err := engineID(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("engine ID %q: %v", id, err)
	}
	again, err := engineID(root)
	if err != nil || again != id {
		t.Fatalf("second engineID = %q, %v; want %q", again, err, id)
	}
	other, _ := engineID(t.TempDir())
	if other == id {
		t.Fatalf("two roots share the ID %s", id)
	}
	if err := os.WriteFile(filepath.Join(root, engineIDFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh, err := engineID(root)
	if err != nil || fresh == id {
		t.Fatalf("engineID over a damaged file = %q, %v", fresh, err)
	}
	if _, err := uuid.Parse(fresh); err != nil {
		t.Fatalf("engine ID %q: %v", fresh, err)
	}
}
