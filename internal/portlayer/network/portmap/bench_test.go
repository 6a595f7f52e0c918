package portmap

import (
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// benchBlock is what one iteration sends on each path before waiting for
// the receiver's acknowledgement.
const benchBlock = 4 << 20

// startSink is a loopback receiver that answers one byte per benchBlock
// read.
func startSink(b *testing.B) netip.AddrPort {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 1<<20)
				for {
					for left := benchBlock; left > 0; {
						n, err := c.Read(buf[:min(left, len(buf))])
						if err != nil {
							return
						}
						left -= n
					}
					if _, err := c.Write([]byte{1}); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// BenchmarkTCPThroughput sends benchBlock bytes per iteration over a
// direct loopback connection and over one through the proxy, and reports
// both rates in MB/s (10^6 bytes) and the proxy's as a percentage of the
// direct one.
func BenchmarkTCPThroughput(b *testing.B) {
	sink := startSink(b)
	m, _ := newMapper(b)
	got := mustPublish(b, m, "bench", tcpBinding(0, 0, sink.Port()))

	direct, err := net.Dial("tcp4", sink.String())
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	proxied, err := net.Dial("tcp4", hostAddr(got[0]))
	if err != nil {
		b.Fatal(err)
	}
	defer proxied.Close()

	block := make([]byte, benchBlock)
	rand.Read(block)
	ack := make([]byte, 1)
	send := func(c net.Conn) time.Duration {
		start := time.Now()
		if _, err := c.Write(block); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, ack); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	var tDirect, tProxy time.Duration
	n := 0
	for b.Loop() {
		tDirect += send(direct)
		tProxy += send(proxied)
		n++
	}
	mb := float64(n) * benchBlock / 1e6
	b.ReportMetric(mb/tDirect.Seconds(), "direct-MB/s")
	b.ReportMetric(mb/tProxy.Seconds(), "proxy-MB/s")
	b.ReportMetric(100*tDirect.Seconds()/tProxy.Seconds(), "proxy-%")
}
