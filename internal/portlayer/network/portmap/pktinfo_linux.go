package portmap

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// Packet information (IP_PKTINFO, IPV6_PKTINFO; ip(7), ipv6(7)) tells a
// socket bound to 0.0.0.0 or :: which address each datagram was sent to,
// and lets a reply leave from that address. Without it the kernel picks
// the reply's source by routing, and a client that sent to another of the
// host's addresses drops the reply (its connected socket filters by
// source). Docker 28's proxy does the same.

// packetInfoBytes is room for one IPv4 or IPv6 packet-info message.
var packetInfoBytes = syscall.CmsgSpace(max(syscall.SizeofInet4Pktinfo, syscall.SizeofInet6Pktinfo))

// enablePacketInfo asks the kernel for each datagram's destination address.
func enablePacketInfo(pc *net.UDPConn, v6 bool) error {
	rc, err := pc.SyscallConn()
	if err != nil {
		return err
	}
	level, opt := syscall.IPPROTO_IP, syscall.IP_PKTINFO
	if v6 {
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), level, opt, 1)
	}); err != nil {
		return err
	}
	return serr
}

// parsePacketInfo returns the local address a datagram was received on,
// from its control messages; zero if there is none.
func parsePacketInfo(oob []byte) netip.Addr {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }:
			// spec_dst is the local address the datagram is for (for a
			// broadcast, the address to answer from).
			return netip.AddrFrom4([4]byte(m.Data[4:8]))
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr addr; int ifindex; }
			a := netip.AddrFrom16([16]byte(m.Data[:16]))
			if a.IsMulticast() {
				return netip.Addr{}
			}
			return a
		}
	}
	return netip.Addr{}
}

// packetInfo returns the control message that sends a datagram from
// local; nil for a zero local.
func packetInfo(local netip.Addr) []byte {
	switch {
	case local.Is4():
		b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet4Pktinfo))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level = syscall.IPPROTO_IP
		h.Type = syscall.IP_PKTINFO
		h.SetLen(syscall.CmsgLen(syscall.SizeofInet4Pktinfo))
		pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
		pi.Spec_dst = local.As4()
		return b
	case local.Is6():
		b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet6Pktinfo))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level = syscall.IPPROTO_IPV6
		h.Type = syscall.IPV6_PKTINFO
		h.SetLen(syscall.CmsgLen(syscall.SizeofInet6Pktinfo))
		pi := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
		pi.Addr = local.As16()
		return b
	}
	return nil
}
