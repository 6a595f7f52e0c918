package dnsrelay

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestUDPLimit(t *testing.T) {
	withAnswer := buildQuery(1, "web", 1, 2048)
	// Put a 3-byte "answer" record before the OPT record: the walk must
	// skip it by its RDLENGTH.
	qend, _ := skipQuestions(withAnswer)
	rr := []byte{0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 0, 0, 3, 'a', 'b', 'c'}
	withAnswer = append(append(append([]byte(nil), withAnswer[:qend]...), rr...), withAnswer[qend:]...)
	binary.BigEndian.PutUint16(withAnswer[6:], 1)

	optInAnswer := buildQuery(1, "web", 1, 4096)
	binary.BigEndian.PutUint16(optInAnswer[6:], 1)
	binary.BigEndian.PutUint16(optInAnswer[10:], 0)

	tests := []struct {
		name  string
		query []byte
		want  int
	}{
		{name: "no EDNS", query: buildQuery(1, "web", 1, 0), want: 512},
		{name: "EDNS 4096", query: buildQuery(1, "web", 1, 4096), want: 4096},
		{name: "EDNS 65535", query: buildQuery(1, "web", 1, 65535), want: 65535},
		{name: "EDNS below 512", query: buildQuery(1, "web", 1, 100), want: 512},
		{name: "OPT after another record", query: withAnswer, want: 2048},
		{name: "OPT outside the additional section", query: optInAnswer, want: 512},
		{name: "cut inside the OPT record", query: buildQuery(1, "web", 1, 4096)[:25], want: 512},
		{name: "header only", query: make([]byte, 12), want: 512},
		{name: "too short", query: []byte{1, 2}, want: 512},
		{name: "reserved label type", query: append(buildQuery(1, "web", 1, 0)[:12], 0x40, 0), want: 512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := udpLimit(tt.query); got != tt.want {
				t.Errorf("udpLimit = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	q := buildQuery(9, "example.com", 1, 0)
	qend, _ := skipQuestions(q)
	reply := buildReply(q, 40) // 29 + 640 bytes
	tests := []struct {
		name  string
		reply []byte
		limit int
		want  []byte
	}{
		{name: "fits", reply: reply, limit: len(reply), want: reply},
		{
			name: "cut to the question", reply: reply, limit: 512,
			want: func() []byte {
				b := append([]byte(nil), reply[:qend]...)
				b[2] |= 0x02
				b[7] = 0
				return b
			}(),
		},
		{
			name: "question larger than the limit", reply: reply, limit: 20,
			want: func() []byte {
				b := append([]byte(nil), reply[:12]...)
				b[2] |= 0x02
				b[5], b[7] = 0, 0
				return b
			}(),
		},
		{
			name: "question that cannot be walked", reply: append([]byte{0, 9, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 63}, make([]byte, 20)...), limit: 12,
			want: []byte{0, 9, 0x83, 0x80, 0, 0, 0, 0, 0, 0, 0, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := truncate(tt.reply, tt.limit)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("truncate = %x, want %x", got, tt.want)
			}
		})
	}
}

// FuzzMessage walks arbitrary bytes as a query and as a reply: no panic,
// and a truncated reply is no longer than the limit and has TC set.
func FuzzMessage(f *testing.F) {
	f.Add(buildQuery(1, "web", 1, 4096), 512)
	f.Add(buildReply(buildQuery(1, "example.com", 1, 0), 50), 512)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, msg []byte, limit int) {
		if n := udpLimit(msg); n < minUDPSize || n > maxMsgSize {
			t.Fatalf("udpLimit = %d", n)
		}
		if len(msg) < headerLen {
			return
		}
		limit = max(limit, headerLen) % (maxMsgSize + 1)
		limit = max(limit, headerLen)
		got := truncate(msg, limit)
		if len(msg) <= limit {
			if !bytes.Equal(got, msg) {
				t.Fatal("a reply that fits was changed")
			}
			return
		}
		if len(got) > limit || len(got) < headerLen || got[2]&0x02 == 0 {
			t.Fatalf("truncate(%x, %d) = %x", msg, limit, got)
		}
	})
}
