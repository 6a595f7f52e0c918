// Package volume is the port layer's volume store: it implements
// [portlayer.Volumes]. A volume is a sparse ext4 disk image that container
// VMs attach as an extra virtio-blk disk and mount (compute and tether do
// that); its data outlives every container and the daemon.
//
// # What it owns
//
// Everything under [Config.Root], and nothing outside it:
//
//	Root/
//	  <name>/volume.json   the volume's record (name, labels, options,
//	                       size, anonymous, creation time)
//	  <name>/disk.ext4     the volume's raw ext4 disk image, sparse
//	  .tmp/                volumes being created; emptied by New
//
// Each extra volume store ([Config.Stores], `--volume-store NAME:PATH`)
// is laid out as Root is: PATH/<name>/ and PATH/.tmp/. Root itself is the
// store named "default" unless Stores names "default" otherwise.
//
// A datastore volume store (`--volume-store NAME:ds://DATASTORE/PATH`,
// on a VCH whose hypervisor keeps its own disks, [Config.Disks]) keeps
// the volumes' disks there: each is made here as on the host, then
// handed to the hypervisor (hypervisor.VolumeStore.ImportVolume, a VMDK
// at "[DATASTORE] PATH/<name>/<name>.vmdk") and the host file deleted.
// Its records stay on the host, laid out as the other stores under
// Root/.datastore/NAME/, each naming its disk.
//
// A volume is created in .tmp/ and renamed into place with its record, so
// a crash never leaves a half-made volume under a name. Volume names start
// with an alphanumeric character, so they never collide with ".tmp".
//
// # Verbs
//
// CreateVolume (idempotent for an existing name: a caller makes sure a
// volume exists without looking first), InspectVolume, ListVolumes and
// RemoveVolume, which refuses a volume that [Config.InUse] reports as
// used by a container.
//
// # What it does not own
//
// Which containers use a volume (compute's records, asked through
// Config.InUse), attaching disks to VMs (compute) and mounting them and
// the copy-up that fills a new volume with what the image has at its
// mount point (tether, in the guest).
package volume

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/bytesize"
	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/portlayer"
)

// Sizes of volume disks, each with its reason.
const (
	// DefaultSizeBytes is a volume's disk size without --opt size: 8 GiB,
	// room for most data sets; the file is sparse, so an empty volume
	// costs about 4 MiB on the host.
	DefaultSizeBytes = 8 << 30
	// MinSizeBytes: ext4 with a journal needs a few MiB of metadata.
	MinSizeBytes = 16 << 20
	// MaxSizeBytes: a sanity bound (1 TiB); mkfs metadata for it is
	// about 16 MiB on the host.
	MaxSizeBytes = 1 << 40
)

// Driver is the only volume driver's name: "local", volumes on the VCH's
// own disk, under the name volume users know for those.
const Driver = "local"

// Config configures a [Store].
type Config struct {
	// Root is the directory the store owns (created if missing, mode 0700).
	// Required. Nothing is written outside it.
	Root string `toml:"root" json:"root"`
	// DefaultSizeBytes is the disk size of a volume created without a
	// size option; 0 means DefaultSizeBytes (8 GiB). Range MinSizeBytes
	// to MaxSizeBytes.
	DefaultSizeBytes int64 `toml:"default_size_bytes" json:"default_size_bytes"`
	// InUse returns the IDs of the containers (in any state) whose mounts
	// name the volume; nil or empty means unused. Set by the wiring; nil
	// means no volume is ever in use. It must not call back into the store.
	InUse func(name string) []string `toml:"-" json:"-"`
	// Events receives "volume" events (create, destroy); nil drops them.
	Events Publisher `toml:"-" json:"-"`
	// Stores are named directories volume disks may live in (vic-machine's
	// --volume-store NAME:PATH; PATH may be "ds://DATASTORE/PATH", a
	// datastore directory, when Disks is set), chosen with the driver option
	// "volume-store" (or VIC's "VolumeStore"; the key is
	// case-insensitive). Root is the store named DefaultStore unless
	// Stores maps that name to another directory. Each is created if
	// missing (mode 0700) and, like Root, owned by the store.
	Stores map[string]string `toml:"stores" json:"stores,omitempty"`
	// Disks holds the disks of the datastore volume stores (the
	// hypervisor's store, vSphere's datastores); nil if the VCH has none,
	// when a ds:// store is refused.
	Disks hypervisor.VolumeStore `toml:"-" json:"-"`
	// Reserve, when set, is asked before a disk is made whether the VCH
	// may take size more bytes (the storage quota); its error is returned.
	Reserve func(size int64) error `toml:"-" json:"-"`
}

