// Package link is the transport of tether's protocol from version 3 on: the
// connection model of SSH's connection protocol (RFC 4254: global requests,
// channels with extra data, data and extended data, EOF, channel requests
// with replies, close) without SSH's transport layer, on a byte stream that
// needs framing and flow control but neither encryption nor
// authentication: a VM's private virtio-serial port, reachable only through
// its VMM.
//
// A frame is a type, a length and a payload. The types:
// [frameOpen] (a channel: its type and extra data), answered by
// [frameOpenConfirm] or [frameOpenFailure]; after a confirmation both
// sides send data ([frameData] for stdout-like data, [frameExtended] for
// stderr), [frameEOF] when they will send no more data, and channel
// requests ([frameRequest], answered in order by [frameSuccess] or
// [frameFailure] when a reply is wanted).
//
// Two framings carry them ([Version]):
//
//   - [V3]: streams and flow control are yamux's
//     (github.com/hashicorp/yamux: one stream per channel or global
//     request, a receive window per stream), and each stream carries
//     frames of type (1 byte) | payload length (4 bytes, big-endian) |
//     payload. The first frame of a stream is [frameOpen] or a global
//     [frameRequest]; a stream's end (yamux's FIN) is the channel's close;
//     a global request's stream carries the request, its reply, and ends.
//   - [V4]: the frames go on the byte stream itself, each naming its
//     channel or global request: type (1 byte) | ID (4 bytes) | payload
//     length (4 bytes) | payload, both big-endian. Global requests and
//     their replies are [frameGlobalRequest], [frameGlobalSuccess] and
//     [frameGlobalFailure]; a channel's close is [frameClose], answered by
//     the peer's own; flow control is a window per channel (data and
//     extended data together, as in SSH, RFC 4254 §5.2) that the receiver
//     tops up with [frameCredit] as its reader consumes. One goroutine
//     reads the byte stream and writers write their frames themselves,
//     one at a time: on a guest's one emulated vCPU yamux's per-frame
//     goroutine handoffs and timers cost more than the bytes.
//
// Everything sent on one channel arrives in the order it was sent, so
// output written before an exit status always arrives before it.
package link

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Version is a link framing: the wire protocol version that uses it.
type Version int

// The framings (see the package doc).
const (
	V3 Version = 3 // link's frames on yamux streams
	V4 Version = 4 // link's frames on the byte stream, with channel IDs
)

// Conn is one end of a link over a byte stream. Safe for concurrent use.
type Conn struct {
	t conn
}

// conn is what each framing implements.
type conn interface {
	SendRequest(ctx context.Context, name string, wantReply bool, payload []byte) (bool, []byte, error)
	OpenChannel(ctx context.Context, kind string, extra []byte) (Channel, <-chan *Request, error)
	Close() error
	Wait() error
}

// Client starts the host's end on rwc in framing v (the side that opens
// channels and requests with odd IDs). The returned channels deliver the
// peer's channel opens and global requests; both close when the
// connection ends. They must be served: an unserved one stops the
// connection's reads. An error only for an unknown v.
func Client(rwc io.ReadWriteCloser, v Version) (*Conn, <-chan NewChannel, <-chan *Request, error) {
	return newConn(rwc, v, true)
}

// Server starts the guest's end on rwc; see Client.
func Server(rwc io.ReadWriteCloser, v Version) (*Conn, <-chan NewChannel, <-chan *Request, error) {
	return newConn(rwc, v, false)
}

func newConn(rwc io.ReadWriteCloser, v Version, client bool) (*Conn, <-chan NewChannel, <-chan *Request, error) {
	switch v {
	case V3:
		start := yamuxServer
		if client {
			start = yamuxClient
		}
		c, chans, reqs, err := start(rwc)
		if err != nil {
			return nil, nil, nil, err
		}
		return &Conn{c}, chans, reqs, nil
	case V4:
		c := startFrames(rwc, client)
		return &Conn{c}, c.newChans, c.reqs, nil
	default:
		return nil, nil, nil, fmt.Errorf("link: no framing v%d", v)
	}
}

