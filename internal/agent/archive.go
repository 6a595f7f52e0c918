package agent

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
)

// ArchiveError is an archive operation the guest refused or that failed
// there: its kind (wire.ArchiveNotFound, …) and the guest's text. It is
// classified: NotFound, InvalidArgument (not a directory, bad archive,
// read-only destination) or Internal.
type ArchiveError struct {
	Kind, Message string
}

func (e *ArchiveError) Error() string { return e.Message }

// Unwrap classifies the error.
func (e *ArchiveError) Unwrap() error {
	switch e.Kind {
	case wire.ArchiveNotFound:
		return errdefs.ErrNotFound
	case wire.ArchiveNotDir, wire.ArchiveInvalid, wire.ArchiveReadOnly:
		return errdefs.ErrInvalidArgument
	}
	return errdefs.ErrInternal
}

func archiveError(payload []byte) error {
	var ae wire.ArchiveError
	if json.Unmarshal(payload, &ae) != nil || ae.Kind == "" {
		return &ArchiveError{Kind: wire.ArchiveFailed, Message: string(payload)}
	}
	return &ArchiveError{Kind: ae.Kind, Message: ae.Message}
}

// StatPath stats a container path (docker cp's HEAD).
func (c *Client) StatPath(ctx context.Context, path string) (wire.PathStat, error) {
	var st wire.PathStat
	ok, resp, err := c.conn.SendRequest(ctx, wire.RequestArchiveStat, true, wire.Encode(wire.ArchivePath{Path: path}))
	if err != nil {
		return st, fmt.Errorf("agent: stat: %w: %w", err, errdefs.ErrUnavailable)
	}
	if !ok {
		return st, archiveError(resp)
	}
	err = json.Unmarshal(resp, &st)
	return st, err
}

// archiveChannel is an open archive channel and the guest's final word.
type archiveChannel struct {
	ch      link.Channel
	done    chan struct{}
	mu      sync.Mutex
	outcome error
	got     bool
}

func (c *Client) openArchive(ctx context.Context, kind string, extra []byte) (*archiveChannel, error) {
	ch, reqs, err := c.conn.OpenChannel(ctx, kind, extra)
	if err != nil {
		var oce *link.OpenChannelError
		if errors.As(err, &oce) && oce.Reason == link.ConnectionFailed {
			return nil, archiveError([]byte(oce.Message))
		}
		return nil, fmt.Errorf("agent: %s: %w: %w", kind, err, errdefs.ErrUnavailable)
	}
	a := &archiveChannel{ch: ch, done: make(chan struct{})}
	go func() {
		for req := range reqs {
			if req.Type == wire.RequestArchiveDone {
				var ae wire.ArchiveError
				a.mu.Lock()
				a.got = true
				if json.Unmarshal(req.Payload, &ae) == nil && ae.Kind != "" {
					a.outcome = &ArchiveError{Kind: ae.Kind, Message: ae.Message}
				}
				a.mu.Unlock()
			}
			_ = req.Reply(false, nil)
		}
		close(a.done)
	}()
	// A context that ends closes the channel, which ends the guest's side.
	go func() {
		select {
		case <-ctx.Done():
			ch.Close()
		case <-a.done:
		}
	}()
	return a, nil
}

// result waits for the guest's final word.
func (a *archiveChannel) result() error {
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.got {
		return fmt.Errorf("agent: archive ended without a result: %w", errdefs.ErrUnavailable)
	}
	return a.outcome
}

// archiveReader reads a guest's tar stream; at its end it reports the
// guest's error, if any, instead of io.EOF, so a cut stream never looks
// complete.
type archiveReader struct{ a *archiveChannel }

func (r archiveReader) Read(p []byte) (int, error) {
	n, err := r.a.ch.Read(p)
	if errors.Is(err, io.EOF) {
		if rerr := r.a.result(); rerr != nil {
			return n, rerr
		}
	}
	return n, err
}

func (r archiveReader) Close() error { return r.a.ch.Close() }

// GetArchive opens a tar stream from the guest (docker cp out, export, a
// commit's layer). A path that does not exist fails here, before any
// byte (NotFound).
func (c *Client) GetArchive(ctx context.Context, get wire.ArchiveGet) (io.ReadCloser, error) {
	a, err := c.openArchive(ctx, wire.ChannelArchiveGet, wire.Encode(get))
	if err != nil {
		return nil, err
	}
	return archiveReader{a}, nil
}

