// Package link is the transport of tether's protocol from version 3 on: the
// connection model of SSH's connection protocol (RFC 4254: global requests,
// channels with extra data, data and extended data, EOF, channel requests
// with replies, close) without SSH's transport layer, on a byte stream that
// needs framing and flow control but neither encryption nor
// authentication: a VM's private virtio-serial port, reachable only through
// its VMM.
//
// Streams and flow control are yamux's (github.com/hashicorp/yamux: one
// stream per channel or global request, a receive window per stream). On a
// stream, link writes frames of its own:
//
//	type (1 byte) | payload length (4 bytes, big-endian) | payload
//
// The first frame of a stream is [frameOpen] (a channel: its type and extra
// data) or [frameRequest] (a global request). The accepting side answers an
// open with [frameOpenConfirm] or [frameOpenFailure]; after a confirmation
// both sides send data ([frameData] for stdout-like data, [frameExtended]
// for stderr), [frameEOF] when they will send no more data, and channel
// requests ([frameRequest], answered in order by [frameSuccess] or
// [frameFailure] when a reply is wanted). A stream's end (yamux's FIN) is
// the channel's close. A global request's stream carries the request, its
// reply if one is wanted, and ends.
//
// Everything sent on one channel arrives in the order it was sent, so
// output written before an exit status always arrives before it.
package link

import (
	"errors"
	"fmt"
	"io"
)

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

// DiscardRequests rejects every request of reqs until it closes.
func DiscardRequests(reqs <-chan *Request) {
	for r := range reqs {
		_ = r.Reply(false, nil)
	}
}
