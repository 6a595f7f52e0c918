package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/hypervisor"
)

// A template directory holds, once SaveTemplate has finished:
//
//	template.json     the manifest: key, format, when saved (written last)
//	memory            guest RAM (MemoryMiB, sparse): the guest as saved
//	state             device state (QEMU migration stream without RAM)
//	placeholder.img   1 MiB empty raw disk the template's disk slots used
//	placeholder/      empty directory its share slots used
//
// Restored VMs map memory privately (copy-on-write): the pages a clone
// never writes stay one copy in the host's page cache for all clones.
const (
	manifestFile    = "template.json"
	memoryFile      = "memory"
	stateFile       = "state"
	placeholderDisk = "placeholder.img"
	placeholderDir  = "placeholder"
)

// templateFormat is bumped whenever the device layout argv builds changes
// in a way a saved template cannot follow: a template of another format
// is not restored.
const templateFormat = 4

// placeholderBytes is the size of the placeholder disk: any size will do,
// as the guest must not probe it before the save.
const placeholderBytes = 1 << 20

// migrationPoll is how often SaveTemplate asks QEMU whether the save has
// finished (it takes ~60 ms for a 256 MiB guest, RAM excluded).
const migrationPoll = 10 * time.Millisecond

// ignoreShared is migrate-set-capabilities' argument that leaves RAM
// backed by a shared file out of the migration stream (QEMU QMP reference,
// MigrationCapability x-ignore-shared).
var ignoreShared = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// manifest is template.json.
type manifest struct {
	Key    string    `json:"key"`
	Format int       `json:"format"`
	Saved  time.Time `json:"saved"`
}

// TemplateKey implements hypervisor.Templater: the first 16 bytes of a
// SHA-256, in hex (32 characters), over the template format, the QEMU
// binary (path, size, modification time), the accelerator, the guest TSC
// rate, the contents of Kernel and Initrd, the driver's own kernel
// arguments and Cmdline, MemoryMiB, CPUs,
// ChannelName, the number of disks, NICs and shares and whether the
// balloon reports free pages (Config.RAMShim). Unavailable if
// the kernel or initrd cannot be read.
func (d *Driver) TemplateKey(spec hypervisor.Spec) (string, error) {
	h := sha256.New()
	qemu, err := d.fileID(d.cfg.Binary, false)
	if err != nil {
		return "", err
	}
	kernel, err := d.fileID(spec.Kernel, true)
	if err != nil {
		return "", err
	}
	initrd, err := d.fileID(spec.Initrd, true)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "format=%d\nqemu=%s\naccel=%s\ntsc=%d\nkernel=%s\ninitrd=%s\nbase=%q\ncmdline=%q\nmem=%d\ncpus=%d\nchannel=%q\ndisks=%d\nnics=%d\nshares=%d\nreporting=%t\n",
		templateFormat, qemu, d.accel, d.tscKHz, kernel, initrd, driverCmdline(d.accel), spec.Cmdline, spec.MemoryMiB, spec.CPUs, spec.ChannelName,
		len(spec.Disks), len(spec.NICs), len(spec.Shares), d.cfg.RAMShim != "")
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// fileIDs caches content digests by path, size and modification time, so
// a key costs a stat per file, not a read of a 26 MB kernel.
type fileIDs struct {
	mu sync.Mutex
	m  map[string]string
}

// fileID identifies a file: its path, size and modification time, and
// with content its SHA-256 (cached while those three stay the same).
func (d *Driver) fileID(path string, content bool) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("qemu: template key: %w: %w", err, errdefs.ErrUnavailable)
	}
	stamp := path + "|" + strconv.FormatInt(st.Size(), 10) + "|" + strconv.FormatInt(st.ModTime().UnixNano(), 10)
	if !content {
		return stamp, nil
	}
	d.ids.mu.Lock()
	defer d.ids.mu.Unlock()
	if id, ok := d.ids.m[stamp]; ok {
		return id, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("qemu: template key: %w: %w", err, errdefs.ErrUnavailable)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("qemu: template key: %w: %w", err, errdefs.ErrUnavailable)
	}
	id := hex.EncodeToString(h.Sum(nil))
	if d.ids.m == nil {
		d.ids.m = map[string]string{}
	}
	d.ids.m[stamp] = id
	return id, nil
}

