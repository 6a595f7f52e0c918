package spool

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// readAll reads from off until EOF (or a stall of one second).
func readAll(t *testing.T, s *Spool, off int64) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 7)
	for {
		cancel := make(chan struct{})
		timer := time.AfterFunc(time.Second, func() { close(cancel) })
		p, at, eof := s.Peek(off, len(buf), cancel)
		n := copy(buf, p)
		timer.Stop()
		if eof {
			return out
		}
		if n == 0 {
			t.Fatalf("read stalled at %d", off)
		}
		out = append(out, buf[:n]...)
		off = at + int64(n)
	}
}

func TestReadFromOffsets(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		ack    int64
		from   int64
		want   string
		wantAt int64
	}{
		{"all", []string{"hello ", "world"}, 0, 0, "hello world", 0},
		{"from_middle", []string{"hello ", "world"}, 0, 6, "world", 6},
		{"after_ack", []string{"hello ", "world"}, 6, 6, "world", 6},
		{"acked_offset_clamped", []string{"hello ", "world"}, 6, 2, "world", 6},
		{"past_end_clamped", []string{"abc"}, 0, 99, "", 3},
		{"ack_past_end", []string{"abc"}, 99, 0, "", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(64)
			for _, w := range tt.writes {
				if _, err := s.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			s.Ack(tt.ack)
			s.CloseWrite()
			buf := make([]byte, 64)
			p, at, _ := s.Peek(tt.from, len(buf), nil)
			n := copy(buf, p)
			if at != tt.wantAt {
				t.Errorf("Peek(%d) starts at %d, want %d", tt.from, at, tt.wantAt)
			}
			if got := string(buf[:n]) + string(readAll(t, s, at+int64(n))); got != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
		})
	}
}

// A full spool blocks its writer until the reader acknowledges; the bytes
// come out whole and in order.
func TestBackPressure(t *testing.T) {
	s := New(10)
	payload := bytes.Repeat([]byte("0123456789"), 10)
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(payload)
		s.CloseWrite()
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if !s.Full() {
		t.Fatal("writer did not fill the spool")
	}
	select {
	case <-done:
		t.Fatal("writer finished without acknowledgements")
	default:
	}
	var got []byte
	var off int64
	buf := make([]byte, 4)
	for {
		p, at, eof := s.Peek(off, len(buf), nil)
		if eof {
			break
		}
		n := copy(buf, p)
		got = append(got, buf[:n]...)
		off = at + int64(n)
		s.Ack(off)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("read %q, want %q", got, payload)
	}
	if start, end := s.Bounds(); start != 100 || end != 100 {
		t.Errorf("Bounds = %d, %d, want 100, 100", start, end)
	}
}

func TestAbortReleasesWriter(t *testing.T) {
	s := New(4)
	done := make(chan error, 1)
	go func() {
		_, err := s.Write([]byte("too long for it"))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	s.Abort()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Abort: %v, want ErrClosed", err)
	}
	if got := readAll(t, s, 0); string(got) != "too " {
		t.Errorf("kept %q, want what fitted", got)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Abort: %v", err)
	}
}

func TestReadCancel(t *testing.T) {
	s := New(0)
	cancel := make(chan struct{})
	close(cancel)
	if p, at, eof := s.Peek(0, 4, cancel); len(p) != 0 || at != 0 || eof {
		t.Errorf("Peek on an empty open spool with cancel = %d bytes, %d, %v", len(p), at, eof)
	}
}

