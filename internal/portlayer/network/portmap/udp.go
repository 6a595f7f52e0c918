package portmap

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// flow is one UDP client's conversation with the container.
type flow struct {
	client netip.AddrPort // the client's address, where replies go
	local  netip.Addr     // the host address the client wrote to; zero without packet info
	conn   net.Conn       // connected socket to the container
	last   atomic.Int64   // p.clock() at the last datagram either way
}

// clock is a monotonic time for flow activity.
func (p *proxy) clock() time.Duration { return time.Since(p.epoch) }

// serveUDP reads client datagrams until the host socket is closed and
// forwards each through its client's flow.
func (p *proxy) serveUDP() {
	defer p.wg.Done()
	buf := make([]byte, MaxDatagramBytes)
	var oob []byte
	if p.pktinfo {
		oob = make([]byte, packetInfoBytes)
	}
	var backoff time.Duration
	for {
		n, oobn, _, from, err := p.pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !p.pause(&backoff, "read", err) {
				return
			}
			continue
		}
		backoff = 0
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		var local netip.Addr
		if p.pktinfo {
			local = parsePacketInfo(oob[:oobn])
		}
		f := p.flowFor(from, local)
		if f == nil {
			continue
		}
		_, err = f.conn.Write(buf[:n])
		if errors.Is(err, syscall.ECONNREFUSED) {
			// An earlier datagram drew an ICMP port unreachable; the
			// error is reported once, so send again.
			_, err = f.conn.Write(buf[:n])
		}
		if err != nil && !errors.Is(err, net.ErrClosed) {
			p.log.Debug("forward datagram failed", "client", from.String(), "error", err)
		}
	}
}

// flowFor returns client's flow, marked active, opening it if there is
// none; nil if the datagram is to be dropped.
func (p *proxy) flowFor(client netip.AddrPort, local netip.Addr) *flow {
	p.mu.Lock()
	if f := p.flows[client]; f != nil {
		// Under p.mu, so expire sees either this mark or no flow.
		f.last.Store(int64(p.clock()))
		p.mu.Unlock()
		return f
	}
	full := len(p.flows) >= MaxUDPFlows
	p.mu.Unlock()
	if full {
		p.log.Debug("too many UDP flows, dropping datagram", "client", client.String(), "max", MaxUDPFlows)
		return nil
	}

	conn, err := p.dialContainer("udp")
	if err != nil {
		p.log.Debug("dial container failed, dropping datagram", "client", client.String(), "error", err)
		return nil
	}
	f := &flow{client: client, local: local, conn: conn}
	f.last.Store(int64(p.clock()))
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		conn.Close()
		return nil
	}
	p.flows[client] = f
	p.wg.Add(1)
	p.mu.Unlock()
	go p.replyUDP(f)
	return f
}

// replyUDP sends the container's datagrams back to f's client until the
// flow has been idle for the Mapper's idle timeout or is closed.
func (p *proxy) replyUDP(f *flow) {
	defer p.wg.Done()
	buf := make([]byte, MaxDatagramBytes)
	oob := packetInfo(f.local)
	for {
		wait := time.Duration(f.last.Load()) + p.m.udpIdle - p.clock()
		if wait <= 0 {
			if p.expire(f) {
				return
			}
			continue
		}
		f.conn.SetReadDeadline(time.Now().Add(wait))
		n, err := f.conn.Read(buf)
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				continue
			case errors.Is(err, syscall.ECONNREFUSED):
				// ICMP port unreachable from the container: nothing
				// listens there (yet). Keep the flow, as docker-proxy does.
				continue
			case !errors.Is(err, net.ErrClosed):
				p.log.Debug("read from container failed", "client", f.client.String(), "error", err)
			}
			p.remove(f)
			return
		}
		f.last.Store(int64(p.clock()))
		if _, _, err := p.pc.WriteMsgUDPAddrPort(buf[:n], oob, f.client); err != nil {
			if errors.Is(err, net.ErrClosed) {
				p.remove(f)
				return
			}
			p.log.Debug("reply to client failed", "client", f.client.String(), "error", err)
		}
	}
}

// expire closes f if it is still idle; false if it saw traffic meanwhile.
func (p *proxy) expire(f *flow) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clock()-time.Duration(f.last.Load()) < p.m.udpIdle {
		return false
	}
	if p.flows[f.client] == f {
		delete(p.flows, f.client)
	}
	f.conn.Close()
	p.log.Debug("UDP flow idle, closed", "client", f.client.String())
	return true
}

// remove forgets f and closes it.
func (p *proxy) remove(f *flow) {
	p.mu.Lock()
	if p.flows[f.client] == f {
		delete(p.flows, f.client)
	}
	p.mu.Unlock()
	f.conn.Close()
}