// SaveTemplate implements hypervisor.Templater. The template VM's RAM is
// dir/memory, mapped shared so the guest's writes land in it; disks are
// read-only placeholders, NICs have no backend, shares are an empty
// directory. After ready, QMP migrate-set-capabilities x-ignore-shared
// and "migrate" to exec:cat > dir/state (QEMU QMP reference), and the
// VMM is killed.
func (d *Driver) SaveTemplate(ctx context.Context, spec hypervisor.Spec, dir string, ready func(ctx context.Context, channel net.Conn) error) error {
	key, err := d.TemplateKey(spec)
	if err != nil {
		return err
	}
	spec.Disks = append([]hypervisor.Disk(nil), spec.Disks...)
	spec.NICs = append([]hypervisor.NIC(nil), spec.NICs...)
	spec.Shares = append([]hypervisor.Share(nil), spec.Shares...)
	disk, share := filepath.Join(dir, placeholderDisk), filepath.Join(dir, placeholderDir)
	for i := range spec.Disks {
		spec.Disks[i] = hypervisor.Disk{Path: disk, Format: "raw", ReadOnly: true, Serial: spec.Disks[i].Serial}
	}
	for i := range spec.NICs {
		spec.NICs[i].File = nil
	}
	for i := range spec.Shares {
		spec.Shares[i].Path, spec.Shares[i].ReadOnly = share, true
	}
	if err := os.MkdirAll(share, 0o700); err != nil {
		return fmt.Errorf("qemu: template: %w", err)
	}
	if err := writeSparse(disk, placeholderBytes); err != nil {
		return err
	}
	if err := validateShape(spec, true); err != nil {
		return err
	}
	mem := filepath.Join(dir, memoryFile)
	_ = os.Remove(mem)
	v, err := d.launch(ctx, spec, vmOptions{memPath: mem, memShared: true, noFreePageReporting: d.cfg.RAMShim == ""})
	if err != nil {
		return err
	}
	defer func() {
		_ = v.Kill()
		<-v.Done()
	}()
	if err := ready(ctx, v.Channel()); err != nil {
		return err
	}
	// No "stop" first: a migration of a running VM stops it itself at
	// the end and records it as running, so a restored VM runs as soon
	// as its state is loaded (one saved paused would wait for "cont").
	if _, err := v.execute(ctx, "migrate-set-capabilities", ignoreShared); err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if _, err := v.execute(ctx, "migrate", map[string]string{"uri": "exec:cat > " + shellQuote(tmp)}); err != nil {
		return err
	}
	if err := v.awaitMigration(ctx); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("qemu: template: %w", err)
	}
	if err := allocateOnTmpfs(mem, int64(spec.MemoryMiB)<<20); err != nil {
		return err
	}
	b, _ := json.Marshal(manifest{Key: key, Format: templateFormat, Saved: time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(dir, manifestFile), b, 0o600); err != nil {
		return fmt.Errorf("qemu: template: %w", err)
	}
	d.logger.Info("template saved", "vm", spec.Name, "key", key)
	return nil
}

// awaitMigration polls QMP query-migrate until the outgoing migration
// completed; Unavailable if it failed or was cancelled.
func (v *vm) awaitMigration(ctx context.Context) error {
	for {
		raw, err := v.query(ctx, "query-migrate")
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("qemu: QMP query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("qemu: template save %s: %s: %w", st.Status, st.ErrorDesc, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu: template save: %w: %w", ctx.Err(), errdefs.ErrUnavailable)
		case <-v.done:
			return fmt.Errorf("qemu: VMM ended while saving the template: %w", errdefs.ErrUnavailable)
		case <-time.After(migrationPoll):
		}
	}
}