// DefaultStore names the volume store of volumes created without a
// volume-store option.
const DefaultStore = "default"

// StoreOption is the driver option that picks a volume store; VIC's
// spelling, "VolumeStore", is accepted too (keys compare case-insensitively,
// ignoring '-' and '_').
const StoreOption = "volume-store"

// isStoreOption reports whether an option key names the volume store.
func isStoreOption(k string) bool {
	k = strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(k))
	return k == "volumestore"
}

// storeNameRE is what a volume store's name may be.
var storeNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// DatastoreScheme starts a datastore volume store's location,
// "ds://DATASTORE/PATH" (vic-machine's form).
const DatastoreScheme = "ds://"

// DatastoreDir is the hypervisor's form of a datastore volume store's
// directory, "[DATASTORE] PATH", for loc "ds://DATASTORE/PATH" (PATH
// relative and clean, a trailing "/" allowed); ok is false for another
// form (a path with "..", an empty part, brackets in DATASTORE).
func DatastoreDir(loc string) (dir string, ok bool) {
	ds, p, _ := strings.Cut(strings.TrimPrefix(loc, DatastoreScheme), "/")
	p = strings.TrimSuffix(p, "/")
	if !strings.HasPrefix(loc, DatastoreScheme) || ds == "" || strings.ContainsAny(ds, "[]") || p == "" ||
		path.Clean(p) != p || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") {
		return "", false
	}
	return "[" + ds + "] " + p, true
}

// datastoreRecords is the directory under Root that holds the records
// of the datastore volume stores, one directory each.
const datastoreRecords = ".datastore"

// ParseStore parses a "NAME:PATH" --volume-store value; PATH must be
// absolute or a datastore's directory, "ds://DATASTORE/PATH" (returned
// as given). InvalidArgument otherwise.
func ParseStore(v string) (name, path string, err error) {
	name, path, ok := strings.Cut(v, ":")
	if ok && storeNameRE.MatchString(name) && strings.HasPrefix(path, DatastoreScheme) {
		if _, ok := DatastoreDir(path); ok {
			return name, strings.TrimSuffix(path, "/"), nil
		}
	}
	if !ok || !storeNameRE.MatchString(name) || !filepath.IsAbs(path) {
		return "", "", portlayer.Errorf(portlayer.ClassInvalidArgument, "--volume-store %q: want NAME:PATH, NAME letters, digits, '_', '.' or '-' and PATH absolute or ds://DATASTORE/PATH", v)
	}
	return name, filepath.Clean(path), nil
}

// Publisher receives the events the store emits; Publish must not block.
type Publisher interface {
	Publish(portlayer.Event)
}

// Store is the volume store. It implements [portlayer.Volumes]; all
// methods are safe for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger

	// mu guards vols and is held across a removal's in-use check and
	// deletion, and across a creation, so a volume that a container is
	// being created with is never deleted under it.
	mu   sync.Mutex
	vols map[string]*record
	// stores maps each volume store's name to its absolute directory (of
	// the records alone, for a datastore store).
	stores map[string]string
	// remote maps each datastore volume store's name to its directory
	// there, as cfg.Disks names it ("[DATASTORE] PATH").
	remote map[string]string
}

