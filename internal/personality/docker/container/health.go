package container

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// DockerExt decodes the Docker members of the image's config (Healthcheck,
// OnBuild, Shell) from the port layer's ConfigExtra; unknown or malformed
// members are left out.
func DockerExt(img portlayer.Image) dockerspec.DockerOCIImageConfigExt {
	var ext dockerspec.DockerOCIImageConfigExt
	if len(img.ConfigExtra) == 0 {
		return ext
	}
	b, err := json.Marshal(img.ConfigExtra)
	if err == nil {
		_ = json.Unmarshal(b, &ext)
	}
	return ext
}

// mergeHealthcheck is dockerd's merge of a container's healthcheck with
// its image's: none given takes the image's; a given one with no Test
// takes the image's Test, and each zero duration or retry count the
// image's value.
func mergeHealthcheck(user, img *container.HealthConfig) *container.HealthConfig {
	if img == nil {
		return user
	}
	if user == nil {
		c := *img
		return &c
	}
	c := *user
	if len(c.Test) == 0 {
		c.Test = img.Test
	}
	if c.Interval == 0 {
		c.Interval = img.Interval
	}
	if c.Timeout == 0 {
		c.Timeout = img.Timeout
	}
	if c.StartPeriod == 0 {
		c.StartPeriod = img.StartPeriod
	}
	if c.StartInterval == 0 {
		c.StartInterval = img.StartInterval
	}
	if c.Retries == 0 {
		c.Retries = img.Retries
	}
	return &c
}

// Healthcheck defaults and bounds (dockerd's daemon/health.go and
// container validation).
const (
	defaultProbeInterval      = 30 * time.Second
	defaultProbeTimeout       = 30 * time.Second
	defaultProbeStartInterval = 5 * time.Second
	defaultProbeRetries       = 3
	minProbeDuration          = time.Millisecond
	// maxProbeLog is how many results State.Health.Log keeps.
	maxProbeLog = 5
	// maxProbeOutput bounds the output kept per result, in bytes.
	maxProbeOutput = 4096
)

// validateHealthcheck refuses what dockerd refuses, with its texts.
func validateHealthcheck(h *container.HealthConfig) error {
	if h == nil {
		return nil
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Interval", h.Interval}, {"Timeout", h.Timeout}, {"StartPeriod", h.StartPeriod}, {"StartInterval", h.StartInterval}} {
		if d.v != 0 && d.v < minProbeDuration {
			return httputils.InvalidArgument("%s in Healthcheck cannot be less than %s", d.name, minProbeDuration)
		}
	}
	if h.Retries < 0 {
		return httputils.InvalidArgument("Retries in Healthcheck cannot be negative")
	}
	return nil
}

// healthProber is what the monitor uses of the port layer.
type healthProber interface {
	CreateExec(ctx context.Context, idOrName string, spec portlayer.ExecSpec) (string, error)
	StartExec(ctx context.Context, execID string, opts portlayer.ExecStartOptions) error
	InspectExec(ctx context.Context, execID string) (portlayer.ExecInfo, error)
}

// HealthMonitor runs the healthchecks of running containers as dockerd
// does (daemon/health.go): each probe is an exec in the container's VM,
// every Interval (StartInterval during StartPeriod), bounded by Timeout;
// a success makes the container healthy, Retries failures in a row
// (failures during StartPeriod do not count) unhealthy; the last 5
// results are kept; a change of status is published as a
// "health_status: <status>" container event. State lives in memory: after
// a daemon restart a running container is "starting" again until its
// next probe. Safe for concurrent use.
type HealthMonitor struct {
	execs   healthProber
	compute portlayer.Compute
	publish func(portlayer.Event)
	log     *slog.Logger

	mu     sync.Mutex
	probes map[string]*probe // by container ID
}

type probe struct {
	cancel context.CancelFunc
	health container.Health
}

// NewHealthMonitor returns a monitor probing through execs; publish (may
// be nil) receives health_status events.
func NewHealthMonitor(execs portlayer.Execs, compute portlayer.Compute, publish func(portlayer.Event), log *slog.Logger) *HealthMonitor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &HealthMonitor{execs: execs, compute: compute, publish: publish, log: log, probes: map[string]*probe{}}
}

