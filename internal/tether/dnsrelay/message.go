package dnsrelay

import "encoding/binary"

// The helpers below read just enough of a DNS message (RFC 1035 §4.1) to
// size and cut UDP replies. They never index past the message and treat
// anything they cannot walk as absent.

// udpLimit returns the largest reply, in bytes, that the client sending
// query takes over UDP: the payload size in the query's EDNS(0) OPT
// record, at least 512 (RFC 6891 §6.2.5), or 512 without one (RFC 1035
// §4.2.1).
func udpLimit(query []byte) int {
	size, ok := ednsSize(query)
	if !ok || size < minUDPSize {
		return minUDPSize
	}
	return size
}

// ednsSize returns the requestor's UDP payload size from msg's OPT
// record, found in the additional section (RFC 6891 §6.1.2: its CLASS
// field); ok=false if there is none or msg cannot be walked to it.
func ednsSize(msg []byte) (int, bool) {
	if len(msg) < headerLen {
		return 0, false
	}
	off, ok := skipQuestions(msg)
	if !ok {
		return 0, false
	}
	an := int(binary.BigEndian.Uint16(msg[6:]))
	ns := int(binary.BigEndian.Uint16(msg[8:]))
	ar := int(binary.BigEndian.Uint16(msg[10:]))
	for i := range an + ns + ar {
		if off, ok = skipName(msg, off); !ok || off+10 > len(msg) {
			return 0, false
		}
		rrtype := binary.BigEndian.Uint16(msg[off:])
		class := binary.BigEndian.Uint16(msg[off+2:])
		rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
		if i >= an+ns && rrtype == typeOPT {
			return int(class), true
		}
		off += 10 + rdlen
	}
	return 0, false
}

// truncate returns reply if it fits in limit bytes. Otherwise it returns
// reply's header and question section with the TC bit set and the record
// counts zeroed (RFC 2181 §9: the client retries over TCP), or just that
// header with no question if the question section cannot be walked or
// does not fit either.
func truncate(reply []byte, limit int) []byte {
	if len(reply) <= limit {
		return reply
	}
	end, ok := skipQuestions(reply)
	if !ok || end > limit {
		end = headerLen
	}
	out := append([]byte(nil), reply[:end]...)
	out[2] |= 0x02 // TC (RFC 1035 §4.1.1)
	if end == headerLen {
		binary.BigEndian.PutUint16(out[4:], 0) // QDCOUNT
	}
	binary.BigEndian.PutUint16(out[6:], 0)  // ANCOUNT
	binary.BigEndian.PutUint16(out[8:], 0)  // NSCOUNT
	binary.BigEndian.PutUint16(out[10:], 0) // ARCOUNT
	return out
}

// skipQuestions returns the offset just past msg's question section
// (QDCOUNT entries of a name, QTYPE and QCLASS).
func skipQuestions(msg []byte) (int, bool) {
	off := headerLen
	qd := int(binary.BigEndian.Uint16(msg[4:]))
	for range qd {
		var ok bool
		if off, ok = skipName(msg, off); !ok || off+4 > len(msg) {
			return 0, false
		}
		off += 4
	}
	return off, true
}

// skipName returns the offset just past the domain name at off: labels
// ending in the root label or a compression pointer (RFC 1035 §4.1.4).
// Pointers are not followed, so the walk always moves forward and ends.
func skipName(msg []byte, off int) (int, bool) {
	for off < len(msg) {
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return off + 1, true
			}
			off += 1 + c
		case 0xC0:
			if off+2 > len(msg) {
				return 0, false
			}
			return off + 2, true
		default: // 0x40 and 0x80 are reserved (RFC 6891 §5 retired 0x40).
			return 0, false
		}
	}
	return 0, false
}