// Restore implements hypervisor.Templater: QEMU starts with spec's
// devices, dir/memory mapped privately as its RAM and -incoming defer;
// then QMP migrate-set-capabilities x-ignore-shared and migrate-incoming
// exec:cat dir/state, and QEMU runs the guest once the state is loaded.
// A state that does not load makes QEMU exit (Unavailable), and a VM whose
// guest then does not answer is the caller's to kill.
func (d *Driver) Restore(ctx context.Context, spec hypervisor.Spec, dir string) (hypervisor.VM, error) {
	return d.restore(ctx, spec, dir, false)
}

// RestoreWarm implements hypervisor.WarmRestorer: Restore with each disk
// slot under a raw node that PlugDisks re-points. A slot whose Disk has
// a Path starts as that image (Format raw or qcow2: a rehearsal image
// the caller made for this VM); any other is a 1 MiB sparse placeholder
// (RuntimeDir/slotN.img). Slots are read-only as their Disk says.
// InvalidArgument for a slot image of another format.
func (d *Driver) RestoreWarm(ctx context.Context, spec hypervisor.Spec, dir string) (hypervisor.VM, error) {
	spec.Disks = append([]hypervisor.Disk(nil), spec.Disks...)
	for i, dk := range spec.Disks {
		if dk.Path != "" {
			if dk.Format != "raw" && dk.Format != "qcow2" {
				return nil, fmt.Errorf("qemu: warm disk slot %d: format %q, want raw or qcow2: %w", i, dk.Format, errdefs.ErrInvalidArgument)
			}
			continue
		}
		path := filepath.Join(spec.RuntimeDir, fmt.Sprintf("slot%d.img", i))
		if err := writeSparse(path, placeholderBytes); err != nil {
			return nil, err
		}
		spec.Disks[i].Path, spec.Disks[i].Format = path, "raw"
	}
	return d.restore(ctx, spec, dir, true)
}

// PlugDisks implements hypervisor.DiskPlugger: for disk i, QMP
// blockdev-add of its image (a qcow2 node over its file, or the raw
// file's node) as node ctrN, blockdev-reopen of the raw node diskN with
// ctrN as its file child, and blockdev-del of the placeholder's node
// (QEMU QMP reference; blockdev-reopen is stable since QEMU 6.1); the
// slot's image file is then removed. The device reads its capacity from
// the new image when the guest binds it, so the guest must not have the
// slot's device bound (tether binds it only at its claim).
func (v *vm) PlugDisks(ctx context.Context, disks []hypervisor.Disk) error {
	v.mu.Lock()
	slots := v.slots
	v.slots = nil
	v.mu.Unlock()
	if len(disks) != len(slots) {
		return fmt.Errorf("qemu: %d disks for %d slots: %w", len(disks), len(slots), errdefs.ErrInvalidArgument)
	}
	for i, dk := range disks {
		if dk.ReadOnly != slots[i].ReadOnly || dk.Serial != slots[i].Serial || (dk.Format != "raw" && dk.Format != "qcow2") {
			return fmt.Errorf("qemu: disk %d (%s, read-only %t, serial %q) does not fit its slot (read-only %t, serial %q): %w",
				i, dk.Format, dk.ReadOnly, dk.Serial, slots[i].ReadOnly, slots[i].Serial, errdefs.ErrInvalidArgument)
		}
	}
	for i, dk := range disks {
		node := fmt.Sprintf("ctr%d", i)
		file := map[string]any{"driver": "file", "filename": dk.Path, "read-only": dk.ReadOnly, "discard": "unmap"}
		add := file
		if dk.Format == "qcow2" {
			add = map[string]any{"driver": "qcow2", "file": file, "read-only": dk.ReadOnly, "discard": "unmap"}
		}
		add["node-name"] = node
		if _, err := v.execute(ctx, "blockdev-add", add); err != nil {
			return fmt.Errorf("qemu: plug disk %d: %w", i, err)
		}
		reopen := map[string]any{"options": []map[string]any{{"driver": "raw", "node-name": fmt.Sprintf("disk%d", i), "file": node, "read-only": dk.ReadOnly, "discard": "unmap"}}}
		if _, err := v.execute(ctx, "blockdev-reopen", reopen); err != nil {
			return fmt.Errorf("qemu: plug disk %d: %w", i, err)
		}
		if _, err := v.execute(ctx, "blockdev-del", map[string]string{"node-name": fmt.Sprintf("slot%d", i)}); err != nil {
			return fmt.Errorf("qemu: plug disk %d: %w", i, err)
		}
		_ = os.Remove(slots[i].Path)
	}
	return nil
}