var _ portlayer.Volumes = (*Store)(nil)

// record is one volume as persisted in volume.json.
type record struct {
	Name      string            `json:"name"`
	CreatedAt time.Time         `json:"created_at"`
	Labels    map[string]string `json:"labels,omitempty"`
	Options   map[string]string `json:"options,omitempty"`
	SizeBytes int64             `json:"size_bytes"`
	Anonymous bool              `json:"anonymous,omitempty"`
	// Store is the volume store the volume lives in; set on load from
	// the directory it was found in.
	Store string `json:"store,omitempty"`
	// Disk is the disk's path in cfg.Disks ("[DATASTORE] PATH/NAME/NAME.vmdk")
	// for a volume of a datastore store; empty for a host file.
	Disk string `json:"disk,omitempty"`
}

const (
	recordFile = "volume.json"
	diskFile   = "disk.ext4"
	tmpDir     = ".tmp"
)

// New opens (or creates) the store at cfg.Root and reloads every volume,
// so volumes survive a restart. Left-over work in Root/.tmp is removed; a
// directory without a readable record is skipped with a warning.
// InvalidArgument for a bad config.
func New(cfg Config, logger *slog.Logger) (*Store, error) {
	if cfg.Root == "" {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "root directory not set")
	}
	if cfg.DefaultSizeBytes == 0 {
		cfg.DefaultSizeBytes = DefaultSizeBytes
	}
	if cfg.DefaultSizeBytes < MinSizeBytes || cfg.DefaultSizeBytes > MaxSizeBytes {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "default size %d bytes outside %d..%d", cfg.DefaultSizeBytes, int64(MinSizeBytes), int64(MaxSizeBytes))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("volume: root: %w", err)
	}
	cfg.Root = root
	s := &Store{cfg: cfg, log: logger.With("component", "volume"), vols: map[string]*record{}, stores: map[string]string{DefaultStore: root}, remote: map[string]string{}}
	byDir := map[string]string{}
	for name, dir := range cfg.Stores {
		if strings.HasPrefix(dir, DatastoreScheme) && storeNameRE.MatchString(name) {
			ddir, ok := DatastoreDir(dir)
			if !ok {
				return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "volume store %q at %q: want ds://DATASTORE/PATH", name, dir)
			}
			if cfg.Disks == nil {
				return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "volume store %q at %q: a datastore volume store needs a VCH on vSphere", name, dir)
			}
			s.remote[name] = ddir
			s.stores[name] = filepath.Join(root, datastoreRecords, name)
			continue
		}
		if !storeNameRE.MatchString(name) || !filepath.IsAbs(dir) {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "volume store %q at %q: want a name of letters, digits, '_', '.' or '-' and an absolute path", name, dir)
		}
		s.stores[name] = filepath.Clean(dir)
	}
	for _, name := range slices.Sorted(maps.Keys(s.stores)) {
		dir := s.stores[name]
		if other, ok := byDir[dir]; ok {
			return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "volume stores %q and %q share the directory %s", other, name, dir)
		}
		byDir[dir] = name
	}
	for _, store := range slices.Sorted(maps.Keys(s.stores)) {
		if err := s.load(store); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// load prepares one store's directory and reloads its volumes.
func (s *Store) load(store string) error {
	root := s.stores[store]
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("volume: store %s: %w", store, err)
	}
	if err := os.RemoveAll(filepath.Join(root, tmpDir)); err != nil {
		return fmt.Errorf("volume: store %s: clean work dir: %w", store, err)
	}
	if err := os.Mkdir(filepath.Join(root, tmpDir), 0o700); err != nil {
		return fmt.Errorf("volume: store %s: work dir: %w", store, err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("volume: store %s: %w", store, err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == tmpDir || e.Name() == datastoreRecords && root == s.cfg.Root {
			continue
		}
		rec, err := readRecord(filepath.Join(root, e.Name()))
		if err != nil || rec.Name != e.Name() {
			s.log.Warn("skipping volume directory without a valid record", "store", store, "dir", e.Name(), "err", err)
			continue
		}
		if prev, ok := s.vols[rec.Name]; ok {
			s.log.Warn("skipping a volume whose name another store holds", "volume", rec.Name, "store", store, "kept_store", prev.Store)
			continue
		}
		rec.Store = store
		s.vols[rec.Name] = rec
	}
	return nil
}

// Stores returns the volume stores, name to directory: a host directory,
// or a datastore store's location as configured ("ds://DATASTORE/PATH").
func (s *Store) Stores() map[string]string {
	out := maps.Clone(s.stores)
	for name := range s.remote {
		out[name] = s.cfg.Stores[name]
	}
	return out
}

// dir is a volume's directory.
func (s *Store) dir(rec *record) string {
	return filepath.Join(s.stores[cmp.Or(rec.Store, DefaultStore)], rec.Name)
}

func readRecord(dir string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", recordFile, err)
	}
	return &rec, nil
}

// validName is the names volumes may have: two or more characters, the
// first a letter or digit (the same pattern as container names).
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// ValidateName checks a volume name against validName: InvalidArgument
// (a *portlayer.Error of KindVolume, Field "Name") with ReasonTooShort
// for one character, ReasonInvalidName for characters outside the
// pattern.
func ValidateName(name string) error {
	reason, msg := "", ""
	switch {
	case len(name) == 1:
		reason, msg = portlayer.ReasonTooShort, "volume: name "+strconv.Quote(name)+" is too short: a name has at least two characters"
	case !validName.MatchString(name):
		reason, msg = portlayer.ReasonInvalidName, "volume: name "+strconv.Quote(name)+" has characters outside [a-zA-Z0-9][a-zA-Z0-9_.-]"
	default:
		return nil
	}
	e := portlayer.Invalid(portlayer.KindVolume, "Name", name, reason, msg)
	e.ID, e.Name = name, name
	return e
}

// SizeOption parses the "size" driver option: a size in bytes with an
// optional binary unit ("512m", "20g", "1073741824"; bytesize.Parse),
// within MinSizeBytes to MaxSizeBytes. InvalidArgument otherwise.
func SizeOption(v string) (int64, error) {
	n, err := bytesize.Parse(v)
	if err != nil {
		return 0, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid size option %q", v)
	}
	if n < MinSizeBytes || n > MaxSizeBytes {
		return 0, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid size option %q: a volume's size must be between %s and %s", v, bytesize.Format(MinSizeBytes), bytesize.Format(MaxSizeBytes))
	}
	return n, nil
}

// sizeFor validates a spec's options and returns the disk size and the
// volume store. InvalidArgument for an unknown option or store.
func (s *Store) sizeFor(name string, opts map[string]string) (int64, string, error) {
	size, store := s.cfg.DefaultSizeBytes, DefaultStore
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		if isStoreOption(k) {
			store = opts[k]
			if _, ok := s.stores[store]; !ok {
				return 0, "", portlayer.Errorf(portlayer.ClassInvalidArgument, "create %s: no volume store named %q: this VCH has %s (vch create --volume-store NAME:PATH)", name, store, strings.Join(slices.Sorted(maps.Keys(s.stores)), ", "))
			}
			continue
		}
		if k != "size" {
			e := portlayer.Invalid(portlayer.KindVolume, "Options", k, portlayer.ReasonUnknown, "volume: unknown option "+strconv.Quote(k)+": the only one is size")
			e.ID = name
			return 0, "", e
		}
		n, err := SizeOption(opts[k])
		if err != nil {
			return 0, "", fmt.Errorf("volume: create %s: %w", name, err)
		}
		size = n
	}
	return size, store, nil
}