// PutArchive unpacks the tar stream r into a container directory.
func (c *Client) PutArchive(ctx context.Context, put wire.ArchivePut, r io.Reader) error {
	a, err := c.openArchive(ctx, wire.ChannelArchivePut, wire.Encode(put))
	if err != nil {
		return err
	}
	defer a.ch.Close()
	copyErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(a.ch, r)
		_ = a.ch.CloseWrite()
		copyErr <- err
	}()
	// The guest may answer (an error) before it read everything.
	_, _ = io.Copy(io.Discard, a.ch)
	res := a.result()
	if res != nil {
		return res
	}
	if err := <-copyErr; err != nil {
		return fmt.Errorf("agent: put archive: read: %w", err)
	}
	return nil
}

// DiskUpload is an archive that the guest unpacks from a disk while the
// host writes it there (wire.ChannelArchivePutDisk): Mark after each
// write, Rest to send what is left on the channel, Finish to end it.
type DiskUpload struct {
	a    *archiveChannel
	rest bool
}

// PutArchiveDisk starts unpacking the tar stream that the disk with serial
// put.Serial (the VM's transfer disk) receives from offset 0. The upload
// ends only with Finish, not with ctx: the guest reads the disk until it
// has answered, so the caller must not change the disk before Finish
// returns. NotImplemented if the guest agent predates it (the caller then
// sends the stream with PutArchive); otherwise PutArchive's errors.
func (c *Client) PutArchiveDisk(ctx context.Context, put wire.ArchivePutDisk) (*DiskUpload, error) {
	a, err := c.openArchive(context.WithoutCancel(ctx), wire.ChannelArchivePutDisk, wire.Encode(put))
	if err != nil {
		var oce *link.OpenChannelError
		if errors.As(err, &oce) && oce.Reason == link.UnknownChannelType {
			return nil, fmt.Errorf("agent: %s refused: %w", wire.ChannelArchivePutDisk, errdefs.ErrNotImplemented)
		}
		return nil, err
	}
	// The guest writes nothing but may end early (a refusal): whatever
	// it sends is dropped until the channel closes.
	go func() { _, _ = io.Copy(io.Discard, a.ch) }()
	return &DiskUpload{a: a}, nil
}

func (u *DiskUpload) mark(v uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	_, err := u.a.ch.Write(b[:])
	return err
}

// Mark tells the guest that the disk holds the stream's first n bytes.
// An error once the guest has ended the channel (Finish says why).
func (u *DiskUpload) Mark(n int64) error { return u.mark(uint64(n)) }

// Rest returns the writer for the rest of the stream, sent on the channel
// after the last Mark (wire.ArchiveDiskRest).
func (u *DiskUpload) Rest() (io.Writer, error) {
	if !u.rest {
		if err := u.mark(wire.ArchiveDiskRest); err != nil {
			return nil, err
		}
		u.rest = true
	}
	return u.a.ch, nil
}

// Finish ends the upload: complete, the stream ends at the last Mark
// (wire.ArchiveDiskEnd) or with the data sent after Rest; otherwise the
// host gave up and the guest's unpack fails where it is (or, after Rest,
// ends as a cut stream does). It waits for the guest's answer (the
// guest no longer reads the disk then) and returns it: PutArchive's
// errors.
func (u *DiskUpload) Finish(complete bool) error {
	if complete && !u.rest {
		_ = u.mark(wire.ArchiveDiskEnd)
	}
	_ = u.a.ch.CloseWrite()
	err := u.a.result()
	u.a.ch.Close()
	return err
}

// Changes lists what differs from the image (docker diff).
func (c *Client) Changes(ctx context.Context) ([]wire.Change, error) {
	a, err := c.openArchive(ctx, wire.ChannelChanges, nil)
	if err != nil {
		return nil, err
	}
	defer a.ch.Close()
	b, err := io.ReadAll(io.LimitReader(a.ch, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("agent: changes: %w: %w", err, errdefs.ErrUnavailable)
	}
	if err := a.result(); err != nil {
		return nil, err
	}
	var out []wire.Change
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("agent: changes: %w", err)
	}
	return out, nil
}
