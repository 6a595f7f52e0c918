package link

import (
	"net"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"
)

// stallConn is a net.Conn that declares itself StallBounded.
type stallConn struct {
	net.Conn
	limit time.Duration
}

func (c stallConn) FrameStall() time.Duration { return c.limit }

// stallGuest is the guest's end (Server, V4) on a over rwc, answering
// every request; the raw peer is b.
func stallGuest(t *testing.T, wrap func(net.Conn) net.Conn) (*Conn, net.Conn) {
	t.Helper()
	a, b := testenv.SocketPair(t)
	guest, chans, reqs, err := Server(wrap(a), V4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guest.Close() })
	go func() {
		for nc := range chans {
			_ = nc.Reject(Prohibited, "no")
		}
	}()
	go func() {
		for r := range reqs {
			_ = r.Reply(true, []byte("ok:"+r.Type))
		}
	}()
	return guest, b
}

// endsWithin reports whether c's Wait returns within d.
func endsWithin(c *Conn, d time.Duration) bool {
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestStallBounded: on a StallBounded stream an idle link and a frame
// that arrives slowly but steadily keep the connection; a frame that
// stops midway (its peer died) ends it within about FrameStall, so the
// next peer's bytes are never read as that frame's rest. On a stream that
// is not StallBounded the same stall waits (the default is unchanged).
func TestStallBounded(t *testing.T) {
	const limit = 300 * time.Millisecond
	bounded := func(c net.Conn) net.Conn { return stallConn{c, limit} }

	t.Run("idle and slow frames", func(t *testing.T) {
		guest, peer := stallGuest(t, bounded)
		time.Sleep(3 * limit)
		answered(t, peer, 1)
		f := rawFrame(frameGlobalRequest, 2, requestPayload(true, "ping", nil))
		for i := range f {
			if _, err := peer.Write(f[i : i+1]); err != nil {
				t.Fatal(err)
			}
			if i%4 == 0 {
				time.Sleep(limit / 3)
			}
		}
		answered(t, peer, 3)
		if endsWithin(guest, 0) {
			t.Fatal("the connection ended")
		}
	})

	t.Run("stall mid-payload", func(t *testing.T) {
		guest, peer := stallGuest(t, bounded)
		f := rawFrame(frameGlobalRequest, 1, requestPayload(true, "ping", make([]byte, 100)))
		if _, err := peer.Write(f[:len(f)/2]); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if !endsWithin(guest, 20*limit) {
			t.Fatalf("a frame stalled midway did not end the connection in %s", 20*limit)
		}
		if d := time.Since(t0); d < limit/2 {
			t.Fatalf("ended after %s, before the stall bound %s", d, limit)
		}
	})

	t.Run("stall mid-header", func(t *testing.T) {
		guest, peer := stallGuest(t, bounded)
		f := rawFrame(frameGlobalRequest, 1, requestPayload(true, "ping", nil))
		if _, err := peer.Write(f[:3]); err != nil {
			t.Fatal(err)
		}
		if !endsWithin(guest, 20*limit) {
			t.Fatal("a header stalled midway did not end the connection")
		}
	})

	t.Run("not bounded", func(t *testing.T) {
		guest, peer := stallGuest(t, func(c net.Conn) net.Conn { return c })
		f := rawFrame(frameGlobalRequest, 1, requestPayload(true, "ping", make([]byte, 100)))
		if _, err := peer.Write(f[:len(f)/2]); err != nil {
			t.Fatal(err)
		}
		if endsWithin(guest, 4*limit) {
			t.Fatal("a stream that is not StallBounded ended on a stall")
		}
		if _, err := peer.Write(f[len(f)/2:]); err != nil {
			t.Fatal(err)
		}
		answered(t, peer, 2)
	})
}
