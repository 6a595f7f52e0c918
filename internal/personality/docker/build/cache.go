package build

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// cache maps a step's key to the image the step made. It is persisted as
// one JSON object {key: image ID} (written to a temporary file, synced and
// renamed), so a crash keeps the old index or the new one. Entries whose
// image is gone are ignored at lookup; the index never decides alone.
type cache struct {
	path string
	mu   sync.Mutex
	m    map[string]string
}

func openCache(path string) (*cache, error) {
	c := &cache{path: path, m: map[string]string{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("build: cache index: %w", err)
	}
	if err := json.Unmarshal(b, &c.m); err != nil {
		// A damaged index costs rebuilds, never a wrong image: start empty.
		c.m = map[string]string{}
	}
	return c, nil
}

func (c *cache) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.m[key]
	return id, ok
}

func (c *cache) put(key, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[key] = id
	return c.saveLocked()
}

// clear empties the index and returns how many entries it had.
func (c *cache) clear() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.m)
	c.m = map[string]string{}
	return n, c.saveLocked()
}

func (c *cache) saveLocked() error {
	b, err := json.Marshal(c.m)
	if err != nil {
		return fmt.Errorf("build: cache index: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), "cache-*.json")
	if err != nil {
		return fmt.Errorf("build: cache index: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.path)
	}
	if err != nil {
		return fmt.Errorf("build: cache index: %w", err)
	}
	return nil
}

// stepKey is the cache key of a step, after the classic builder's probe
// (parent image plus the step's container config): the parent image ID,
// the history text of the step (which holds the checksum of copied
// files), the image configuration the step leaves, and extra (the
// environment a RUN step sees beyond the config: its build arguments).
func stepKey(parent, createdBy string, cfg ocispec.ImageConfig, extra []string) string {
	h := sha256.New()
	b, _ := json.Marshal(struct {
		Parent    string
		CreatedBy string
		Config    ocispec.ImageConfig
		Extra     []string
	}{parent, createdBy, cfg, extra})
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
