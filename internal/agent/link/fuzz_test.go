package link

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// frame builds one link frame for the seed corpus.
func frame(typ byte, payload []byte) []byte {
	b := make([]byte, headerBytes+len(payload))
	putHeader(b, typ, len(payload))
	copy(b[headerBytes:], payload)
	return b
}

// FuzzReadFrame: the frame reader and the payload parsers never panic on
// any input, and never return a frame longer than MaxFrameBytes.
func FuzzReadFrame(f *testing.F) {
	f.Add(frame(frameOpen, appendString(nil, "process@vch-v1", []byte(`{"args":["true"]}`))))
	f.Add(frame(frameRequest, requestPayload(true, "setup@vch-v1", []byte(`{}`))))
	f.Add(frame(frameData, []byte("hello")))
	f.Add([]byte{frameOpen, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := readFrame(r)
			if err != nil {
				return
			}
			if len(p) > MaxFrameBytes {
				t.Fatalf("frame of %d bytes", len(p))
			}
			switch typ {
			case frameOpen:
				_, _, _ = cutString(p)
			case frameRequest:
				_, _, _, _ = parseRequest(p)
			}
		}
	})
}

// FuzzServerStream: a peer that opens a stream and writes anything on it
// (the guest agent's view of a hostile or broken host) never panics the
// link and never wedges it: the connection still answers a well-formed
// global request afterwards.
func FuzzServerStream(f *testing.F) {
	f.Add(frame(frameOpen, appendString(nil, "process@vch-v1", nil)))
	f.Add(append(frame(frameOpen, appendString(nil, "x", nil)), frame(frameRequest, requestPayload(true, "signal", []byte{1}))...))
	f.Add(frame(frameRequest, requestPayload(false, "poweroff", nil)))
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Fuzz(fuzzOne)
}

func fuzzOne(t *testing.T, data []byte) {
	{
		a, b := net.Pipe()
		srv, chans, reqs, err := Server(b, V3)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		// Serve like tether: reject every channel, answer every request.
		go func() {
			for nc := range chans {
				_ = nc.Reject(UnknownChannelType, "no")
			}
		}()
		go func() {
			for r := range reqs {
				_ = r.Reply(r.Type == "ping", nil)
			}
		}()
		cli, err := yamux.Client(a, config())
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		// The pipes close first: a session's close then writes nothing
		// into a pipe nobody reads (net.Pipe is unbuffered).
		defer b.Close()
		defer a.Close()
		st, err := cli.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		_ = st.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = st.Write(data)
		_ = st.Close()
		// The same session still serves a request on a new stream.
		ps, err := cli.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer ps.Close()
		_ = ps.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := ps.Write(frame(frameRequest, requestPayload(true, "ping", nil))); err != nil {
			t.Fatalf("write after fuzz input: %v", err)
		}
		var h [headerBytes]byte
		if _, err := io.ReadFull(ps, h[:]); err != nil {
			t.Fatalf("no reply after fuzz input: %v", err)
		}
		if h[0] != frameSuccess || binary.BigEndian.Uint32(h[1:]) != 0 {
			t.Fatalf("reply %v", h)
		}
	}
}
