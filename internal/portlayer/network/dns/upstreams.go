package dns

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
)

// HostUpstreams reads the nameserver lines of a resolv.conf(5)-format file
// and returns their addresses as "ip:53" strings ("[ip]:53" for IPv6), in
// file order, duplicates kept. Comment lines ('#' or ';' first), other
// directives and addresses that do not parse are skipped, as the C
// library's resolver skips them (resolv.conf(5)).
//
// Loopback addresses (127.0.0.0/8, ::1) are kept: the resolver forwards
// from the daemon, which runs in the host's namespace, so a resolver local
// to the host (systemd-resolved's 127.0.0.53, a dnsmasq) answers
// containers as it answers the host.
//
// nil if the file cannot be read or names no usable nameserver; no public
// default servers (such as 8.8.8.8) are added: names go only where the
// host sends its own.
func HostUpstreams(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		addr, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(addr, 53).String())
	}
	return out
}