func newName() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateVolume implements portlayer.Volumes. The disk is made with
// mkfs.ext4 (e2fsprogs) as a sparse file of the requested size, with lazy
// inode-table and journal init (the guest mounts it with noinit_itable),
// no reserved blocks, a root-owned 0755 root directory and no lost+found
// (removed with debugfs, so a new volume is empty: the copy-up fills
// only an empty volume, and a container sees only what it wrote).
// Unavailable if mkfs.ext4 or debugfs is missing.
func (s *Store) CreateVolume(ctx context.Context, spec portlayer.VolumeSpec) (portlayer.Volume, error) {
	name := spec.Name
	if name == "" {
		name = newName()
	} else if err := ValidateName(name); err != nil {
		return portlayer.Volume{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec, ok := s.vols[name]; ok {
		return s.volume(rec), nil
	}
	size, store, err := s.sizeFor(name, spec.Options)
	if err != nil {
		return portlayer.Volume{}, err
	}
	if s.cfg.Reserve != nil {
		if err := s.cfg.Reserve(size); err != nil {
			return portlayer.Volume{}, fmt.Errorf("volume: create %s: %w", name, err)
		}
	}
	opts := map[string]string{}
	for k, v := range spec.Options {
		if !isStoreOption(k) {
			opts[k] = v
		}
	}
	if store != DefaultStore || len(opts) != len(spec.Options) {
		opts[StoreOption] = store // one spelling, whichever was given
	}
	if len(opts) == 0 {
		opts = nil
	}
	rec := &record{
		Name: name, CreatedAt: time.Now().UTC(), SizeBytes: size, Anonymous: spec.Anonymous,
		Labels: maps.Clone(spec.Labels), Options: opts, Store: store,
	}
	if err := s.build(ctx, rec); err != nil {
		return portlayer.Volume{}, err
	}
	s.vols[name] = rec
	s.log.Info("volume created", "volume", name, "store", store, "size_bytes", size, "anonymous", spec.Anonymous)
	s.event("create", name)
	return s.volume(rec), nil
}

// build makes the volume's directory under .tmp and renames it into place.
func (s *Store) build(ctx context.Context, rec *record) error {
	storeDir := s.stores[rec.Store]
	work, err := os.MkdirTemp(filepath.Join(storeDir, tmpDir), "create-")
	if err != nil {
		return fmt.Errorf("volume: create %s: %w", rec.Name, err)
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o700); err != nil {
		return fmt.Errorf("volume: create %s: %w", rec.Name, err)
	}
	disk := filepath.Join(work, diskFile)
	if err := mkfs(ctx, disk, rec.SizeBytes); err != nil {
		return fmt.Errorf("volume: create %s: %w", rec.Name, err)
	}
	if dir, ok := s.remote[rec.Store]; ok {
		d, err := s.cfg.Disks.ImportVolume(ctx, disk, dir, rec.Name)
		if err != nil {
			return fmt.Errorf("volume: create %s on volume store %s: %w", rec.Name, rec.Store, err)
		}
		rec.Disk = d.Path
		if err := os.Remove(disk); err != nil {
			return fmt.Errorf("volume: create %s: %w", rec.Name, err)
		}
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("volume: create %s: %w", rec.Name, err)
	}
	if err := writeSync(filepath.Join(work, recordFile), b); err != nil {
		return fmt.Errorf("volume: create %s: %w", rec.Name, err)
	}
	final := filepath.Join(storeDir, rec.Name)
	if err := os.Rename(work, final); err != nil {
		return fmt.Errorf("volume: create %s: %w", rec.Name, err)
	}
	if err := syncDir(storeDir); err != nil {
		return fmt.Errorf("volume: create %s: %w", rec.Name, err)
	}
	return nil
}

// mkfs makes a sparse, empty ext4 disk image of size bytes at path.
func mkfs(ctx context.Context, path string, size int64) error {
	mkfsBin, err := findTool("mkfs.ext4")
	if err != nil {
		return err
	}
	debugfs, err := findTool("debugfs")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	env := []string{"PATH=/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL=C"}
	cmd := exec.CommandContext(ctx, mkfsBin, "-q", "-F", "-t", "ext4",
		"-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
		"-m", "0", "-L", "vch-volume", path)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("mkfs.ext4: %s: %w", strings.TrimSpace(string(out)), err)
	}
	cmd = exec.CommandContext(ctx, debugfs, "-w", "-R", "rmdir lost+found", path)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("debugfs: %s: %w", strings.TrimSpace(string(out)), err)
	}
	f, err = os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	return err
}

