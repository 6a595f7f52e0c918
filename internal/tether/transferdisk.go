package tether

import (
	"context"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// transferChunk is how much of the transfer disk one read(2) asks for:
// one virtio-blk request the host's VMM serves at host speed, one
// interrupt in the guest.
const transferChunk = 1 << 20

// transferAlign is the alignment O_DIRECT needs of a block device read's
// buffer, offset and length (a page, above any logical block size).
const transferAlign = 4096

// diskStream reads the first n bytes of a block device with O_DIRECT:
// nothing passes through the guest's page cache, which may hold pages of
// an image the host has since replaced (hypervisor.Transferrer).
type diskStream struct {
	f         *os.File
	buf       []byte // transferChunk bytes, aligned to transferAlign
	off, end  int    // the unread part of buf
	pos, left int64  // the next read's offset; the stream's bytes not yet read
}

// openDiskStream opens the disk with serial for the stream of n bytes at
// its start (waiting for its device as findDisk does).
func openDiskStream(ctx context.Context, serial string, n int64) (*diskStream, error) {
	if n < 0 {
		return nil, fmt.Errorf("tether: disk stream of %d bytes", n)
	}
	dev, err := findDisk(ctx, serial, false)
	if err != nil {
		return nil, err
	}
	return openDirect(dev, n)
}

// openDirect opens path (a block device, or a file where its filesystem
// allows O_DIRECT) for the stream of n bytes at its start.
func openDirect(path string, n int64) (*diskStream, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, fmt.Errorf("tether: open %s: %w", path, err)
	}
	raw := make([]byte, transferChunk+transferAlign)
	off := int(transferAlign-uintptr(unsafe.Pointer(&raw[0]))%transferAlign) % transferAlign
	return &diskStream{f: f, buf: raw[off : off+transferChunk : off+transferChunk], left: n}, nil
}

func (d *diskStream) Read(p []byte) (int, error) {
	if d.off == d.end {
		if d.left == 0 {
			return 0, io.EOF
		}
		// Whole aligned blocks: the last read rounds up past the stream
		// into the zeros behind it.
		want := min(int64(len(d.buf)), (d.left+transferAlign-1)/transferAlign*transferAlign)
		k, err := d.f.ReadAt(d.buf[:want], d.pos)
		if k == 0 {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("tether: read transfer disk at %d: %w", d.pos, err)
		}
		d.pos += int64(k)
		take := min(int64(k), d.left)
		d.left -= take
		d.off, d.end = 0, int(take)
	}
	n := copy(p, d.buf[d.off:d.end])
	d.off += n
	return n, nil
}

// Close closes the device.
func (d *diskStream) Close() error { return d.f.Close() }
