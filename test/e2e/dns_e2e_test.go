//go:build e2e

package e2e

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"

	mdns "github.com/miekg/dns"
)

// TestDNSOwnServers: a container on a user network with --dns keeps the
// embedded DNS as its nameserver (container names resolve), and the names
// it forwards go to its own --dns servers, not to the host's: a resolver
// of the test's on 127.0.0.77:53 answers upstream.vch.test, which no
// other resolver knows. Without --dns the same name is not resolved.
func TestDNSOwnServers(t *testing.T) {
	t.Parallel()
	const addr, name, answer = "127.0.0.77:53", "upstream.vch.test.", "192.0.2.77"
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	var asked atomic.Int32
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg).SetReply(q)
		if len(q.Question) == 1 && strings.EqualFold(q.Question[0].Name, name) {
			asked.Add(1)
			if q.Question[0].Qtype == mdns.TypeA {
				rr, _ := mdns.NewRR(name + " 60 IN A " + answer)
				m.Answer = append(m.Answer, rr)
			}
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })

	n := uniqueName(t) + "-net"
	ok(t, "network", "create", n)
	t.Cleanup(func() { docker(t, "network", "rm", n) })
	out := ok(t, "run", "--rm", "--network", n, "--dns", "127.0.0.77", "busybox", "sh", "-c", "cat /etc/resolv.conf; nslookup upstream.vch.test")
	if !strings.Contains(out, "nameserver 127.0.0.11") || !strings.Contains(out, "Address: "+answer) {
		t.Errorf("with --dns 127.0.0.77 on a user network:\n%s", out)
	}
	if asked.Load() == 0 {
		t.Error("the container's own DNS server was never asked")
	}
	before := asked.Load()
	r := docker(t, "run", "--rm", "--network", n, "busybox", "nslookup", "upstream.vch.test")
	if strings.Contains(r.stdout, answer) || asked.Load() != before {
		t.Errorf("without --dns the name was resolved by the container's would-be server (asked %d times more):\n%s", asked.Load()-before, r.stdout)
	}
}