// TestRingAgainstModel: random writes (Write, or Space and Commit; never
// past the limit, so none waits), acknowledgements and reads (Peek)
// at random offsets give the bytes of the stream that a plain
// slice of everything written holds, across the ring's growth and
// wrap-around; the bytes of a Peek stay as they were until acknowledged.
func TestRingAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, limit := range []int{1, 7, 100, minRing + 3, 3 * minRing} {
		s := New(limit)
		var stream []byte
		var acked int64
		// Slices Peek returned keep their bytes until acknowledged.
		type peek struct {
			p   []byte
			off int64
		}
		var peeked []peek
		for step := range 3000 {
			for _, pk := range peeked {
				if pk.off+int64(len(pk.p)) > acked && !bytes.Equal(pk.p[max(0, acked-pk.off):], stream[max(acked, pk.off):pk.off+int64(len(pk.p))]) {
					t.Fatalf("limit %d step %d: bytes a Peek at %d returned changed before they were acknowledged", limit, step, pk.off)
				}
			}
			start, end := s.Bounds()
			if start != acked || end != int64(len(stream)) {
				t.Fatalf("limit %d step %d: Bounds = %d, %d, want %d, %d", limit, step, start, end, acked, len(stream))
			}
			switch r.IntN(3) {
			case 0:
				room := limit - int(end-start)
				if room == 0 {
					continue
				}
				if r.IntN(2) == 0 {
					// A read straight into the ring: Space, a prefix
					// of it filled, Commit.
					most := 1 + r.IntN(limit)
					sp, err := s.Space(most)
					if err != nil || len(sp) == 0 || len(sp) > min(most, room) {
						t.Fatalf("limit %d step %d: Space(%d) with %d free = %d bytes, %v", limit, step, most, room, len(sp), err)
					}
					if r.IntN(2) == 0 {
						// The host acknowledges while the writer
						// reads into the room (the spool may then be
						// empty).
						acked = end
						s.Ack(acked)
					}
					n := 1 + r.IntN(len(sp))
					for i := range n {
						sp[i] = byte(r.UintN(256))
					}
					stream = append(stream, sp[:n]...)
					if err := s.Commit(n); err != nil {
						t.Fatal(err)
					}
					continue
				}
				p := make([]byte, 1+r.IntN(room))
				for i := range p {
					p[i] = byte(r.UintN(256))
				}
				if n, err := s.Write(p); n != len(p) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				stream = append(stream, p...)
			case 1:
				acked += r.Int64N(end - start + 1)
				s.Ack(acked)
			case 2:
				if end == start {
					continue
				}
				off := start + r.Int64N(end-start)
				most := 1 + r.IntN(limit)
				p, at, eof := s.Peek(off, most, nil)
				if eof || at != off || len(p) == 0 || len(p) > min(most, int(end-off)) || !bytes.Equal(p, stream[off:off+int64(len(p))]) {
					t.Fatalf("limit %d step %d: Peek(%d, %d) = %d bytes at %d, %v, or other bytes than were written", limit, step, off, most, len(p), at, eof)
				}
				peeked = append(peeked, peek{p, off})
			}
		}
	}
}

// TestSpaceGrowsForRoomInOnePiece: a ring below its limit whose free room
// is split by the wrap grows (its held bytes moved to the front) rather
// than hand out the small piece before its end: a short room makes tether
// read the pipe in small steps.
func TestSpaceGrowsForRoomInOnePiece(t *testing.T) {
	s := New(64 << 10)
	fill := func(n int) {
		t.Helper()
		room, err := s.Space(n)
		if err != nil || len(room) != n {
			t.Fatalf("Space(%d) = %d bytes, %v", n, len(room), err)
		}
		if err := s.Commit(n); err != nil {
			t.Fatal(err)
		}
	}
	fill(16 << 10)  // a 16 KiB ring
	s.Ack(16 << 10) // empty, its head back at index 0
	fill(14 << 10)  // held: indexes 0 to 14 KiB
	s.Ack(28 << 10) // held: 12 to 14 KiB; free: 2 KiB at the end, 12 KiB at the front
	if room, err := s.Space(8 << 10); err != nil || len(room) != 8<<10 {
		t.Fatalf("Space(8 KiB) with 14 KiB free in two pieces = %d bytes, %v; want the ring grown and 8 KiB", len(room), err)
	}
}
