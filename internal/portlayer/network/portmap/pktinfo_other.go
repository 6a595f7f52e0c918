//go:build !linux

package portmap

import (
	"net"
	"net/netip"
)

// Without packet information, replies on a socket bound to 0.0.0.0 or ::
// leave from the address the kernel's routing picks.

const packetInfoBytes = 0

func enablePacketInfo(*net.UDPConn, bool) error { return nil }

func parsePacketInfo([]byte) netip.Addr { return netip.Addr{} }

func packetInfo(netip.Addr) []byte { return nil }
