package dns

import (
	"context"
	"errors"
	"fmt"
	"time"

	mdns "github.com/miekg/dns"
)

// forward sends q to the upstream resolvers and returns the first usable
// reply, or SERVFAIL (see Answer for the rules). It returns an error only
// when ctx ends.
func (r *Resolver) forward(ctx context.Context, q *mdns.Msg, v View) ([]byte, error) {
	question := q.Question[0]
	upstreams := r.upstreams
	if len(v.Upstreams) > 0 {
		upstreams = v.Upstreams
	}
	if !v.External || len(upstreams) == 0 {
		return r.pack(new(mdns.Msg).SetRcode(q, mdns.RcodeServerFailure))
	}

	wait := time.NewTimer(r.slotWait)
	select {
	case r.slots <- struct{}{}:
		wait.Stop()
	case <-wait.C:
		r.warnSometimes(warnBusy, "dns: too many queries being forwarded, answering REFUSED", "limit", cap(r.slots))
		return r.pack(new(mdns.Msg).SetRcode(q, mdns.RcodeRefused))
	case <-ctx.Done():
		wait.Stop()
		return nil, fmt.Errorf("dns: forward %s: %w", question.Name, ctx.Err())
	}
	defer func() { <-r.slots }()

	for _, upstream := range upstreams {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dns: forward %s: %w", question.Name, err)
		}
		resp, err := r.exchange(ctx, upstream, q)
		if err != nil {
			r.logger.Debug("dns: upstream failed", "upstream", upstream, "name", question.Name, "qtype", mdns.Type(question.Qtype).String(), "error", err)
			continue
		}
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			// REFUSED may be transitional and SERVFAIL is this server's
			// fault (RFC 1035 §4.1.1), so try the next one.
			r.logger.Debug("dns: upstream refused or failed", "upstream", upstream, "name", question.Name, "rcode", mdns.RcodeToString[resp.Rcode])
			continue
		}
		resp.Compress = true
		b, err := resp.Pack()
		if err != nil {
			r.logger.Debug("dns: cannot re-encode upstream reply", "upstream", upstream, "name", question.Name, "error", err)
			continue
		}
		r.logger.Debug("dns: forwarded", "upstream", upstream, "name", question.Name, "qtype", mdns.Type(question.Qtype).String(), "rcode", mdns.RcodeToString[resp.Rcode], "answers", len(resp.Answer))
		return b, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dns: forward %s: %w", question.Name, err)
	}
	r.warnSometimes(warnNoUpstream, "dns: no upstream resolver answered, answering SERVFAIL", "name", question.Name, "upstreams", upstreams)
	return r.pack(new(mdns.Msg).SetRcode(q, mdns.RcodeServerFailure))
}

// exchange asks one upstream: over UDP, then over TCP if the UDP reply is
// truncated (RFC 7766 §5), both within upstreamTimeout. The upstream sees
// a fresh random ID; the reply carries q's.
func (r *Resolver) exchange(ctx context.Context, upstream string, q *mdns.Msg) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()

	out := q.Copy()
	out.Id = mdns.Id()
	resp, _, err := r.udp.ExchangeContext(ctx, out, upstream)
	// A truncated reply may also fail to parse past its cut; its header
	// is still good enough to tell it was truncated.
	if resp != nil && resp.Truncated {
		resp, _, err = r.tcp.ExchangeContext(ctx, out, upstream)
	}
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, errors.New("dns: upstream sent no reply")
	}
	resp.Id = q.Id
	return resp, nil
}
