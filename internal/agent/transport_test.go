package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"

	"golang.org/x/crypto/ssh"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
)

// runEcho serves an "echo" process on ch (an SSH channel satisfies
// link.Channel): its argument to stdout, "err" to stderr, exit status 3
// (the same payload bytes on both transports, RFC 4254 §6.10).
func runEcho(ch link.Channel, p wire.Process) {
	_, _ = io.WriteString(ch, p.Args[1])
	_, _ = io.WriteString(ch.Stderr(), "err")
	_, _ = ch.SendRequest(wire.RequestExitStatus, false, wire.EncodeExitStatus(3))
	_ = ch.Close()
}

// sshGuest serves c as a v2 tether did: an SSH server that answers
// RequestSetup, runs "echo" processes (extra data a wire.Process) and
// rejects others with a wire.StartError.
func sshGuest(t *testing.T, c net.Conn) {
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(key)
	cfg.AddHostKey(signer)
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		t.Errorf("ssh guest: %v", err)
		return
	}
	go func() {
		for r := range reqs {
			_ = r.Reply(r.Type == wire.RequestSetup, nil)
		}
	}()
	for nc := range chans {
		var p wire.Process
		_ = json.Unmarshal(nc.ExtraData(), &p)
		if nc.ChannelType() != wire.ChannelProcess || len(p.Args) == 0 || p.Args[0] != "echo" {
			_ = nc.Reject(ssh.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "not found", ExitCode: 127})))
			continue
		}
		ch, creqs, _ := nc.Accept()
		go ssh.DiscardRequests(creqs)
		runEcho(ch, p)
	}
}

// TestSSHGuest: a guest of protocol v2 (an SSH server) skips the host's
// wire.Hello and gets SSH; requests, processes, stdout, stderr, exit
// status and start errors work as before.
func TestSSHGuest(t *testing.T) {
	host, g := testenv.SocketPair(t)
	go sshGuest(t, g)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Protocol() != wire.Version2 {
		t.Fatalf("protocol %q, want %q", c.Protocol(), wire.Version2)
	}
	checkClient(t, ctx, c)
}

// TestLinkGuest is the same against a v4 guest (wire.AcceptHello, then
// link.V4) and a v3 guest (one that answers wire.Hello, then link.V3: a VM
// booted by the previous daemon).
func TestLinkGuest(t *testing.T) {
	t.Run("v4", func(t *testing.T) { testLinkGuest(t, link.V4, wire.Version4) })
	t.Run("v3", func(t *testing.T) { testLinkGuest(t, link.V3, wire.Version3) })
}

func testLinkGuest(t *testing.T, v link.Version, want string) {
	host, g := testenv.SocketPair(t)
	go func() {
		if v == link.V4 {
			if err := wire.AcceptHello(g); err != nil {
				t.Errorf("hello: %v", err)
				return
			}
		} else {
			b := make([]byte, len(wire.Hello))
			if _, err := io.ReadFull(g, b); err != nil || string(b) != wire.Hello {
				t.Errorf("hello: %q %v", b, err)
				return
			}
			if _, err := g.Write([]byte(wire.Hello)); err != nil {
				t.Errorf("hello: %v", err)
				return
			}
		}
		_, chans, reqs, _ := link.Server(g, v)
		go func() {
			for r := range reqs {
				_ = r.Reply(r.Type == wire.RequestSetup, nil)
			}
		}()
		for nc := range chans {
			var p wire.Process
			_ = json.Unmarshal(nc.ExtraData(), &p)
			if len(p.Args) == 0 || p.Args[0] != "echo" {
				_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: "not found", ExitCode: 127})))
				continue
			}
			ch, creqs, _ := nc.Accept()
			go link.DiscardRequests(creqs)
			runEcho(ch, p)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Protocol() != want {
		t.Fatalf("protocol %q, want %q", c.Protocol(), want)
	}
	checkClient(t, ctx, c)
}

func checkClient(t *testing.T, ctx context.Context, c *Client) {
	t.Helper()
	if err := c.Setup(ctx, wire.Setup{Hostname: "h"}); err != nil {
		t.Fatalf("setup: %v", err)
	}
	if err := c.PowerOff(ctx); err == nil {
		t.Fatal("a refused request succeeded")
	}
	p, err := c.Start(ctx, wire.Process{Args: []string{"echo", "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(p.Stdout())
	errOut, _ := io.ReadAll(p.Stderr())
	code, err := p.Wait(ctx)
	if string(out) != "hello" || string(errOut) != "err" || code != 3 || err != nil {
		t.Fatalf("stdout %q stderr %q exit %d %v", out, errOut, code, err)
	}
	_, err = c.Start(ctx, wire.Process{Args: []string{"nope"}})
	se, ok := err.(*StartError)
	if !ok || se.ExitCode != 127 || se.Message != "not found" {
		t.Fatalf("start error = %#v", err)
	}
}

// TestHelloGarbage: a guest that answers neither hello nor SSH is
// Unavailable, not a hang.
func TestHelloGarbage(t *testing.T) {
	host, g := testenv.SocketPair(t)
	go func() {
		b := make([]byte, len(wire.Hello))
		_, _ = io.ReadFull(g, b)
		_, _ = io.WriteString(g, "hello there\n")
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, host); err == nil {
		t.Fatal("Dial succeeded")
	}
}