// SendRequest sends a global request, bounded by ctx; with wantReply it
// returns the peer's answer and its payload. ErrClosed (wrapped) when the
// connection has ended; ErrTooLarge (wrapped) for a payload over
// MaxFrameBytes in V4 (in V3 the peer ends the request's stream).
func (c *Conn) SendRequest(ctx context.Context, name string, wantReply bool, payload []byte) (bool, []byte, error) {
	return c.t.SendRequest(ctx, name, wantReply, payload)
}

// OpenChannel opens a channel of the given type with extra data, bounded
// by ctx: the peer accepts it, or rejects it (*OpenChannelError).
// ErrClosed (wrapped) when the connection has ended.
func (c *Conn) OpenChannel(ctx context.Context, kind string, extra []byte) (Channel, <-chan *Request, error) {
	return c.t.OpenChannel(ctx, kind, extra)
}

// Close ends the connection and every channel on it. Idempotent.
func (c *Conn) Close() error { return c.t.Close() }

// Wait blocks until the connection has ended.
func (c *Conn) Wait() error { return c.t.Wait() }

// Channel is one multiplexed channel: the same methods as an SSH channel
// (golang.org/x/crypto/ssh.Channel, which satisfies it), so code above can
// serve either transport.
type Channel interface {
	// Read reads data (stdout). io.EOF after the peer's EOF or close.
	Read(b []byte) (int, error)
	// Write writes data; it blocks while the peer's window is full. An
	// error once the channel or its connection is closed.
	Write(b []byte) (int, error)
	// Close closes the channel both ways. Idempotent.
	Close() error
	// CloseWrite sends EOF: the peer reads io.EOF after the data sent.
	CloseWrite() error
	// SendRequest sends a channel request; with wantReply it waits for the
	// peer's answer and reports it.
	SendRequest(name string, wantReply bool, payload []byte) (bool, error)
	// Stderr reads and writes the channel's extended data (stderr).
	Stderr() io.ReadWriter
}

// NewChannel is a channel the peer asked to open: accept it or reject it.
type NewChannel interface {
	// Accept confirms the channel; the requests channel delivers the
	// peer's channel requests and is closed when the channel closes.
	Accept() (Channel, <-chan *Request, error)
	// Reject refuses the channel with a reason and a message for the peer.
	Reject(reason RejectionReason, message string) error
	// ChannelType is the type the peer gave.
	ChannelType() string
	// ExtraData is the type-specific data the peer gave.
	ExtraData() []byte
}

// Request is a global or channel request received from the peer.
type Request struct {
	// Type is the request's name; WantReply whether the peer waits for
	// Reply; Payload its type-specific data.
	Type      string
	WantReply bool
	Payload   []byte

	reply func(ok bool, payload []byte) error
}

// NewRequest is a request whose Reply calls reply: for adapting requests of
// another transport (an SSH connection) to this type.
func NewRequest(typ string, wantReply bool, payload []byte, reply func(ok bool, payload []byte) error) *Request {
	return &Request{Type: typ, WantReply: wantReply, Payload: payload, reply: reply}
}

// Reply answers the request. Only a request that wants a reply is
// answered; for others Reply does nothing. The payload of a channel
// request's reply is dropped (as in RFC 4254 §5.4).
func (r *Request) Reply(ok bool, payload []byte) error {
	if !r.WantReply || r.reply == nil {
		return nil
	}
	return r.reply(ok, payload)
}

// RejectionReason is why a channel open failed: RFC 4254 §5.1's codes.
type RejectionReason uint32

// RFC 4254 §5.1's reason codes.
const (
	Prohibited         RejectionReason = 1
	ConnectionFailed   RejectionReason = 2
	UnknownChannelType RejectionReason = 3
	ResourceShortage   RejectionReason = 4
)

// OpenChannelError is a channel open the peer rejected.
type OpenChannelError struct {
	Reason  RejectionReason
	Message string
}

func (e *OpenChannelError) Error() string {
	return fmt.Sprintf("link: channel open rejected (reason %d): %s", e.Reason, e.Message)
}

// ErrClosed is returned by calls on a closed channel or connection.
var ErrClosed = errors.New("link: closed")

// ErrTooLarge is a request or channel open whose payload is over
// MaxFrameBytes.
var ErrTooLarge = errors.New("link: payload over MaxFrameBytes")

// DiscardRequests rejects every request of reqs until it closes.
func DiscardRequests(reqs <-chan *Request) {
	for r := range reqs {
		_ = r.Reply(false, nil)
	}
}
