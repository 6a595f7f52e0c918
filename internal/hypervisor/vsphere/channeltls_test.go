package vsphere

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/agent/serialauth"
	"github.com/vchproject/vch/internal/hypervisor"
)

// startResult is what a Start returned.
type startResult struct {
	vm  hypervisor.VM
	err error
}

// startAsync runs d.Start(ctx, s) on a goroutine of its own; its result
// arrives on the channel.
func startAsync(ctx context.Context, d *Driver, s hypervisor.Spec) <-chan startResult {
	res := make(chan startResult, 1)
	go func() {
		vm, err := d.Start(ctx, s)
		res <- startResult{vm, err}
	}()
	return res
}

// recorder is a connection that keeps every byte it reads and writes.
type recorder struct {
	net.Conn
	mu   sync.Mutex
	seen bytes.Buffer
}

func (r *recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.mu.Lock()
	r.seen.Write(b[:n])
	r.mu.Unlock()
	return n, err
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.seen.Write(b)
	r.mu.Unlock()
	return r.Conn.Write(b)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.seen.Bytes())
}

// exchange sends a line each way between the driver's channel and the
// guest's end, and fails unless each arrives whole.
func exchange(t *testing.T, host, guest io.ReadWriter, toGuest, toHost string) {
	t.Helper()
	if _, err := io.WriteString(guest, toHost); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(toHost))
	if _, err := io.ReadFull(host, buf); err != nil || string(buf) != toHost {
		t.Fatalf("host read %q, %v; want %q", buf, err, toHost)
	}
	if _, err := io.WriteString(host, toGuest); err != nil {
		t.Fatal(err)
	}
	buf = make([]byte, len(toGuest))
	if _, err := io.ReadFull(guest, buf); err != nil || string(buf) != toGuest {
		t.Fatalf("guest read %q, %v; want %q", buf, err, toGuest)
	}
}

// TestChannelTLS: a VM's channel runs TLS after the hello: what crosses
// the network carries neither direction's bytes in the clear, and the
// VM's configuration tells the guest (guestinfo) and a later Adopt (a
// key the guest cannot read) so. A peer that says a good hello and then
// no TLS, or TLS with a certificate whose key is not the VM's, is
// refused while Start goes on waiting.
func TestChannelTLS(t *testing.T) {
	e := newSim(t)
	d := e.vch()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res := startAsync(ctx, d, spec("t1"))
	g := guest{e: e, d: d, name: "t1"}
	info, err := g.waitInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info[GuestinfoChannelTLS] != "1" || info[ChannelTLSKey] != "1" {
		t.Errorf("configuration: %s=%q, %s=%q; want both 1", GuestinfoChannelTLS, info[GuestinfoChannelTLS], ChannelTLSKey, info[ChannelTLSKey])
	}
	secret, err := g.secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wrong := bytes.Clone(secret)
	wrong[0] ^= 1

	// afterHello says a good hello on a new connection, then does what
	// then says; the driver must close the connection and Start wait on.
	afterHello := func(t *testing.T, then func(c net.Conn)) {
		c, err := net.DialTimeout("tcp", g.addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(helloTimeout + 5*time.Second))
		if _, err := (guest{e: e, d: d, name: "t1", plain: true}).helloOn(c, "t1", secret); err != nil {
			t.Fatalf("hello: %v", err)
		}
		then(c)
		select {
		case r := <-res:
			t.Fatalf("Start returned after a refused channel: %v", r.err)
		default:
		}
	}
	t.Run("no_tls", func(t *testing.T) {
		afterHello(t, func(c net.Conn) {
			// The agent's first bytes without TLS: the driver's handshake
			// reads them as a malformed record and hangs up.
			if _, err := io.WriteString(c, "vch hello v4\n"); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("after no TLS: %v", err)
			}
			if bytes.Contains(b, []byte("vch")) {
				t.Errorf("the driver answered plain bytes after the hello: %q", b)
			}
		})
	})
	t.Run("tls_wrong_key", func(t *testing.T) {
		afterHello(t, func(c net.Conn) {
			cfg, err := serialauth.GuestTLS(wrong, "t1")
			if err != nil {
				t.Fatal(err)
			}
			cfg.VerifyPeerCertificate = nil // accept the driver, present the wrong key
			tc := tls.Client(c, cfg)
			// TLS 1.3: the client's handshake completes before the
			// server checks its certificate; the refusal comes as an
			// alert on the first read.
			err = tc.Handshake()
			if err == nil {
				_, err = tc.Read(make([]byte, 1))
			}
			// crypto/tls reports a peer's alert as a net.OpError
			// "remote error" (a timeout or EOF would not be one).
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "remote error" {
				t.Errorf("TLS with a key that is not the VM's: %v, want the driver's alert", err)
			}
		})
	})

	raw, err := net.DialTimeout("tcp", g.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Conn: raw}
	gc, err := g.helloOn(rec, "t1", secret)
	if err != nil {
		t.Fatalf("good hello after refused ones: %v", err)
	}
	defer gc.Close()
	if _, ok := gc.(*tls.Conn); !ok {
		t.Fatalf("the guest's channel is a %T, want TLS", gc)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("Start: %v", r.err)
	}
	defer r.vm.Kill()
	exchange(t, r.vm.Channel(), gc, "to the guest: env PASSWORD=hunter2\n", "from the guest: a container's output\n")
	wire := rec.bytes()
	for _, s := range []string{"PASSWORD=hunter2", "a container's output"} {
		if bytes.Contains(wire, []byte(s)) {
			t.Errorf("%q crossed the network in the clear", s)
		}
	}
	if n := e.logged("guest channel refused", 2); n < 2 {
		t.Errorf("%d refusals logged, want 2:\n%s", n, e.logs.String())
	}
}

// TestAdoptPlainChannel: a VM made before the channel had TLS (no
// ChannelTLSKey in its configuration) is adopted with the plain channel
// its guest still speaks.
func TestAdoptPlainChannel(t *testing.T) {
	e := newSim(t)
	ctx := t.Context()
	d1 := e.vch()
	st := e.start(d1, spec("old1"))
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	task, err := e.vm("old1").Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
		&types.OptionValue{Key: ChannelTLSKey, Value: ""}, &types.OptionValue{Key: GuestinfoChannelTLS, Value: ""}}})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	d2 := e.driver(func(c *Config) { c.ConnectTimeout = 5 * time.Second })
	g := guest{e: e, d: d2, name: "old1", plain: true}
	conn := make(chan net.Conn, 1)
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if uri, on := e.serialURI("old1"); uri == d2.ChannelURI() && on {
				c, err := g.hello("old1", st.secret)
				if err != nil {
					t.Errorf("plain hello: %v", err)
				}
				conn <- c
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		conn <- nil
	}()
	av, err := d2.Adopt(ctx, hypervisor.Spec{Name: "old1"})
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	defer av.Kill()
	c := <-conn
	if c == nil {
		t.Fatal("the guest never said hello to the second driver")
	}
	defer c.Close()
	if _, ok := c.(*tls.Conn); ok {
		t.Fatal("the old guest's channel is TLS")
	}
	ectx, ecancel := context.WithTimeout(ctx, 10*time.Second)
	defer ecancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		exchange(t, av.Channel(), c, "to the old guest\n", "from the old guest\n")
	}()
	select {
	case <-done:
	case <-ectx.Done():
		t.Fatal("no exchange on the adopted plain channel")
	}
}
