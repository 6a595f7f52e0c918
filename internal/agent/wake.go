package agent

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/agent/wire"
)

// AwaitTemplate reads the channel of a guest booted as a template
// (wire.TemplateCmdline) until it announces wire.TemplateReady: from then
// on the guest waits for its wake, and the VM can be saved. Unavailable
// if the channel ends, or ctx does, first.
func AwaitTemplate(ctx context.Context, c net.Conn) error {
	if err := expectLine(ctx, c, wire.TemplateReady); err != nil {
		return fmt.Errorf("agent: template not ready: %w", err)
	}
	return nil
}

// Wake sends a VM restored from a template its wire.Wake — the host's
// clock now, wire.EntropyBytes of fresh entropy from crypto/rand, and
// bootMACs (its NICs' hardware addresses in device order) — and returns
// once the guest answered wire.Awake; the channel then carries the
// session as for a booted guest (Dial). Unavailable if the guest does not
// answer before ctx ends, or the channel ends first.
func Wake(ctx context.Context, c net.Conn, bootMACs []string) error {
	return wake(ctx, c, bootMACs, false)
}

// WakeDeferred wakes a VM restored from a template for a container not
// yet known (wire.Wake.Deferred): the guest takes fresh entropy and the
// clock, then serves sessions (Dial) without a root; Client.Claim later
// makes it a container's. Errors are Wake's.
func WakeDeferred(ctx context.Context, c net.Conn) error {
	return wake(ctx, c, nil, true)
}

// newWake is a wake with the host's clock now and fresh entropy.
func newWake(bootMACs []string, deferred bool) (wire.Wake, []byte, error) {
	w := wire.Wake{TimeUnixNano: time.Now().UnixNano(), Entropy: make([]byte, wire.EntropyBytes), BootMACs: bootMACs, Deferred: deferred}
	if _, err := rand.Read(w.Entropy); err != nil {
		return w, nil, fmt.Errorf("agent: wake: entropy: %w", err)
	}
	b, err := json.Marshal(w)
	if err != nil {
		return w, nil, fmt.Errorf("agent: wake: %w", err)
	}
	if len(b)+1 > wire.MaxWakeBytes {
		return w, nil, fmt.Errorf("agent: wake of %d bytes exceeds %d: %w", len(b)+1, wire.MaxWakeBytes, errdefs.ErrInvalidArgument)
	}
	return w, b, nil
}

// Claim makes a guest woken with WakeDeferred the container's: it sends
// wire.RequestClaim with fresh entropy, the host's clock and bootMACs
// (the NICs' hardware addresses in device order) and returns once the
// guest has bound its root disk and mounted it. FailedPrecondition if the
// guest refuses (not a warm guest, or claimed already); Unavailable if
// the session fails.
func (c *Client) Claim(ctx context.Context, bootMACs []string) error {
	_, b, err := newWake(bootMACs, false)
	if err != nil {
		return err
	}
	ok, reply, err := c.conn.SendRequest(ctx, wire.RequestClaim, true, b)
	if err != nil {
		return fmt.Errorf("agent: claim: %w: %w", err, errdefs.ErrUnavailable)
	}
	if !ok {
		return fmt.Errorf("agent: claim refused: %s: %w", reply, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func wake(ctx context.Context, c net.Conn, bootMACs []string, deferred bool) error {
	_, b, err := newWake(bootMACs, deferred)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	_, err = c.Write(append(b, '\n'))
	if !stop() {
		return fmt.Errorf("agent: wake: %w: %w", ctx.Err(), errdefs.ErrUnavailable)
	}
	if err != nil {
		return fmt.Errorf("agent: wake: %w: %w", err, errdefs.ErrUnavailable)
	}
	if err := expectLine(ctx, c, wire.Awake); err != nil {
		return fmt.Errorf("agent: wake not answered: %w", err)
	}
	return nil
}

// expectLine reads c byte by byte (so nothing after the line is taken
// from the stream) until it has read want, which ends in '\n'; other
// bytes before it (a console line) are skipped. Bounded by ctx: the read
// is cut by a past deadline, which is then cleared.
func expectLine(ctx context.Context, c net.Conn, want string) error {
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			_ = c.SetReadDeadline(time.Time{})
		}
	}()
	var got []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
		}
		got = append(got, b[0])
		if b[0] != '\n' {
			if len(got) > wire.MaxWakeBytes {
				got = got[:0]
			}
			continue
		}
		if string(got) == want {
			return nil
		}
		got = got[:0]
	}
}
