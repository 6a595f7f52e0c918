package link

import (
	"encoding/binary"
	"io"
)

// yamuxHeaderBytes is a yamux frame's header: version, type, flags,
// stream ID, length (github.com/hashicorp/yamux spec.md).
const yamuxHeaderBytes = 12

// yamuxTypeData is yamux's data frame type, the only one with a body.
const yamuxTypeData = 0

// coalescer joins each yamux data frame's header with its body into one
// write. yamux's send loop (its only writer) writes a frame's header and
// its body separately; on a virtio-serial port every write is a buffer on
// the virtqueue and a notification of the VMM, which under emulation costs
// about as much as the bytes themselves. Reads pass through.
type coalescer struct {
	io.ReadWriteCloser
	buf     []byte
	pending bool // buf holds a data header whose body comes next
}

func (c *coalescer) Write(b []byte) (int, error) {
	if c.pending {
		c.pending = false
		c.buf = append(c.buf[:yamuxHeaderBytes], b...)
		if _, err := c.ReadWriteCloser.Write(c.buf); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	if len(b) == yamuxHeaderBytes && b[1] == yamuxTypeData && binary.BigEndian.Uint32(b[8:]) > 0 {
		c.buf = append(c.buf[:0], b...)
		c.pending = true
		return len(b), nil
	}
	return c.ReadWriteCloser.Write(b)
}
