// Package dnsrelay is the guest side of vch's embedded DNS: inside a
// container VM it listens where Docker's embedded server does
// (127.0.0.11:53, UDP and TCP) and hands every query, as raw bytes, to a
// forward function; tether's forward sends it to the host over the tether
// channel, where package internal/portlayer/network/dns answers it.
//
// The relay owns the transports: reading and writing datagrams and the
// length-prefixed TCP stream (RFC 1035 §4.2), bounding work in flight, the
// per-query timeout, and cutting replies that exceed what a UDP client can
// take (RFC 1035 §4.2.1, RFC 6891 §6.2.5). It does not interpret names or
// answer anything itself. Only the standard library is used, to keep
// tether small and static.
package dnsrelay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	// QueryTimeout bounds one forward call, and the writing of its
	// reply. glibc's resolver waits 5 s (RES_TIMEOUT) before retrying.
	QueryTimeout = 5 * time.Second
	// MaxUDPInFlight bounds the UDP queries being forwarded at once;
	// further datagrams wait in the socket's receive buffer.
	MaxUDPInFlight = 64
	// MaxTCPConns bounds the TCP connections served at once; further
	// connections wait in the listen backlog.
	MaxTCPConns = 64
	// TCPIdleTimeout closes a TCP connection on which no complete query
	// arrives for this long (RFC 7766 §6.2.3 asks servers to time idle
	// connections out; clients send their query at once).
	TCPIdleTimeout = 10 * time.Second

	// headerLen is the size of a DNS message header (RFC 1035 §4.1.1).
	headerLen = 12
	// minUDPSize is the largest UDP reply every client takes (RFC 1035
	// §4.2.1), and the floor of an EDNS(0) size (RFC 6891 §6.2.5).
	minUDPSize = 512
	// maxMsgSize is the largest DNS message: a TCP length prefix is 16
	// bits (RFC 1035 §4.2.2).
	maxMsgSize = 65535
	// typeOPT is the EDNS(0) pseudo-record's type (RFC 6891 §6.1.1).
	typeOPT = 41
)

// Serve listens on addr (e.g. "127.0.0.11:53") for UDP and TCP DNS and
// calls forward for each raw query; replies with what forward returns;
// until ctx ends.
//
// addr is "ip:port". TCP listens on the port UDP got, so port 0 picks one
// free port for both (an error if it is taken for TCP).
//
// Each query is a whole DNS message; datagrams shorter than a header or
// with the QR bit set (responses) are dropped without calling forward.
// forward gets a ctx that ends after QueryTimeout or when Serve's ctx
// ends, and may be called concurrently: up to MaxUDPInFlight UDP queries
// at once, plus one query per TCP connection (up to MaxTCPConns). Its
// reply must be a whole message of 12 to 65,535 bytes; anything else is
// dropped like an error.
//
//   - UDP: one query per datagram, answered from the port it came to. A
//     forward error means no reply (the client retries). A reply longer
//     than the client takes (512 bytes, or the size in the query's EDNS(0)
//     OPT record when larger) is cut to its header and question with TC
//     set and no records, so the client retries over TCP (RFC 2181 §9,
//     RFC 7766 §5).
//   - TCP: each message has a 2-byte big-endian length prefix (RFC 1035
//     §4.2.2); queries on a connection are answered one after the other,
//     in order. A forward error, a bad query or TCPIdleTimeout without a
//     query closes the connection, which tells the client to retry.
//
// Serve returns nil once ctx has ended, after closing its sockets and
// connections and after every forward call has returned. It returns an
// error if it cannot listen, or if a socket fails while ctx is live (then
// it stops serving on both).
func Serve(ctx context.Context, addr string, forward func(ctx context.Context, query []byte) ([]byte, error)) error {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("dnsrelay: %w", err)
	}
	ln, err := lc.Listen(ctx, "tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dnsrelay: %w", err)
	}
	return serve(ctx, pc, ln, forward)
}