// findTool locates an e2fsprogs tool in PATH or the sbin directories, which
// a daemon's PATH may lack. Unavailable if missing.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", portlayer.Errorf(portlayer.ClassUnavailable, "%s not found (install the Debian package e2fsprogs)", name)
}

func writeSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Store) volume(rec *record) portlayer.Volume {
	dir := s.dir(rec)
	v := portlayer.Volume{
		Name: rec.Name, Driver: Driver, Mountpoint: dir, DiskPath: filepath.Join(dir, diskFile), DiskFormat: "raw",
		CreatedAt: rec.CreatedAt, Labels: maps.Clone(rec.Labels), Options: maps.Clone(rec.Options),
		SizeBytes: rec.SizeBytes, Anonymous: rec.Anonymous,
	}
	if rec.Disk != "" {
		// On a datastore: its use there is not known here.
		v.DiskPath, v.DiskFormat = rec.Disk, "vmdk"
		return v
	}
	var st unix.Stat_t
	if unix.Stat(v.DiskPath, &st) == nil {
		v.DiskUsageBytes = st.Blocks * 512
	}
	return v
}

func (s *Store) event(action, name string) {
	if s.cfg.Events != nil {
		s.cfg.Events.Publish(portlayer.Event{Type: "volume", Action: action, ID: name, Attributes: map[string]string{"driver": Driver}})
	}
}

