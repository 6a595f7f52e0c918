package tether

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

// transferChunk is the most one read(2) of the transfer disk asks for:
// one virtio-blk request the host's VMM serves at host speed, one
// interrupt in the guest.
const transferChunk = 1 << 20

// transferAlign is the alignment O_DIRECT needs of a block device read's
// buffer, offset and length (a page, above any logical block size).
const transferAlign = 4096

// diskStream is the tar stream of a wire.ChannelArchivePutDisk channel:
// read from a block device with O_DIRECT up to the host's last mark
// (nothing passes through the guest's page cache, which may hold pages
// of an image the host has since replaced, hypervisor.Transferrer), the
// marks and, after wire.ArchiveDiskRest, the rest of the stream read
// from marks, the channel. Marks that end without wire.ArchiveDiskEnd
// (or Rest) fail the read: the host gave the upload up.
type diskStream struct {
	f        *os.File
	marks    io.Reader
	buf      []byte // transferChunk bytes, aligned to transferAlign
	off, end int    // the unread part of buf
	consumed int64  // the stream's bytes returned so far
	mark     int64  // the stream's bytes on the disk
	rest     bool   // the rest is marks' data
	ended    bool   // the stream ends at mark (wire.ArchiveDiskEnd)
}

// openDiskStream opens the disk with serial (waiting for its device as
// findDisk does) for the stream that marks describe.
func openDiskStream(ctx context.Context, serial string, marks io.Reader) (*diskStream, error) {
	dev, err := findDisk(ctx, serial, false)
	if err != nil {
		return nil, err
	}
	return openDirect(dev, marks)
}

// openDirect opens path (a block device, or a file where its filesystem
// allows O_DIRECT) for the stream that marks describe.
func openDirect(path string, marks io.Reader) (*diskStream, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, fmt.Errorf("tether: open %s: %w", path, err)
	}
	raw := make([]byte, transferChunk+transferAlign)
	off := int(transferAlign-uintptr(unsafe.Pointer(&raw[0]))%transferAlign) % transferAlign
	return &diskStream{f: f, marks: marks, buf: raw[off : off+transferChunk : off+transferChunk]}, nil
}

func (d *diskStream) Read(p []byte) (int, error) {
	for {
		switch {
		case d.off < d.end:
			n := copy(p, d.buf[d.off:d.end])
			d.off += n
			d.consumed += int64(n)
			return n, nil
		case d.rest:
			return d.marks.Read(p)
		case d.consumed < d.mark:
			if err := d.fill(); err != nil {
				return 0, err
			}
		case d.ended:
			return 0, io.EOF
		default:
			var b [8]byte
			if _, err := io.ReadFull(d.marks, b[:]); err != nil {
				if errors.Is(err, io.EOF) {
					return 0, fmt.Errorf("tether: transfer disk: the host ended the upload after %d bytes, before its end: %w", d.mark, io.ErrUnexpectedEOF)
				}
				return 0, fmt.Errorf("tether: transfer disk: read mark: %w", err)
			}
			switch v := binary.BigEndian.Uint64(b[:]); {
			case v == wire.ArchiveDiskRest:
				d.rest = true
			case v == wire.ArchiveDiskEnd:
				d.ended = true
			case v < uint64(d.mark) || v > 1<<62:
				return 0, fmt.Errorf("tether: transfer disk: mark %d after %d", v, d.mark)
			default:
				d.mark = int64(v)
			}
		}
	}
}

// fill reads the disk from the aligned block that holds the next byte,
// up to the mark (rounded up to whole blocks; what lies past the mark is
// not used).
func (d *diskStream) fill() error {
	start := d.consumed &^ (transferAlign - 1)
	end := (d.mark + transferAlign - 1) &^ (transferAlign - 1)
	want := min(int64(len(d.buf)), end-start)
	k, err := d.f.ReadAt(d.buf[:want], start)
	if int64(k) <= d.consumed-start {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("tether: read transfer disk at %d: %w", start, err)
	}
	d.off, d.end = int(d.consumed-start), int(min(int64(k), d.mark-start))
	return nil
}

// Close closes the device.
func (d *diskStream) Close() error { return d.f.Close() }
