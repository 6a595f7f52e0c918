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

// transferDir, under Config.Root, holds archives spooled for a transfer
// disk; a daemon that starts empties it (what is there was cut short).
const transferDir = "transfers"

// transferClearTimeout bounds putting the empty image back after a
// transfer.
const transferClearTimeout = 30 * time.Second

// spooled is the start of an archive read from the client: held in head
// when shorter than transferMinBytes, else written to file (size bytes,
// head included), and the byte read after a full file, if any.
// complete: the client's stream ended within it.
type spooled struct {
	head     []byte
	file     *os.File
	size     int64
	extra    []byte
	complete bool
}

// rest returns the whole archive again for the channel: what was spooled,
// then what r still holds.
func (sp *spooled) rest(r io.Reader) io.Reader {
	if sp.file == nil {
		return io.MultiReader(bytes.NewReader(sp.head), r)
	}
	return io.MultiReader(io.NewSectionReader(sp.file, 0, sp.size), bytes.NewReader(sp.extra), r)
}

// remove deletes the spool file, if any.
func (sp *spooled) remove() {
	if sp.file != nil {
		sp.file.Close()
		_ = os.Remove(sp.file.Name())
	}
}

// errWriter records a write error, so that a spool that fills the VCH's
// disk falls back to the channel while a client that fails fails the copy.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// spool reads the archive's start from r: up to minBytes into memory,
// and if it is longer, up to maxBytes (hypervisor.TransferDiskBytes) into
// a file in dir. A read error of r is returned; a spool file that cannot be
// made or written leaves the archive incomplete (it then goes on the
// channel).
func spool(dir string, r io.Reader, minBytes, maxBytes int64) (*spooled, error) {
	sp := &spooled{}
	var head bytes.Buffer
	n, err := io.CopyN(&head, r, minBytes)
	sp.head = head.Bytes()
	if errors.Is(err, io.EOF) || (err == nil && n < minBytes) {
		sp.complete = true
		return sp, nil
	}
	if err != nil {
		return sp, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return sp, nil
	}
	f, err := os.CreateTemp(dir, "archive-*.tar")
	if err != nil {
		return sp, nil
	}
	sp.file = f
	w := &errWriter{w: f}
	k, err := w.Write(sp.head)
	sp.size = int64(k)
	if err != nil {
		return sp, nil
	}
	sp.head = nil
	m, err := io.CopyN(w, r, maxBytes-sp.size)
	sp.size += m
	switch {
	case w.err != nil:
		return sp, nil
	case errors.Is(err, io.EOF):
		sp.complete = true
		return sp, nil
	case err != nil:
		return sp, err
	}
	// Full: does the stream end here?
	var one [1]byte
	k, err = io.ReadFull(r, one[:])
	sp.extra = one[:k]
	switch {
	case errors.Is(err, io.EOF):
		sp.complete = true
		return sp, nil
	case err != nil:
		return sp, err
	}
	return sp, nil // more than a transfer disk holds: the rest on the channel
}

// putByDisk unpacks the spooled archive in the guest from the VM's
// transfer disk: the disk gets the spool file as its image, tether reads
// it from there with direct I/O and unpacks, and the disk gets its empty
// image back (in the background, before the next transfer). One transfer
// at a time per container. NotImplemented or FailedPrecondition when the
// guest agent or the VM cannot (the caller sends the archive on the
// channel); otherwise the guest's errors, as PutArchive's.
func (s *Service) putByDisk(ctx context.Context, c *container, g *agent.Client, t hypervisor.Transferrer, put wire.ArchivePut, sp *spooled) error {
	c.transferMu.Lock()
	if err := t.LoadTransfer(ctx, sp.file.Name()); err != nil {
		c.transferMu.Unlock()
		return err
	}
	err := g.PutArchiveDisk(ctx, wire.ArchivePutDisk{ArchivePut: put, Serial: hypervisor.TransferDiskSerial, Bytes: sp.size})
	go func() {
		defer c.transferMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), transferClearTimeout)
		defer cancel()
		if err := t.LoadTransfer(ctx, ""); err != nil {
			s.logger.Debug("transfer disk not emptied", "container", c.id, "err", err)
		}
	}()
	return err
}

// putArchive unpacks r in the guest: on the transfer disk where the VM
// has one and the archive is large enough, else on the channel.
func (s *Service) putArchive(ctx context.Context, c *container, g *agent.Client, vm hypervisor.VM, put wire.ArchivePut, r io.Reader) error {
	t, ok := vm.(hypervisor.Transferrer)
	if !ok {
		return g.PutArchive(ctx, put, r)
	}
	sp, err := spool(filepath.Join(s.cfg.Root, transferDir), r, transferMinBytes, hypervisor.TransferDiskBytes)
	defer sp.remove()
	if err != nil {
		return fmt.Errorf("compute: put archive: read: %w", err)
	}
	if sp.complete && sp.file != nil {
		err := s.putByDisk(ctx, c, g, t, put, sp)
		if !errdefs.IsNotImplemented(err) && !errdefs.IsFailedPrecondition(err) {
			return err
		}
		s.logger.Debug("archive sent on the channel, not the transfer disk", "container", c.id, "err", err)
	}
	return g.PutArchive(ctx, put, sp.rest(r))
}
