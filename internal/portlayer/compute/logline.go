package compute

import (
	"slices"
	"strconv"
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

// jsonSafe marks the ASCII bytes a JSON string (with encoding/json's HTML
// escaping) carries as they are.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a quoted JSON string, escaped as
// encoding/json escapes a string.
func appendJSONString(b, s []byte) []byte {
	b = slices.Grow(b, len(s)+2)
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = strconv.AppendInt(b, int64(r&0xf), 16)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