// serve runs the UDP and TCP loops on sockets that it takes over, until
// ctx ends or one of them fails.
func serve(ctx context.Context, pc net.PacketConn, ln net.Listener, forward func(context.Context, []byte) ([]byte, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the sockets is what stops the loops blocked in reads.
	context.AfterFunc(ctx, func() {
		pc.Close()
		ln.Close()
	})
	errs := make(chan error, 2)
	go func() { errs <- serveUDP(ctx, pc, forward) }()
	go func() { errs <- serveTCP(ctx, ln, forward) }()
	first := <-errs
	cancel()
	return errors.Join(first, <-errs)
}

// serveUDP reads datagrams until ctx ends, each forwarded in its own
// goroutine, at most MaxUDPInFlight at a time. It returns after all of
// them have finished: nil if ctx ended, else the read error.
func serveUDP(ctx context.Context, pc net.PacketConn, forward func(context.Context, []byte) ([]byte, error)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, MaxUDPInFlight)
	buf := make([]byte, maxMsgSize)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dnsrelay: read udp: %w", err)
		}
		if !isQuery(buf[:n]) {
			<-slots
			continue
		}
		query := append([]byte(nil), buf[:n]...)
		wg.Go(func() {
			defer func() { <-slots }()
			reply, err := forwardOne(ctx, forward, query)
			if err != nil || !isReply(reply) {
				return
			}
			_, _ = pc.WriteTo(truncate(reply, udpLimit(query)), from)
		})
	}
}

// serveTCP accepts connections until ctx ends, each served in its own
// goroutine, at most MaxTCPConns at a time. It returns after all of them
// have finished: nil if ctx ended, else the accept error.
func serveTCP(ctx context.Context, ln net.Listener, forward func(context.Context, []byte) ([]byte, error)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, MaxTCPConns)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		conn, err := ln.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dnsrelay: accept tcp: %w", err)
		}
		wg.Go(func() {
			defer func() { <-slots }()
			serveConn(ctx, conn, forward)
		})
	}
}

// serveConn answers the queries on one TCP connection in order, and
// closes it at the first failure, after TCPIdleTimeout without a query,
// or when ctx ends.
func serveConn(ctx context.Context, conn net.Conn, forward func(context.Context, []byte) ([]byte, error)) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var prefix [2]byte
	for {
		if err := conn.SetReadDeadline(time.Now().Add(TCPIdleTimeout)); err != nil {
			return
		}
		if _, err := io.ReadFull(conn, prefix[:]); err != nil {
			return
		}
		query := make([]byte, binary.BigEndian.Uint16(prefix[:]))
		if _, err := io.ReadFull(conn, query); err != nil {
			return
		}
		if !isQuery(query) {
			return
		}
		reply, err := forwardOne(ctx, forward, query)
		if err != nil || !isReply(reply) {
			return
		}
		out := make([]byte, 2+len(reply))
		binary.BigEndian.PutUint16(out, uint16(len(reply)))
		copy(out[2:], reply)
		if err := conn.SetWriteDeadline(time.Now().Add(QueryTimeout)); err != nil {
			return
		}
		if _, err := conn.Write(out); err != nil {
			return
		}
	}
}

// forwardOne calls forward with a ctx bounded by QueryTimeout.
func forwardOne(ctx context.Context, forward func(context.Context, []byte) ([]byte, error), query []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, QueryTimeout)
	defer cancel()
	return forward(ctx, query)
}

// isQuery reports whether msg can be a DNS query: a whole header with the
// QR bit clear (RFC 1035 §4.1.1). Responses are never relayed, so two
// resolvers cannot bounce a message between them.
func isQuery(msg []byte) bool {
	return len(msg) >= headerLen && msg[2]&0x80 == 0
}

// isReply reports whether msg can be sent back: a whole header, and short
// enough for a TCP length prefix.
func isReply(msg []byte) bool {
	return len(msg) >= headerLen && len(msg) <= maxMsgSize
}