// Run follows container starts and exits in events and probes every
// running container that has a healthcheck, until ctx ends.
func (m *HealthMonitor) Run(ctx context.Context, events portlayer.Events) {
	_, live := events.Subscribe(ctx, time.Time{}, true)
	if cs, err := m.compute.List(ctx); err == nil {
		for _, c := range cs {
			if c.State.Status == portlayer.StatusRunning || c.State.Status == portlayer.StatusPaused {
				m.watch(ctx, c)
			}
		}
	}
	for e := range live {
		if e.Type != "container" {
			continue
		}
		switch e.Action {
		case "start":
			if c, err := m.compute.Inspect(ctx, e.ID); err == nil {
				m.watch(ctx, c)
			}
		case "die", "destroy":
			m.stop(e.ID)
		}
	}
	m.mu.Lock()
	for id, p := range m.probes {
		p.cancel()
		delete(m.probes, id)
	}
	m.mu.Unlock()
}

// Health returns the container's health, or nil if it has no healthcheck
// being run.
func (m *HealthMonitor) Health(id string) *container.Health {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.probes[id]
	if p == nil {
		return nil
	}
	h := p.health
	h.Log = slices.Clone(h.Log)
	return &h
}

// HealthOf is c's health: the monitor's, or, for a running container
// with a healthcheck whose start the monitor has not seen yet (it learns
// of starts from events, a moment later), "starting" with no probes, as
// dockerd shows it from the start on.
func (m *HealthMonitor) HealthOf(c portlayer.Container) *container.Health {
	if h := m.Health(c.ID); h != nil || m == nil {
		return h
	}
	cfg, _ := storedConfig(c)
	hc := cfg.Healthcheck
	if c.State.Status != portlayer.StatusRunning || hc == nil || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
		return nil
	}
	return &container.Health{Status: container.Starting, Log: []*container.HealthcheckResult{}}
}

func (m *HealthMonitor) stop(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.probes[id]; p != nil {
		p.cancel()
		delete(m.probes, id)
	}
}

// watch starts probing c (again) if its config has a healthcheck.
func (m *HealthMonitor) watch(ctx context.Context, c portlayer.Container) {
	cfg, _ := storedConfig(c)
	hc := cfg.Healthcheck
	if hc == nil || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
		return
	}
	args, err := probeArgs(hc.Test)
	if err != nil {
		m.log.Warn("healthcheck not run", "container", c.ID, "err", err)
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	if old := m.probes[c.ID]; old != nil {
		old.cancel()
	}
	m.probes[c.ID] = &probe{cancel: cancel, health: container.Health{Status: container.Starting, Log: []*container.HealthcheckResult{}}}
	m.mu.Unlock()
	go m.loop(pctx, c, *hc, args)
}

// probeArgs turns a healthcheck Test into an exec's argv.
func probeArgs(test []string) ([]string, error) {
	switch {
	case test[0] == "CMD" && len(test) > 1:
		return test[1:], nil
	case test[0] == "CMD-SHELL" && len(test) == 2:
		return []string{"/bin/sh", "-c", test[1]}, nil
	}
	return nil, fmt.Errorf("unknown healthcheck type %q", test[0])
}

