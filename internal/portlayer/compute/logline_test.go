package compute

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestAppendLogLine: the hand-written encoder writes exactly what
// json.Marshal writes for the same entry, for text, every byte value,
// invalid and unusual UTF-8, and with and without the offset attribute.
func TestAppendLogLine(t *testing.T) {
	inputs := [][]byte{
		nil, []byte("hello\n"), []byte(`"quoted" \ back <tag> & amp`),
		[]byte("tab\tcr\rff\fbs\bnul\x00esc\x1bdel\x7f"),
		[]byte("é ü 日本 \u2028 \u2029 \U0001F600"), {0xff, 0xfe, 'a', 0xc3}, {0xe2, 0x80}, {0xed, 0xa0, 0x80},
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	inputs = append(inputs, all)
	// Eight-byte words at every alignment: plain runs with one special
	// byte or rune at each offset, and runs of one control byte of
	// every length around a word's.
	plain := []byte("abcdefghijklmnopqrstuvwx")
	for _, special := range []string{"\x00", "\n", "\"", "\\", "<", ">", "&", "\x7f", "é", "日", "\u2028", "\xff", "\xe2\x80"} {
		for off := range len(plain) {
			inputs = append(inputs, []byte(string(plain[:off])+special+string(plain[off:])))
		}
	}
	// Runs of several words of one control byte, cut at every length
	// and followed by a plain byte, another control byte or a word of
	// another control byte.
	for _, c := range []byte{0, 1, '\n', 0x1f, '"'} {
		for n := range 70 {
			run := append([]byte("ab"), bytes.Repeat([]byte{c}, n)...)
			inputs = append(inputs, run, append(slices.Clone(run), 'x'), append(slices.Clone(run), 2), append(slices.Clone(run), bytes.Repeat([]byte{3}, 8)...))
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, r.IntN(300))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		checkLogLine(t, in)
	}
}

// FuzzLogLine: for any bytes, appendLogLine writes what json.Marshal
// writes.
func FuzzLogLine(f *testing.F) {
	f.Add([]byte("hello\n"))
	f.Add(make([]byte, 20))
	f.Add([]byte("abcdefgh\x00\x00\x00\x00\x00\x00\x00\x00é<\xff"))
	f.Fuzz(checkLogLine)
}

// checkLogLine fails t unless appendLogLine writes for in, with and
// without the offset attribute and after bytes already in the buffer,
// what json.Marshal writes for the same entry.
func checkLogLine(t *testing.T, in []byte) {
	when := time.Date(2026, 12, 5, 14, 0, 0, 123456789, time.UTC)
	for _, off := range []string{"", "r1:42"} {
		e := logEntry{Log: string(in), Stream: "stderr", Time: when}
		if off != "" {
			e.Attrs = map[string]string{offsetAttr: off}
		}
		want, _ := json.Marshal(e)
		want = append([]byte("prefix"), append(want, '\n')...)
		if got := appendLogLine([]byte("prefix"), in, "stderr", off, when); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %s\nwant %s", in, got, want)
		}
	}
}

// BenchmarkLogLine: one 16 KiB log message of zeros (each written as
// \u0000), of text lines and of one letter, by appendLogLine and by json.Marshal, the baseline.
func BenchmarkLogLine(b *testing.B) {
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), maxLogLine/44)
	plain := bytes.Repeat([]byte("a"), maxLogLine)
	for name, data := range map[string][]byte{"zeros": make([]byte, maxLogLine), "text": text, "plain": plain} {
		when := time.Now().UTC()
		b.Run(name+"/append", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			var buf []byte
			for b.Loop() {
				buf = appendLogLine(buf[:0], data, "stdout", "r:1", when)
			}
		})
		b.Run(name+"/marshal", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				_, _ = json.Marshal(logEntry{Log: string(data), Stream: "stdout", Attrs: map[string]string{offsetAttr: "r:1"}, Time: when})
			}
		})
	}
}
