package compute

import (
	"encoding/binary"
	"slices"
	"time"
	"unicode/utf8"
)

// appendLogLine appends one line of the json-file log for data, stream,
// attrs (nil, or the offset attribute's value) and t, and a newline: the
// bytes json.Marshal writes for the same logEntry, field order and string
// escapes included (encoding/json: HTML characters, controls, invalid
// UTF-8 as U+FFFD, U+2028 and U+2029), without reflection or copies of
// data. The shape is the json-file log format's (as moby's json-file
// driver writes it, daemon/logger/jsonfilelog/jsonlog), so tools that
// read that format read these logs.
func appendLogLine(b, data []byte, stream, offset string, t time.Time) []byte {
	b = append(b, `{"log":`...)
	b = appendJSONString(b, data)
	b = append(b, `,"stream":`...)
	b = appendJSONString(b, []byte(stream))
	if offset != "" {
		b = append(b, `,"attrs":{`...)
		b = appendJSONString(b, []byte(offsetAttr))
		b = append(b, ':')
		b = appendJSONString(b, []byte(offset))
		b = append(b, '}')
	}
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, "\"}\n"...)
}

// jsonEscape holds, for each ASCII byte, its escape as encoding/json
// writes it (with HTML escaping) packed little-endian in the low bytes,
// and jsonEscapeLen its length: 1 for a byte carried as it is.
var jsonEscape, jsonEscapeLen = func() (e [utf8.RuneSelf]uint64, n [utf8.RuneSelf]uint8) {
	for c := range utf8.RuneSelf {
		var s string
		switch {
		case c == '"' || c == '\\':
			s = `\` + string(rune(c))
		case c == '\b':
			s = `\b`
		case c == '\f':
			s = `\f`
		case c == '\n':
			s = `\n`
		case c == '\r':
			s = `\r`
		case c == '\t':
			s = `\t`
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			s = `\u00` + string(hexDigits[c>>4]) + string(hexDigits[c&0xf])
		default:
			s = string(rune(c))
		}
		var buf [8]byte
		copy(buf[:], s)
		e[c], n[c] = binary.LittleEndian.Uint64(buf[:]), uint8(len(s))
	}
	return e, n
}()

// jsonEscapeRuns holds each control byte's escape eight times over (and
// 8 spare bytes for the whole-word stores that fill it).
var jsonEscapeRuns = func() (r [0x20][48 + 8]byte) {
	for c := range 0x20 {
		n := int(jsonEscapeLen[c])
		for k := range 8 {
			binary.LittleEndian.PutUint64(r[c][k*n:], jsonEscape[c])
		}
	}
	return r
}()

const hexDigits = "0123456789abcdef"

// SWAR masks: one byte value repeated in each of a word's eight bytes.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plainWord reports whether none of x's eight bytes needs escaping: all
// ASCII, none below 0x20, none of " \ < > &. The tests are the exact
// zero-byte and less-than tests on a word (Bit Twiddling Hacks,
// "Determine if a word has a byte less than n").
func plainWord(x uint64) bool {
	bad := x | (x-ones*0x20)&^x
	v := x ^ (ones * '"')
	bad |= (v - ones) &^ v
	v = x ^ (ones * '\\')
	bad |= (v - ones) &^ v
	v = x ^ (ones * '<')
	bad |= (v - ones) &^ v
	v = x ^ (ones * '>')
	bad |= (v - ones) &^ v
	v = x ^ (ones * '&')
	bad |= (v - ones) &^ v
	return bad&highs == 0
}

// appendJSONString appends s as a quoted JSON string, escaped as
// encoding/json escapes a string: eight plain bytes at a time, the rest
// from a table.
func appendJSONString(b, s []byte) []byte {
	// At most 6 bytes out per byte in (\u00XX, \ufffd for a lone byte,
	// \u2028 for three), the quotes, and 8 spare for whole-word stores.
	b = slices.Grow(b, 6*len(s)+2+8)
	n := len(b)
	out := b[:cap(b)]
	out[n] = '"'
	n++
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			x := binary.LittleEndian.Uint64(s[i:])
			if plainWord(x) {
				binary.LittleEndian.PutUint64(out[n:], x)
				n, i = n+8, i+8
				continue
			}
			// Words of one control byte (NUL padding, binary output):
			// the first word's escapes from the table, then the run's
			// whole length by doubling copies of what is written.
			if c := x & 0xff; c < 0x20 && x == ones*c {
				words := 1
				for i+8*(words+1) <= len(s) && binary.LittleEndian.Uint64(s[i+8*words:]) == x {
					words++
				}
				start := n
				n += copy(out[n:], jsonEscapeRuns[c][:8*jsonEscapeLen[c]])
				for end := start + words*(n-start); n < end; {
					n += copy(out[n:end], out[start:n])
				}
				i += 8 * words
				continue
			}
		}
		// Byte by byte up to the next word.
		for end := min(i+8, len(s)); i < end; {
			c := s[i]
			if c < utf8.RuneSelf {
				binary.LittleEndian.PutUint64(out[n:], jsonEscape[c])
				n += int(jsonEscapeLen[c])
				i++
				continue
			}
			r, size := utf8.DecodeRune(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				n += copy(out[n:], `\ufffd`)
			case r == '\u2028' || r == '\u2029':
				n += copy(out[n:], `\u202`)
				out[n] = hexDigits[r&0xf]
				n++
			default:
				n += copy(out[n:], s[i:i+size])
			}
			i += size
		}
	}
	out[n] = '"'
	return out[:n+1]
}