func (m *HealthMonitor) loop(ctx context.Context, c portlayer.Container, hc container.HealthConfig, args []string) {
	interval := cmp.Or(hc.Interval, defaultProbeInterval)
	timeout := cmp.Or(hc.Timeout, defaultProbeTimeout)
	startInterval := cmp.Or(hc.StartInterval, defaultProbeStartInterval)
	retries := cmp.Or(hc.Retries, defaultProbeRetries)
	started := c.State.StartedAt
	if started.IsZero() {
		started = time.Now()
	}
	inStart := func() bool { return hc.StartPeriod > 0 && time.Since(started) < hc.StartPeriod }
	for {
		wait := interval
		if inStart() {
			wait = startInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if cur, err := m.compute.Inspect(ctx, c.ID); err != nil || cur.State.Status != portlayer.StatusRunning {
			continue // paused or going away: no probe, as dockerd
		}
		res := m.runProbe(ctx, c.ID, args, timeout)
		if ctx.Err() != nil {
			return
		}
		m.record(c, res, retries, inStart())
	}
}

// runProbe runs one probe; a probe that cannot start or outlives timeout
// is a failure with exit code -1 (dockerd's texts).
func (m *HealthMonitor) runProbe(ctx context.Context, id string, args []string, timeout time.Duration) *container.HealthcheckResult {
	res := &container.HealthcheckResult{Start: time.Now(), ExitCode: -1}
	defer func() { res.End = time.Now() }()
	// The timeout counts from the probe's start in the guest (an exec
	// starts in ~100–200 ms under emulation, a few ms under runc); the
	// start itself is bounded apart, generously.
	pctx, cancel := context.WithTimeout(ctx, timeout+probeStartBound)
	defer cancel()
	execID, err := m.execs.CreateExec(pctx, id, portlayer.ExecSpec{Args: args, AttachStdout: true, AttachStderr: true})
	if err != nil {
		res.Output = httputils.PortLayerText(err)
		return res
	}
	if f, ok := m.execs.(portlayer.ExecForgetter); ok {
		defer func() { _ = f.ForgetExec(context.WithoutCancel(ctx), execID) }()
	}
	out := &limitedBuffer{max: maxProbeOutput}
	err = m.execs.StartExec(pctx, execID, portlayer.ExecStartOptions{Stdout: out, Stderr: out, Timeout: timeout})
	if (errors.Is(err, context.DeadlineExceeded) || pctx.Err() != nil) && ctx.Err() == nil {
		// dockerd's text, with what the probe printed before it was cut off.
		res.Output = fmt.Sprintf("Health check exceeded timeout (%s)", timeout)
		if o := out.String(); o != "" {
			res.Output += ": " + o
		}
		return res
	}
	if err != nil {
		res.Output = httputils.PortLayerText(err)
		return res
	}
	info, err := m.execs.InspectExec(ctx, execID)
	if err != nil || info.ExitCode == nil {
		res.Output = out.String()
		return res
	}
	res.ExitCode, res.Output = *info.ExitCode, out.String()
	return res
}

// probeStartBound bounds a probe's start, beyond its own timeout (which
// counts once it runs).
const probeStartBound = 30 * time.Second

// record applies a result (dockerd's handleProbeResult).
func (m *HealthMonitor) record(c portlayer.Container, res *container.HealthcheckResult, retries int, inStart bool) {
	m.mu.Lock()
	p := m.probes[c.ID]
	if p == nil {
		m.mu.Unlock()
		return
	}
	h := &p.health
	old := h.Status
	if res.ExitCode == 0 {
		h.FailingStreak, h.Status = 0, container.Healthy
	} else if !inStart {
		h.FailingStreak++
		if h.FailingStreak >= retries {
			h.Status = container.Unhealthy
		}
	}
	h.Log = append(h.Log, res)
	if len(h.Log) > maxProbeLog {
		h.Log = slices.Clone(h.Log[len(h.Log)-maxProbeLog:])
	}
	status := h.Status
	m.mu.Unlock()
	if status != old && m.publish != nil {
		m.publish(portlayer.Event{
			Time: time.Now(), Type: "container", Action: "health_status: " + string(status), ID: c.ID,
			Attributes: map[string]string{"name": c.Spec.Name, "image": c.Spec.ImageRef},
		})
	}
}

// healthText is the health part of `docker ps`'s status ("Up 3 seconds
// (healthy)"), as dockerd's State.String writes it.
func healthText(h *container.Health) string {
	switch {
	case h == nil:
		return ""
	case h.Status == container.Starting:
		return " (health: starting)"
	default:
		return " (" + string(h.Status) + ")"
	}
}

// limitedBuffer keeps the first max bytes written; safe for concurrent
// writers (a probe's stdout and stderr).
type limitedBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