// noSuchVolume is NotFound (portlayer.NoSuchVolume).
func noSuchVolume(name string) error { return portlayer.NoSuchVolume(name) }

// InspectVolume implements portlayer.Volumes.
func (s *Store) InspectVolume(ctx context.Context, name string) (portlayer.Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.vols[name]
	if !ok {
		return portlayer.Volume{}, noSuchVolume(name)
	}
	return s.volume(rec), nil
}

// ListVolumes implements portlayer.Volumes: sorted by name.
func (s *Store) ListVolumes(ctx context.Context) ([]portlayer.Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]portlayer.Volume, 0, len(s.vols))
	for _, name := range slices.Sorted(maps.Keys(s.vols)) {
		out = append(out, s.volume(s.vols[name]))
	}
	return out, nil
}

// RemoveVolume implements portlayer.Volumes. The record goes first, then
// the directory: a crash in between leaves a directory without a record,
// which New skips.
func (s *Store) RemoveVolume(ctx context.Context, name string, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.vols[name]
	if !ok {
		if force {
			return nil
		}
		return noSuchVolume(name)
	}
	if s.cfg.InUse != nil {
		if users := s.cfg.InUse(name); len(users) > 0 {
			users = slices.Clone(users)
			slices.Sort(users)
			return portlayer.VolumeInUse(name, users)
		}
	}
	if rec.Disk != "" {
		// The disk first: if the datastore refuses, the volume stays
		// whole. A crash before the record goes leaves a record whose
		// disk is gone; RemoveVolume then finds nothing to delete.
		if err := s.cfg.Disks.RemoveVolume(ctx, rec.Disk); err != nil {
			return fmt.Errorf("volume: remove %s: %w", name, err)
		}
	}
	dir := s.dir(rec)
	if err := os.Remove(filepath.Join(dir, recordFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("volume: remove %s: %w", name, err)
	}
	delete(s.vols, name)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("volume: remove %s: %w", name, err)
	}
	s.log.Info("volume removed", "volume", name)
	s.event("destroy", name)
	return nil
}
