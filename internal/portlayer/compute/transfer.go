package compute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/hypervisor"
)

// transferMinBytes is the smallest archive that goes to the guest on the
// VM's transfer disk rather than on the channel: below it the disk's
// changes (QMP round trips) and the guest's first bind of the device cost
// more than the channel takes for the whole archive.
const transferMinBytes = 4 << 20

// transferMarkBytes is how much of the archive the host writes to the
// transfer disk's image between two marks (wire.ChannelArchivePutDisk):
// each mark lets the guest read that much in one request.
const transferMarkBytes = 1 << 20

// transferDir, under Config.Root, holds the archives being written to
// transfer disks; a daemon that starts empties it (what is there was cut
// short).
const transferDir = "transfers"

// transferClearTimeout bounds putting the empty image back after a
// transfer.
const transferClearTimeout = 30 * time.Second

// errNoTransfer is putByDisk's error when the archive must go on the
// channel instead; nothing of it past the head has been read then.
var errNoTransfer = errors.New("compute: no transfer disk")

// putArchive unpacks r in the guest: on the transfer disk where the VM
// has one and the archive is transferMinBytes or more, else on the
// channel.
func (s *Service) putArchive(ctx context.Context, c *container, g *agent.Client, vm hypervisor.VM, put wire.ArchivePut, r io.Reader) error {
	t, ok := vm.(hypervisor.Transferrer)
	if !ok {
		return g.PutArchive(ctx, put, r)
	}
	var head bytes.Buffer
	n, err := io.CopyN(&head, r, transferMinBytes)
	if errors.Is(err, io.EOF) || (err == nil && n < transferMinBytes) {
		return g.PutArchive(ctx, put, &head)
	}
	if err != nil {
		return fmt.Errorf("compute: put archive: read: %w", err)
	}
	err = s.putByDisk(ctx, c, g, t, put, head.Bytes(), r)
	if errors.Is(err, errNoTransfer) {
		s.logger.Debug("archive sent on the channel, not the transfer disk", "container", c.id, "err", err)
		return g.PutArchive(ctx, put, io.MultiReader(&head, r))
	}
	return err
}

// putByDisk unpacks the archive (head, then the rest of r) in the guest
// from the VM's transfer disk: the disk gets a new file under the VCH
// root as its image, the host writes the archive there as it reads it
// from r and marks its progress on the channel, tether reads up to each
// mark with direct I/O and unpacks; past hypervisor.TransferDiskBytes (or
// if the file cannot be written) the rest goes on the channel.
//
// The disk is one container's at a time: a copy that finds it in use
// goes on the channel. It gets its empty image back only once the guest
// has answered (it reads the disk until then), in the background when
// the client has gone (ctx done) or r failed: the request returns at
// once, the guest's unpack fails at the last mark.
//
// errNoTransfer (wrapped) when the disk is in use or the guest agent or
// the VM cannot, before anything past head was read; otherwise the
// guest's errors, as PutArchive's.
func (s *Service) putByDisk(ctx context.Context, c *container, g *agent.Client, t hypervisor.Transferrer, put wire.ArchivePut, head []byte, r io.Reader) error {
	if !c.transferMu.TryLock() {
		return fmt.Errorf("%w: in use by another copy", errNoTransfer)
	}
	locked := true
	defer func() {
		if locked {
			c.transferMu.Unlock()
		}
	}()
	dir := filepath.Join(s.cfg.Root, transferDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: %w", errNoTransfer, err)
	}
	f, err := os.CreateTemp(dir, "archive-*.tar")
	if err != nil {
		return fmt.Errorf("%w: %w", errNoTransfer, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(head); err != nil {
		return fmt.Errorf("%w: %w", errNoTransfer, err)
	}
	if err := t.LoadTransfer(ctx, f.Name()); err != nil {
		return fmt.Errorf("%w: %w", errNoTransfer, err)
	}
	// From here the disk holds f: the goroutine that puts the empty image
	// back also unlocks.
	locked = false
	release := func() {
		defer c.transferMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), transferClearTimeout)
		defer cancel()
		if err := t.LoadTransfer(ctx, ""); err != nil {
			s.logger.Debug("transfer disk not emptied", "container", c.id, "err", err)
		}
	}
	up, err := g.PutArchiveDisk(ctx, wire.ArchivePutDisk{ArchivePut: put, Serial: hypervisor.TransferDiskSerial})
	if err != nil {
		go release()
		if errdefs.IsNotImplemented(err) {
			return fmt.Errorf("%w: %w", errNoTransfer, err)
		}
		return err
	}
	start := time.Now()
	written, readErr := s.writeTransfer(c, up, f, int64(len(head)), r)
	done := make(chan error, 1)
	go func() {
		err := up.Finish(readErr == nil && ctx.Err() == nil)
		s.logger.Debug("archive unpacked from the transfer disk", "container", c.id, "disk_bytes", written,
			"took_ms", time.Since(start).Milliseconds(), "err", err)
		done <- err
		release()
	}()
	if readErr != nil {
		return readErr
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("compute: put archive: %w", ctx.Err())
	}
}

// writeTransfer writes the archive's rest from r into f (the transfer
// disk's image, holding written bytes), marking each MiB on up; past
// hypervisor.TransferDiskBytes or a failed write, the rest goes on the
// channel (sendRest). It returns the bytes on the disk and r's error: a
// read that fails, short of r's io.EOF, is the client's.
func (s *Service) writeTransfer(c *container, up *agent.DiskUpload, f *os.File, written int64, r io.Reader) (int64, error) {
	if up.Mark(written) != nil {
		return written, nil // the guest ended early: Finish says why
	}
	buf := make([]byte, transferMarkBytes)
	for {
		k, err := readChunk(r, buf)
		if k > 0 {
			if written+int64(k) > hypervisor.TransferDiskBytes {
				return written, s.sendRest(up, buf[:k], r)
			}
			if _, werr := f.WriteAt(buf[:k], written); werr != nil {
				s.logger.Debug("transfer disk image not written; the rest on the channel", "container", c.id, "err", werr)
				return written, s.sendRest(up, buf[:k], r)
			}
			written += int64(k)
			if up.Mark(written) != nil {
				return written, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return written, nil
		}
		if err != nil {
			return written, fmt.Errorf("compute: put archive: read: %w", err)
		}
	}
}

// readChunk fills buf from r as io.ReadFull does, but returns io.EOF
// only for r's own end (a body cut short, io.ErrUnexpectedEOF from r,
// stays an error).
func readChunk(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// sendRest sends pending and the rest of r on the upload's channel. A
// read error of r is returned; a write error means the guest ended the
// channel, which Close reports.
func (s *Service) sendRest(up *agent.DiskUpload, pending []byte, r io.Reader) error {
	w, err := up.Rest()
	if err != nil {
		return nil
	}
	if _, err := w.Write(pending); err != nil {
		return nil
	}
	buf := pending[:cap(pending)]
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("compute: put archive: read: %w", err)
		}
	}
}
