package tether

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/vchproject/vch/internal/tether/wire"
)

// server serves the host's SSH connection on the virtio-serial port.
type server struct {
	logger *slog.Logger
	reaper *reaper
	config *ssh.ServerConfig

	nics nics

	mu           sync.Mutex
	mainPid      int  // the container's main process while it runs, else 0
	mainStarting bool // a main process is being started
}

func newServer(logger *slog.Logger, r *reaper) *server {
	// The channel is a private virtio-serial port that only the VMM can
	// reach, so there is no client authentication; the host key is fresh
	// per boot and only keeps the SSH handshake well-formed.
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		panic(err)
	}
	cfg.AddHostKey(signer)
	return &server{logger: logger, reaper: r, config: cfg}
}

// serve runs SSH sessions on the port, one after another (a host that
// reconnects gets a new session), until a power-off request.
func (s *server) serve(port *os.File) error {
	conn := &portConn{File: port}
	sc, chans, reqs, err := ssh.NewServerConn(conn, s.config)
	if err != nil {
		return fmt.Errorf("tether: ssh handshake: %w", err)
	}
	s.logger.Info("host connected")
	go func() {
		for nc := range chans {
			go s.handleChannel(nc)
		}
	}()
	for req := range reqs {
		switch req.Type {
		case wire.RequestSetup:
			var setup wire.Setup
			if err := json.Unmarshal(req.Payload, &setup); err != nil {
				replyErr(req, fmt.Errorf("tether: bad setup: %w", err))
				continue
			}
			if err := applySetup(context.Background(), setup); err != nil {
				replyErr(req, err)
				continue
			}
			if err := s.nics.setupAll(setup.Interfaces); err != nil {
				replyErr(req, err)
				continue
			}
			if setup.DNSRelay != "" {
				s.startDNSRelay(sc, setup.DNSRelay)
			}
			_ = req.Reply(true, nil)
		case wire.RequestInterface:
			var f wire.Interface
			err := json.Unmarshal(req.Payload, &f)
			if err == nil {
				err = s.nics.configure(f)
			}
			if err != nil {
				replyErr(req, err)
				continue
			}
			_ = req.Reply(true, nil)
		case wire.RequestClock:
			var c wire.Clock
			err := json.Unmarshal(req.Payload, &c)
			if err == nil {
				tv := unix.NsecToTimeval(c.TimeUnixNano)
				err = unix.Settimeofday(&tv)
			}
			if err != nil {
				replyErr(req, fmt.Errorf("tether: set clock: %w", err))
				continue
			}
			_ = req.Reply(true, nil)
		case wire.RequestTop, wire.RequestStats:
			s.mu.Lock()
			mainPid := s.mainPid
			s.mu.Unlock()
			var reply any
			var err error
			if req.Type == wire.RequestTop {
				if mainPid == 0 {
					err = errors.New("the container's main process is not running")
				} else {
					reply, err = top(mainPid)
				}
			} else {
				reply, err = stats(mainPid)
			}
			if err != nil {
				replyErr(req, err)
				continue
			}
			_ = req.Reply(true, wire.Encode(reply))
		case wire.RequestArchiveStat:
			go handleArchiveStat(req)
		case wire.RequestPowerOff:
			s.logger.Info("power-off requested")
			_ = req.Reply(true, nil)
			_ = sc.Close()
			return nil
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	return errors.New("tether: host connection closed")
}

func replyErr(req *ssh.Request, err error) {
	if req.WantReply {
		_ = req.Reply(false, []byte(err.Error()))
	}
}

func (s *server) handleChannel(nc ssh.NewChannel) {
	if isArchiveChannel(nc.ChannelType()) {
		s.handleArchiveChannel(nc)
		return
	}
	if nc.ChannelType() != wire.ChannelProcess {
		_ = nc.Reject(ssh.UnknownChannelType, "unknown channel type")
		return
	}
	var spec wire.Process
	if err := json.Unmarshal(nc.ExtraData(), &spec); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "bad process spec: " + err.Error(), ExitCode: 126})))
		return
	}
	s.mu.Lock()
	mainPid := s.mainPid
	if !spec.Exec {
		if mainPid != 0 || s.mainStarting {
			s.mu.Unlock()
			_ = nc.Reject(ssh.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "the main process is already running", ExitCode: 126})))
			return
		}
		s.mainStarting = true
	}
	s.mu.Unlock()
	proc, err := startProcess(s.reaper, spec, mainPid)
	if !spec.Exec {
		// Record the main process before the host learns it started, so an
		// exec that follows at once finds it.
		s.mu.Lock()
		s.mainStarting = false
		if err == nil {
			s.mainPid = proc.pid
		}
		s.mu.Unlock()
		if err == nil {
			defer func() {
				s.mu.Lock()
				s.mainPid = 0
				s.mu.Unlock()
			}()
		}
	}
	if err != nil {
		se := wire.StartError{Message: err.Error(), ExitCode: 126}
		var ste *startError
		if errors.As(err, &ste) {
			se.ExitCode = ste.code
		}
		s.logger.Info("process start failed", "args", spec.Args, "err", err)
		_ = nc.Reject(ssh.ConnectionFailed, string(wire.Encode(se)))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		_ = proc.signal(9)
		return
	}
	s.logger.Info("process started", "pid", proc.pid, "args0", spec.Args[0], "exec", spec.Exec)
	go func() {
		for req := range reqs {
			switch req.Type {
			case wire.RequestSignal:
				var sig wire.Signal
				err := json.Unmarshal(req.Payload, &sig)
				if err == nil {
					err = proc.signal(sig.Number)
				}
				if req.WantReply {
					_ = req.Reply(err == nil, nil)
				}
			case wire.RequestWindowChange:
				var wc struct{ Cols, Rows, Width, Height uint32 }
				if ssh.Unmarshal(req.Payload, &wc) == nil {
					proc.resize(wc.Rows, wc.Cols)
				}
				if req.WantReply {
					_ = req.Reply(true, nil)
				}
			default:
				if req.WantReply {
					_ = req.Reply(false, nil)
				}
			}
		}
	}()
	var stdin = ch
	code := proc.pump(stdin, ch, ch.Stderr())
	s.logger.Info("process exited", "pid", proc.pid, "exit_code", code)
	_, _ = ch.SendRequest(wire.RequestExitStatus, false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	_ = ch.Close()
}

// portConn adapts the virtio-serial port's file to net.Conn for the SSH
// library; it has no meaningful addresses.
type portConn struct{ *os.File }

func (c *portConn) LocalAddr() net.Addr  { return portAddr{} }
func (c *portConn) RemoteAddr() net.Addr { return portAddr{} }
func (c *portConn) SetDeadline(t time.Time) error {
	return c.File.SetDeadline(t)
}

type portAddr struct{}

func (portAddr) Network() string { return "virtio-serial" }
func (portAddr) String() string  { return wire.PortName }
