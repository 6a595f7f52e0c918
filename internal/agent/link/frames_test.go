package link

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"
)

// rawFrame is one V4 frame as a peer writes it.
func rawFrame(typ byte, id uint32, payload []byte) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// rawHost is the host's end (Client, V4) facing a peer that writes raw
// frames: its requests are answered, its channel opens rejected.
func rawHost(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	return rawHostOpens(t, true)
}

// rawHostOpens is rawHost whose channels opened by the raw end are
// rejected, or, with reject false, left pending (their IDs stay in use).
func rawHostOpens(t *testing.T, reject bool) (*Conn, net.Conn) {
	t.Helper()
	a, b := testenv.SocketPair(t)
	host, chans, reqs, err := Client(a, V4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	go func() {
		var held []NewChannel
		for nc := range chans {
			if !reject {
				held = append(held, nc)
				continue
			}
			_ = nc.Reject(Prohibited, "no")
		}
		_ = held
	}()
	go func() {
		for r := range reqs {
			_ = r.Reply(true, []byte("ok:"+r.Type))
		}
	}()
	return host, b
}

// answered sends a global request on the raw end and reads frames until
// its reply.
func answered(t *testing.T, peer net.Conn, id uint32) {
	t.Helper()
	_ = peer.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Write(rawFrame(frameGlobalRequest, id, requestPayload(true, "ping", nil))); err != nil {
		t.Fatal(err)
	}
	for {
		var h [frameHeaderBytes]byte
		if _, err := io.ReadFull(peer, h[:]); err != nil {
			t.Fatalf("no reply: %v", err)
		}
		p := make([]byte, binary.BigEndian.Uint32(h[5:]))
		if _, err := io.ReadFull(peer, p); err != nil {
			t.Fatal(err)
		}
		if h[0] == frameGlobalSuccess && binary.BigEndian.Uint32(h[1:]) == id {
			if string(p) != "ok:ping" {
				t.Fatalf("reply %q", p)
			}
			return
		}
	}
}

// ended waits for the host's end of the connection.
func ended(t *testing.T, host *Conn) {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = host.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not end")
	}
}

// TestFramesIgnored: frames for channels that do not exist, replies
// nobody asked for and frame types of a later framing are dropped, and
// the connection goes on.
func TestFramesIgnored(t *testing.T) {
	host, peer := rawHost(t)
	for _, f := range [][]byte{
		rawFrame(frameData, 8, []byte("x")),
		rawFrame(frameCredit, 8, []byte{0, 0, 0, 1}),
		rawFrame(frameClose, 12, nil),
		rawFrame(frameGlobalSuccess, 99, []byte("late")),
		rawFrame(200, 2, []byte("future")),
		rawFrame(frameOpen, 2, appendString(nil, "proc", nil)), // rejected
		rawFrame(frameData, 2, []byte("after the rejection")),
	} {
		if _, err := peer.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	answered(t, peer, 4)
	if _, _, err := host.SendRequest(t.Context(), "x", false, nil); err != nil {
		t.Fatalf("the host's end stopped: %v", err)
	}
}

// TestFramesViolations: a peer that breaks the framing ends the
// connection, and only it: a frame over MaxFrameBytes, an open with an ID
// of the host's, an open of an ID in use, data past the window, credit
// past twice the window, a malformed request.
func TestFramesViolations(t *testing.T) {
	open := rawFrame(frameOpen, 2, appendString(nil, "proc", nil))
	over := make([]byte, frameHeaderBytes)
	over[0] = frameData
	binary.BigEndian.PutUint32(over[5:], MaxFrameBytes+1)
	for name, in := range map[string][]byte{
		"huge":         over,
		"our id":       rawFrame(frameOpen, 1, appendString(nil, "proc", nil)),
		"id in use":    append(append([]byte{}, open...), open...),
		"bad request":  rawFrame(frameGlobalRequest, 2, []byte{1, 0, 0, 0, 9}),
		"bad open":     rawFrame(frameOpen, 2, []byte{0, 0}),
		"credit short": append(hostChannel(), rawFrame(frameCredit, 1, []byte{1})...),
		"credit flood": append(hostChannel(), rawFrame(frameCredit, 1, []byte{0xff, 0xff, 0xff, 0xff})...),
	} {
		t.Run(name, func(t *testing.T) {
			// The first open of "id in use" stays pending: were it
			// rejected before the second arrives, its ID would be free.
			host, peer := rawHostOpens(t, name != "id in use")
			if name == "credit short" || name == "credit flood" {
				go func() { _, _, _ = host.OpenChannel(t.Context(), "c", nil) }()
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := peer.Write(in); err != nil {
				t.Fatal(err)
			}
			ended(t, host)
		})
	}
	t.Run("past the window", func(t *testing.T) {
		host, peer := rawHost(t)
		opened := make(chan error, 1)
		go func() {
			_, _, err := host.OpenChannel(t.Context(), "c", nil)
			opened <- err
		}()
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		time.Sleep(50 * time.Millisecond)
		_, _ = peer.Write(rawFrame(frameOpenConfirm, 1, nil))
		if err := <-opened; err != nil {
			t.Fatal(err)
		}
		chunk := make([]byte, frameDataChunk)
		for sent := 0; sent <= windowBytes; sent += len(chunk) {
			if _, err := peer.Write(rawFrame(frameData, 1, chunk)); err != nil {
				break // the host hung up
			}
		}
		ended(t, host)
	})
}

// hostChannel is the peer's confirmation of the host's first channel.
func hostChannel() []byte { return rawFrame(frameOpenConfirm, 1, nil) }

// FuzzFrames: whatever a guest writes on the port, the host's end neither
// panics nor hangs: after the input and the guest's hang-up the
// connection ends and its delivery channels close.
func FuzzFrames(f *testing.F) {
	f.Add(rawFrame(frameGlobalRequest, 2, requestPayload(true, "dns@vch-v1", []byte("q"))))
	f.Add(rawFrame(frameOpen, 2, appendString(nil, "process@vch-v1", []byte("{}"))))
	f.Add(append(hostChannel(), rawFrame(frameData, 1, []byte("out"))...))
	f.Add(append(hostChannel(), rawFrame(frameRequest, 1, requestPayload(false, "exit-status", []byte{0, 0, 0, 0}))...))
	f.Add(append(hostChannel(), rawFrame(frameClose, 1, nil)...))
	f.Add([]byte{frameData, 0, 0, 0, 1, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := testenv.SocketPair(t)
		host, chans, reqs, err := Client(a, V4)
		if err != nil {
			t.Fatal(err)
		}
		defer host.Close()
		go func() {
			for nc := range chans {
				_ = nc.Reject(Prohibited, "no")
			}
		}()
		go func() {
			for r := range reqs {
				_ = r.Reply(true, nil)
			}
		}()
		// The host opens a channel (ID 1) that the input may confirm,
		// and reads and answers what arrives on it.
		go func() {
			ch, creqs, err := host.OpenChannel(t.Context(), "c", nil)
			if err != nil {
				return
			}
			go func() {
				for r := range creqs {
					_ = r.Reply(true, nil)
				}
			}()
			go func() { _, _ = io.Copy(io.Discard, ch.Stderr()) }()
			_, _ = io.Copy(io.Discard, ch)
			_ = ch.Close()
		}()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		_ = b.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = b.Write(data)
		_ = b.Close()
		done := make(chan struct{})
		go func() {
			_ = host.Wait()
			for range chans {
			}
			for range reqs {
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the host's end did not end after the guest hung up")
		}
	})
}