func (d *Driver) restore(ctx context.Context, spec hypervisor.Spec, dir string, pluggable bool) (hypervisor.VM, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	key, err := d.TemplateKey(spec)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, fmt.Errorf("qemu: no template in %s: %w: %w", dir, err, errdefs.ErrFailedPrecondition)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil || m.Key != key || m.Format != templateFormat {
		return nil, fmt.Errorf("qemu: template in %s is not one for this VM (key %q, want %q): %w", dir, m.Key, key, errdefs.ErrFailedPrecondition)
	}
	state, mem := filepath.Join(dir, stateFile), filepath.Join(dir, memoryFile)
	for _, f := range []string{state, mem} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("qemu: template in %s: %w: %w", dir, err, errdefs.ErrFailedPrecondition)
		}
	}
	v, err := d.launch(ctx, spec, vmOptions{memPath: mem, incoming: true, noFreePageReporting: d.cfg.RAMShim == "", pluggable: pluggable})
	if err != nil {
		return nil, err
	}
	if pluggable {
		v.slots = spec.Disks
	}
	if _, err := v.execute(ctx, "migrate-set-capabilities", ignoreShared); err == nil {
		_, err = v.execute(ctx, "migrate-incoming", map[string]string{"uri": "exec:cat " + shellQuote(state)})
	}
	if err != nil {
		_ = v.Kill()
		<-v.Done()
		return nil, fmt.Errorf("qemu: restore %s: %w", spec.Name, err)
	}
	d.logger.Info("vm restoring", "vm", spec.Name, "pid", v.Pid(), "key", key)
	return v, nil
}

// writeSparse creates (or truncates) a sparse file of size bytes.
func writeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("qemu: template: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("qemu: template: %w", err)
	}
	return nil
}

// shellQuote quotes s for /bin/sh, which runs QEMU's exec: migration URIs.
func shellQuote(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, `'\''`...)
			continue
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

var (
	_ hypervisor.Templater    = (*Driver)(nil)
	_ hypervisor.WarmRestorer = (*Driver)(nil)
	_ hypervisor.DiskPlugger  = (*vm)(nil)
	_ hypervisor.DiskStaller  = (*vm)(nil)
	_ hypervisor.DiskStaller  = (*adopted)(nil)
)

// allocateOnTmpfs allocates the holes of the template's memory file at
// path (size bytes) when it is on a tmpfs, leaving its contents as they
// are. A restored VM maps the file privately, and a tmpfs allocates a
// page even for a read fault on a hole: on a full tmpfs that fault is a
// SIGBUS that kills the VM. Allocated now, every later fault finds its
// page. On a disk filesystem a hole reads as zeros without allocating,
// so nothing is done there.
func allocateOnTmpfs(path string, size int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("qemu: template: statfs %s: %w", path, err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("qemu: template: %w", err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		return fmt.Errorf("qemu: template: allocate its memory file on a tmpfs: %w", err)
	}
	return nil
}
