package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/hypervisor"
	"github.com/vchproject/vch/internal/hypervisor/vsphere"
	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/portlayer/storage"
	"github.com/vchproject/vch/internal/portlayer/volume"
	"github.com/vchproject/vch/internal/vch"
	"github.com/vchproject/vch/internal/vch/certs"
)

// Manager deploys and manages the VCHs under one base directory. Its
// methods may run concurrently with each other and with other vch
// processes: Create serialises on BASE/.lock.
type Manager struct {
	// Base holds one state directory per VCH; default DefaultBaseDir.
	Base string
	// Binary is the vch binary the services run; must be absolute.
	Binary string
	// Version is this vch's version, recorded in config.json.
	Version string
	// Service forces the service kind for new VCHs (ServiceSystemd or
	// ServiceProcess); "" picks systemd when SystemdRunning.
	Service string
	// UnitDir is where systemd units are written; default
	// /etc/systemd/system.
	UnitDir string
	// Progress receives one line per long step; nil discards them.
	Progress io.Writer
	// Getenv reads the environment (the vSphere target's credentials,
	// TargetUsernameEnv and TargetPasswordEnv); nil means os.Getenv.
	Getenv func(string) string
	// run runs systemctl; nil means runCommand. Tests replace it.
	run func(ctx context.Context, name string, args ...string) error
}

// CreateOptions are `vch create`'s choices.
type CreateOptions struct {
	// Name names the VCH (see ValidateName).
	Name string
	// Host is the endpoint, tcp://ADDR:PORT or unix:///PATH; "" picks
	// tcp://127.0.0.1:2376 (or the next port that is free and no other
	// VCH claims) with TLS, or the state directory's docker.sock without.
	Host string
	// TLS serves TCP over TLS; TLSVerify also requires client certificates.
	TLS, TLSVerify bool
	// TLSCNames are extra server certificate names (--tls-cname).
	TLSCNames []string
	// TLSCertPath is where certificates are read from (if it holds a
	// server-cert.pem) or generated; "" means STATE/certs.
	TLSCertPath string
	// Accel is the accelerator: auto, kvm or tcg ("" is auto).
	Accel string
	// Limits are the resource limits; zero fields mean none or default.
	Limits Limits
	// Registries is the pull policy.
	Registries Registries
	// VolumeStores are "NAME:PATH" volume stores and, with VSphere,
	// "NAME:ds://DATASTORE/PATH" ones.
	VolumeStores []string
	// LogLevel is the daemon's log level ("" is info).
	LogLevel string
	// LogDriver and LogOpts are the containers' default logging driver
	// and options (Config.LogDriver); empty: json-file.
	LogDriver string
	LogOpts   map[string]string
	// VSphere, when not nil, deploys the VCH on a vSphere target too (see
	// VSphereOptions): its pool, folder and directories are made there.
	VSphere *VSphereOptions
}

// Created is a new VCH and what to tell its users.
type Created struct {
	Status Status
	// Env is the shell line to paste: export DOCKER_HOST=… (and the TLS
	// variables).
	Env string
	// Context is the `docker context create` line.
	Context string
}

func (m *Manager) base() string {
	if m.Base == "" {
		return DefaultBaseDir
	}
	return m.Base
}

// Layout returns the state directory layout of the VCH name.
func (m *Manager) Layout(name string) Layout { return Layout{Dir: filepath.Join(m.base(), name)} }

func (m *Manager) progress(format string, args ...any) {
	if m.Progress != nil {
		fmt.Fprintf(m.Progress, format+"\n", args...)
	}
}

func (m *Manager) service(l Layout, c Config) service {
	run := m.run
	if run == nil {
		run = runCommand
	}
	if c.Service == ServiceSystemd {
		dir := m.UnitDir
		if dir == "" {
			dir = "/etc/systemd/system"
		}
		return &systemdService{unitDir: dir, layout: l, cfg: c, run: run}
	}
	return &processService{base: m.base(), layout: l, cfg: c}
}

// ValidateLimits checks limits. InvalidArgument states the allowed range.
func ValidateLimits(l Limits) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("vch: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	switch {
	case l.Containers < 0:
		return bad("--containers %d: want 0 (no limit) or more", l.Containers)
	case l.MemoryMiB != 0 && l.MemoryMiB < hypervisor.MinMemoryMiB:
		return bad("--memory %d MiB: want 0 (no limit) or at least %d MiB", l.MemoryMiB, hypervisor.MinMemoryMiB)
	case l.CPUs < 0:
		return bad("--cpu %d: want 0 (no limit) or more", l.CPUs)
	case l.DefaultContainerMemoryMiB != 0 && (l.DefaultContainerMemoryMiB < hypervisor.MinMemoryMiB || l.DefaultContainerMemoryMiB > hypervisor.MaxMemoryMiB):
		return bad("--default-container-memory %d MiB: want %d to %d MiB", l.DefaultContainerMemoryMiB, hypervisor.MinMemoryMiB, hypervisor.MaxMemoryMiB)
	case l.DefaultContainerCPUs < 0 || l.DefaultContainerCPUs > hypervisor.MaxCPUs:
		return bad("--default-container-cpus %d: want 1 to %d", l.DefaultContainerCPUs, hypervisor.MaxCPUs)
	case l.MemoryMiB > 0 && l.DefaultContainerMemoryMiB > l.MemoryMiB:
		return bad("--default-container-memory %d MiB exceeds --memory %d MiB", l.DefaultContainerMemoryMiB, l.MemoryMiB)
	case l.CPUs > 0 && l.DefaultContainerCPUs > l.CPUs:
		return bad("--default-container-cpus %d exceeds --cpu %d", l.DefaultContainerCPUs, l.CPUs)
	}
	return nil
}

// validateConfig checks what Create and Configure write.
func validateConfig(c Config) error {
	if err := ValidateName(c.Name); err != nil {
		return err
	}
	if err := ValidateLimits(c.Limits); err != nil {
		return err
	}
	switch c.Accel {
	case "", "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("vch: --accel %q: want auto, kvm or tcg: %w", c.Accel, errdefs.ErrInvalidArgument)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("vch: --log-level %q: want debug, info, warn or error: %w", c.LogLevel, errdefs.ErrInvalidArgument)
	}
	if err := vch.CheckLogDefaults(c.LogDriver, c.LogOpts); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, vs := range c.VolumeStores {
		name, _, _ := strings.Cut(vs, ":")
		if IsDatastoreVolumeStore(vs) {
			if err := validateDatastoreStore(c, vs); err != nil {
				return err
			}
		} else if _, _, err := volume.ParseStore(vs); err != nil {
			return err
		}
		if names[name] {
			return fmt.Errorf("vch: --volume-store %s: the name %s is given twice: %w", vs, name, errdefs.ErrInvalidArgument)
		}
		names[name] = true
	}
	return storage.Registries{Insecure: c.Registries.Insecure, Allowed: c.Registries.Whitelist, CAFiles: c.Registries.CAFiles}.Validate()
}

// Create deploys a VCH: state directory, certificates, config, service;
// it returns once the daemon answers (up to ReadyTimeout). With
// o.VSphere it first logs in to the target (credentials from the URL or
// the environment, saved in the credentials file) and makes the VCH's
// resource pool, VM folder, image store directory and datastore volume
// store directories there. On failure it removes what it made, on
// vSphere too. AlreadyExists if the VCH exists, here or on the target;
// Unauthenticated if the target refuses the credentials; NotFound for a
// compute resource, datastore or network the target does not have;
// InvalidArgument for bad options (a non-loopback TCP host without TLS
// among them); FailedPrecondition if the endpoint's port is taken;
// Unavailable if the daemon does not come up (the error holds its log).
func (m *Manager) Create(ctx context.Context, o CreateOptions) (res Created, err error) {
	if !filepath.IsAbs(m.Binary) {
		return Created{}, fmt.Errorf("vch: binary path %q is not absolute: %w", m.Binary, errdefs.ErrInvalidArgument)
	}
	kind := m.Service
	if kind == "" {
		kind = ServiceProcess
		if SystemdRunning() {
			kind = ServiceSystemd
		}
	}
	if kind != ServiceProcess && kind != ServiceSystemd {
		return Created{}, fmt.Errorf("vch: service %q: want %s or %s: %w", kind, ServiceSystemd, ServiceProcess, errdefs.ErrInvalidArgument)
	}
	c := Config{
		Name: o.Name, Created: time.Now().UTC(), VCHVersion: m.Version, Binary: m.Binary,
		TLS:   TLS{Enabled: o.TLS, Verify: o.TLS && o.TLSVerify, CNames: o.TLSCNames},
		Accel: o.Accel, Limits: o.Limits, Registries: o.Registries, VolumeStores: o.VolumeStores, Service: kind, LogLevel: o.LogLevel, LogDriver: o.LogDriver, LogOpts: o.LogOpts,
	}
	var creds Credentials
	if o.VSphere != nil {
		if c.VSphere, creds, err = prepareVSphere(*o.VSphere, o.Name, o.VolumeStores, m.getenv); err != nil {
			return Created{}, err
		}
	}
	if err := validateConfig(c); err != nil {
		return Created{}, err
	}
	l := m.Layout(o.Name)
	if len(l.AdminSocket()) > maxSocketPath {
		return Created{}, fmt.Errorf("vch: state directory %s is too long for a unix socket path (at most %d bytes with /docker.sock): %w", l.Dir, maxSocketPath, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(m.base(), 0o755); err != nil {
		return Created{}, fmt.Errorf("vch: %w", err)
	}
	unlock, err := lockBase(m.base())
	if err != nil {
		return Created{}, err
	}
	defer unlock()
	if c.Host, err = m.pickHost(o, l); err != nil {
		return Created{}, err
	}
	if _, err := os.Stat(l.Dir); err == nil {
		return Created{}, fmt.Errorf("vch: a VCH named %s already exists (%s): %w", o.Name, l.Dir, errdefs.ErrAlreadyExists)
	}
	// Log in before anything is made: a wrong password or an unreachable
	// target leaves nothing behind.
	var vs *vsphere.Driver
	var made vsphereMade
	if c.VSphere != nil {
		m.progress("Logging in to %s", c.VSphere.Target)
		if vs, err = m.connectVSphere(ctx, c.Name, c.VSphere, creds); err != nil {
			return Created{}, err
		}
		defer vs.Close()
	}
	if err := os.Mkdir(l.Dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return Created{}, fmt.Errorf("vch: a VCH named %s already exists (%s): %w", o.Name, l.Dir, errdefs.ErrAlreadyExists)
		}
		return Created{}, fmt.Errorf("vch: %w", err)
	}
	m.progress("Creating VCH %s in %s", o.Name, l.Dir)
	// svc is the service once started: the same value stops it, since it
	// knows a supervisor that has not written its pid file yet.
	var svc service
	defer func() {
		if err != nil {
			m.progress("Creating VCH %s failed; removing what was made", o.Name)
			// Not ctx: a cancelled create must still clean up.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StopTimeout+10*time.Second)
			defer cancel()
			if svc == nil {
				svc = m.service(l, c)
			}
			_ = svc.Uninstall(cctx)
			_ = stopDaemon(cctx, l)
			if vs != nil {
				if uerr := m.undoVSphere(cctx, vs, made); uerr != nil {
					m.progress("Could not remove all that was made on %s: %v", c.VSphere.Target, scrub(uerr, creds))
				}
			}
			_ = m.remove(l, c)
		}
	}()
	if err := os.MkdirAll(l.Logs(), 0o700); err != nil {
		return Created{}, fmt.Errorf("vch: %w", err)
	}
	if c.TLS.Enabled {
		if err := m.setupCerts(&c, o, l); err != nil {
			return Created{}, err
		}
	}
	if vs != nil {
		if err := saveCredentials(l, creds); err != nil {
			return Created{}, err
		}
		m.progress("Saved the target's credentials in %s (mode 0600)", l.CredentialsFile())
		if err := m.createOnVSphere(ctx, vs, &c, &made); err != nil {
			return Created{}, scrub(err, creds)
		}
		m.progress("Container VMs will run on %s (the daemon's driver configuration is in %s)", c.VSphere.Target, l.VSphereConfigFile())
	}
	if err := SaveConfig(l, c); err != nil {
		return Created{}, err
	}
	svc = m.service(l, c)
	m.progress("Starting the daemon under the %s", svc.Describe())
	if err := svc.Start(ctx); err != nil {
		return Created{}, err
	}
	if err := m.waitReady(ctx, l, c, svc); err != nil {
		return Created{}, err
	}
	st := m.status(ctx, l, c)
	m.progress("VCH %s is running: vch %s, Docker API %s, daemon pid %d", o.Name, st.Versions.Daemon, st.Versions.APIVersion, st.Pid)
	env, dctx := ClientLines(c, st.Endpoint)
	return Created{Status: st, Env: env, Context: dctx}, nil
}

// ClientLines returns the shell line exporting DOCKER_HOST (and
// DOCKER_TLS_VERIFY and DOCKER_CERT_PATH with TLS) and the equivalent
// `docker context create` line.
func ClientLines(c Config, ep Endpoint) (env, dockerContext string) {
	ctxName := c.Name
	if ctxName == "default" {
		ctxName = "vch-default" // docker reserves "default"
	}
	env = "export DOCKER_HOST=" + ep.DockerHost
	docker := "host=" + ep.DockerHost
	if ep.TLS {
		if ep.CertPath != "" {
			env += " DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=" + shellQuote(ep.CertPath)
			docker += fmt.Sprintf(",ca=%s,cert=%s,key=%s",
				filepath.Join(ep.CertPath, certs.CAFile), filepath.Join(ep.CertPath, certs.CertFile), filepath.Join(ep.CertPath, certs.KeyFile))
		} else {
			// Operator-supplied certificates: the user brings a client
			// certificate the VCH's CA signed.
			env += " DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=/path/to/your/client/certs"
			docker += ",ca=/path/to/ca.pem,cert=/path/to/cert.pem,key=/path/to/key.pem"
		}
	}
	return env, "docker context create " + ctxName + " --docker " + shellQuote(docker)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lockBase locks the base directory itself (flock on its descriptor, so
// no lock file is left behind) for the duration of a create.
func lockBase(base string) (func(), error) {
	f, err := os.Open(base)
	if err != nil {
		return nil, fmt.Errorf("vch: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("vch: lock %s: %w", base, err)
	}
	return func() { f.Close() }, nil
}

// pickHost resolves the endpoint: the default one with a free port, or
// the operator's, checked.
func (m *Manager) pickHost(o CreateOptions, l Layout) (string, error) {
	claimed := m.claimedHosts()
	if o.Host == "" {
		if !o.TLS {
			return "unix://" + l.AdminSocket(), nil
		}
		for p := DefaultPort; p < DefaultPort+portSearch; p++ {
			h := "tcp://127.0.0.1:" + strconv.Itoa(p)
			if !claimed[h] && portFree("127.0.0.1:"+strconv.Itoa(p)) {
				return h, nil
			}
		}
		return "", fmt.Errorf("vch: no free port in %d..%d on 127.0.0.1; pass --host: %w", DefaultPort, DefaultPort+portSearch-1, errdefs.ErrFailedPrecondition)
	}
	h := o.Host
	if !strings.Contains(h, "://") {
		h = "tcp://" + h
	}
	u, err := docker.ParseHost(h)
	if err != nil {
		return "", fmt.Errorf("vch: --host %q: want tcp://ADDR:PORT or unix:///PATH.sock: %w", o.Host, errdefs.ErrInvalidArgument)
	}
	if u.Scheme == "unix" {
		if claimed[h] {
			return "", fmt.Errorf("vch: --host %s is another VCH's socket: %w", h, errdefs.ErrFailedPrecondition)
		}
		return h, nil
	}
	addr, port, _ := net.SplitHostPort(u.Host)
	if port == "0" {
		return "", fmt.Errorf("vch: --host %s: name a port: %w", h, errdefs.ErrInvalidArgument)
	}
	if !o.TLS && !docker.IsLoopback(addr) {
		return "", fmt.Errorf("vch: --host %s with --no-tls: without TLS a VCH listens on loopback addresses only: %w", h, errdefs.ErrInvalidArgument)
	}
	if claimed[h] {
		return "", fmt.Errorf("vch: --host %s is another VCH's endpoint: %w", h, errdefs.ErrFailedPrecondition)
	}
	if !portFree(u.Host) {
		return "", fmt.Errorf("vch: --host %s: the port is in use: %w", h, errdefs.ErrFailedPrecondition)
	}
	return h, nil
}

// claimedHosts are the endpoints of the VCHs already under the base
// directory, running or not.
func (m *Manager) claimedHosts() map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(m.base())
	for _, e := range ents {
		if c, err := LoadConfig(Layout{Dir: filepath.Join(m.base(), e.Name())}); err == nil {
			out[c.Host] = true
		}
	}
	return out
}

func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// setupCerts loads the operator's certificates from --tls-cert-path, or
// generates a set there (or in STATE/certs).
func (m *Manager) setupCerts(c *Config, o CreateOptions, l Layout) error {
	dir := o.TLSCertPath
	if dir == "" {
		dir = l.CertDir()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("vch: %w", err)
	}
	c.TLS.CertDir = dir
	if _, err := os.Stat(filepath.Join(dir, certs.ServerCertFile)); err == nil {
		s, err := certs.Load(dir)
		if err != nil {
			return err
		}
		m.progress("Using the certificates in %s (CA %q, server %q)", dir, s.CA.Subject.CommonName, s.Server.Subject.CommonName)
		return nil
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		c.TLS.CertDirCreated = true
	}
	hosts := slices.Clone(o.TLSCNames)
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	if u, err := url.Parse(c.Host); err == nil && u.Scheme == "tcp" {
		hosts = append(hosts, u.Hostname())
	}
	// Record before generating, so a failure half-way is cleaned up.
	c.TLS.Generated = true
	s, err := certs.Generate(dir, certs.Options{Name: c.Name, Hosts: hosts})
	if err != nil {
		return err
	}
	var names []string
	names = append(names, s.Server.DNSNames...)
	for _, ip := range s.Server.IPAddresses {
		names = append(names, ip.String())
	}
	m.progress("Generated a CA, a server certificate (for %s) and a client certificate in %s", strings.Join(names, ", "), dir)
	return nil
}

// waitReady waits until the daemon answers on the admin socket and, for
// TCP, on the endpoint itself through TLS with the client bundle.
func (m *Manager) waitReady(ctx context.Context, l Layout, c Config, svc service) error {
	m.progress("Waiting for %s to answer", c.Host)
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	api := newAPIClient(l.AdminSocket())
	var last error
	for {
		last = api.get(ctx, "/_ping", nil)
		if last == nil {
			last = pingEndpoint(ctx, c)
			if last == nil {
				return nil
			}
		}
		if ok, err := svc.Active(); !ok && err != nil {
			return fmt.Errorf("%w: %w\n%s", err, errdefs.ErrUnavailable, logTails(l))
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return fmt.Errorf("vch: interrupted while waiting for the daemon: %w", ctx.Err())
			}
			return fmt.Errorf("vch: the daemon did not answer within %s: %w: %w\n%s", ReadyTimeout, last, errdefs.ErrUnavailable, logTails(l))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// pingEndpoint GETs /_ping on the endpoint users get, as they would.
func pingEndpoint(ctx context.Context, c Config) error {
	u, err := url.Parse(c.Host)
	if err != nil || u.Scheme != "tcp" {
		return nil // the unix endpoint is the admin socket
	}
	addr := u.Host
	if ip := net.ParseIP(u.Hostname()); u.Hostname() == "" || ip != nil && ip.IsUnspecified() {
		// Listening on every address: ask on loopback, which the server
		// certificate names.
		addr = net.JoinHostPort("127.0.0.1", u.Port())
		if ip != nil && ip.To4() == nil {
			addr = net.JoinHostPort("::1", u.Port())
		}
	}
	tr := &http.Transport{DisableKeepAlives: true}
	scheme := "http"
	if c.TLS.Enabled {
		scheme = "https"
		client := filepath.Join(c.TLS.CertDir, certs.ClientDir)
		if _, err := os.Stat(filepath.Join(client, certs.CertFile)); err != nil {
			// No client bundle (operator's certificates): a TCP connect
			// is all that can be checked.
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return conn.Close()
		}
		cfg, err := certs.ClientTLS(client)
		if err != nil {
			return err
		}
		tr.TLSClientConfig = cfg
	}
	hc := &http.Client{Transport: tr, Timeout: pingTimeout}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/_ping", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("vch: GET %s: %w", req.URL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("vch: GET %s: %s", req.URL, resp.Status)
	}
	return nil
}

// logTails returns the ends of the VCH's logs, for errors.
func logTails(l Layout) string {
	var b bytes.Buffer
	for _, p := range []string{l.SuperviseLog(), l.DaemonLog()} {
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			continue
		}
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- %s (tail) ---\n%s", p, data)
	}
	return b.String()
}

// Names lists the VCHs under the base directory, sorted.
func (m *Manager) Names() ([]string, error) {
	ents, err := os.ReadDir(m.base())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vch: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(m.base(), e.Name(), "config.json")); err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// List reports every VCH under the base directory, sorted by name.
func (m *Manager) List(ctx context.Context) ([]Status, error) {
	names, err := m.Names()
	if err != nil {
		return nil, err
	}
	var out []Status
	for _, n := range names {
		l := m.Layout(n)
		c, err := LoadConfig(l)
		if err != nil {
			continue
		}
		out = append(out, m.status(ctx, l, c))
	}
	return out, nil
}

// load reads the VCH name's config. NotFound with Docker-like wording.
func (m *Manager) load(name string) (Layout, Config, error) {
	if err := ValidateName(name); err != nil {
		return Layout{}, Config{}, err
	}
	l := m.Layout(name)
	c, err := LoadConfig(l)
	if errdefs.IsNotFound(err) {
		return Layout{}, Config{}, fmt.Errorf("vch: no such VCH: %s (in %s): %w", name, m.base(), errdefs.ErrNotFound)
	}
	return l, c, err
}

// Inspect reports one VCH. NotFound if there is none.
func (m *Manager) Inspect(ctx context.Context, name string) (Status, error) {
	l, c, err := m.load(name)
	if err != nil {
		return Status{}, err
	}
	return m.status(ctx, l, c), nil
}

// Config returns one VCH's configuration. NotFound if there is none.
func (m *Manager) Config(name string) (Config, error) {
	_, c, err := m.load(name)
	return c, err
}

// Start starts a stopped VCH's service and waits until it answers.
// Starting a running VCH is a no-op. NotFound if there is none.
func (m *Manager) Start(ctx context.Context, name string) error {
	l, c, err := m.load(name)
	if err != nil {
		return err
	}
	svc := m.service(l, c)
	m.progress("Starting the daemon under the %s", svc.Describe())
	if err := svc.Start(ctx); err != nil {
		return err
	}
	return m.waitReady(ctx, l, c, svc)
}

// Stop stops a VCH's service. Its container VMs keep running, and the
// daemon takes them back when the VCH starts again (live restore).
// Stopping a stopped VCH is a no-op. NotFound if there is none.
func (m *Manager) Stop(ctx context.Context, name string) error {
	l, c, err := m.load(name)
	if err != nil {
		return err
	}
	m.progress("Stopping VCH %s", name)
	return m.service(l, c).Stop(ctx)
}

// refuseIfRunning returns FailedPrecondition naming the containers that
// run, if the daemon answers and any do.
func refuseIfRunning(ctx context.Context, l Layout, name, action, hint string) error {
	running, err := newAPIClient(l.AdminSocket()).runningContainers(ctx)
	if err != nil || len(running) == 0 {
		return nil
	}
	return fmt.Errorf("vch: VCH %s has %d running container(s) (%s); %s, or %s: %w",
		name, len(running), strings.Join(running, ", "), action, hint, errdefs.ErrFailedPrecondition)
}

// Configure changes a VCH's limits, registries, accelerator or log level
// with change, validates and saves the result and, if the VCH runs,
// restarts its daemon so they take effect. Running containers survive the
// restart (the new daemon takes their VMs back); still, as new limits may
// not fit them, it refuses (FailedPrecondition) while any run unless
// force. On a vSphere VCH it also updates the resource pool's limits when
// --memory or --cpu change, and makes the directories of datastore volume
// stores added; the target, compute resource, image store and networks
// cannot change, nor can a datastore volume store be dropped
// (InvalidArgument). NotFound if there is no such VCH;
// InvalidArgument if change produces a bad config.
func (m *Manager) Configure(ctx context.Context, name string, force bool, change func(*Config) error) (Status, error) {
	l, c, err := m.load(name)
	if err != nil {
		return Status{}, err
	}
	before := c
	before.VSphere = cloneVSphere(c.VSphere) // change gets a copy of its own
	if err := change(&c); err != nil {
		return Status{}, err
	}
	if c.Name != before.Name || c.Host != before.Host || c.Service != before.Service || c.Binary != before.Binary {
		return Status{}, fmt.Errorf("vch: configure cannot change the name, endpoint, service or binary: %w", errdefs.ErrInvalidArgument)
	}
	if !sameVSphere(before.VSphere, c.VSphere) {
		return Status{}, fmt.Errorf("vch: configure cannot change the vSphere target, compute resource, image store or networks; delete the VCH and create it again: %w", errdefs.ErrInvalidArgument)
	}
	if err := validateConfig(c); err != nil {
		return Status{}, err
	}
	added, err := addedDatastoreStores(before, c)
	if err != nil {
		return Status{}, err
	}
	svc := m.service(l, c)
	active, _ := svc.Active()
	if active && !force {
		if err := refuseIfRunning(ctx, l, name, "configure restarts the daemon under new limits; stop them first", "pass --force"); err != nil {
			return Status{}, err
		}
	}
	limitsChanged := c.Limits.CPUs != before.Limits.CPUs || c.Limits.MemoryMiB != before.Limits.MemoryMiB
	if c.VSphere != nil && (limitsChanged || len(added) > 0) {
		var finish func(saved bool)
		if finish, err = m.configureVSphere(ctx, l, &c, added, limitsChanged); err != nil {
			return Status{}, err
		}
		// Undone if the config cannot be saved: err is that of SaveConfig.
		defer func() { finish(err == nil) }()
	}
	c.VCHVersion = m.Version
	if err = SaveConfig(l, c); err != nil {
		return Status{}, err
	}
	m.progress("Saved %s", l.ConfigFile())
	if active {
		m.progress("Restarting the daemon")
		if err := svc.Stop(ctx); err != nil {
			return Status{}, err
		}
		if err := svc.Start(ctx); err != nil {
			return Status{}, err
		}
		if err := m.waitReady(ctx, l, c, svc); err != nil {
			return Status{}, err
		}
	}
	return m.status(ctx, l, c), nil
}

// Delete removes a VCH: it stops its service (its container VMs outlive
// the daemon: without force Delete refuses while any runs, with force it
// kills them), removes the unit, the VCH's network namespace if a
// killed daemon left it, the state directory's files and the
// certificates vch generated, and nothing else; a state directory holding
// other files is left with them, and a warning. On a vSphere VCH it logs
// in first (credentials file, or the environment variables when set;
// if that fails nothing is stopped, or with force the VCH's service,
// daemon and local processes are stopped, its state and vSphere
// inventory are kept, and the login's error is returned, so a delete
// once vSphere answers again removes the rest) and, once the daemon is stopped,
// removes with DeleteVCH the pool, the folder with the VMs in it and the
// image store, and the datastore volume store directories create made if
// they are empty (a volume store holding volumes is left, with a
// warning); an existing directory create was given is never removed. Without force it refuses
// (FailedPrecondition) while containers run, or while VMs of the VCH run
// without a daemon; with force those are stopped or killed. NotFound if
// there is no such VCH.
func (m *Manager) Delete(ctx context.Context, name string, force bool) error {
	l, c, err := m.load(name)
	if err != nil {
		return err
	}
	if !force {
		if err := refuseIfRunning(ctx, l, name, "stop them first", "delete with --force"); err != nil {
			return err
		}
	}
	var vs *vsphere.Driver
	var vsErr error // with force: the login that failed
	var creds Credentials
	if c.VSphere != nil {
		if creds, err = loadCredentials(l, m.getenv); err != nil {
			return err
		}
		m.progress("Logging in to %s", c.VSphere.Target)
		if vs, err = m.connectVSphere(ctx, c.Name, c.VSphere, creds); err != nil {
			if !force {
				return err
			}
			vsErr = err
			m.progress("Could not log in to %s; stopping the VCH here and keeping its state and vSphere inventory", c.VSphere.Target)
		} else {
			defer vs.Close()
		}
	}
	svc := m.service(l, c)
	m.progress("Stopping VCH %s and its %s", name, svc.Describe())
	if err := svc.Uninstall(ctx); err != nil {
		return err
	}
	if err := stopDaemon(ctx, l); err != nil {
		return err
	}
	if strays := processesUsing(l.Root()); len(strays) > 0 {
		if !force {
			return fmt.Errorf("vch: %d process(es) still use %s (pids %v), container VMs left without their daemon; delete with --force to kill them: %w", len(strays), l.Root(), strays, errdefs.ErrFailedPrecondition)
		}
		m.progress("Killing %d stray process(es) using %s: %v", len(strays), l.Root(), strays)
		for _, pid := range strays {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, pid := range strays {
			waitGone(ctx, pid, 10*time.Second)
		}
	}
	// A daemon that stops cleanly deletes its network namespace; one that
	// was killed leaves it behind.
	ns := vch.NamespaceName(l.Root())
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		m.progress("Removing network namespace %s", ns)
		if err := netns.DeleteNamed(ns); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("vch: delete network namespace %s: %w", ns, err)
		}
	}
	if vsErr != nil {
		return fmt.Errorf("vch: VCH %s stopped; its state and vSphere inventory are kept until a delete reaches %s: %w", name, c.VSphere.Target, vsErr)
	}
	if vs != nil {
		if err := m.deleteOnVSphere(ctx, vs, c); err != nil {
			return scrub(err, creds)
		}
	}
	m.progress("Removing %s", l.Dir)
	return m.remove(l, c)
}

// remove deletes what Create made for c: the state directory's entries,
// generated certificates, then the directory if it is empty.
func (m *Manager) remove(l Layout, c Config) error {
	var errs []error
	for _, e := range l.entries() {
		if err := os.RemoveAll(filepath.Join(l.Dir, e)); err != nil {
			errs = append(errs, err)
		}
	}
	os.Remove(l.ConfigFile() + ".tmp") // left by a SaveConfig that failed
	if c.TLS.Generated && c.TLS.CertDir != "" {
		if c.TLS.CertDirCreated {
			errs = append(errs, os.RemoveAll(c.TLS.CertDir))
		} else {
			for _, f := range []string{certs.CAFile, certs.CAKeyFile, certs.ServerCertFile, certs.ServerKeyFile,
				filepath.Join(certs.ClientDir, certs.CAFile), filepath.Join(certs.ClientDir, certs.CertFile), filepath.Join(certs.ClientDir, certs.KeyFile)} {
				if err := os.Remove(filepath.Join(c.TLS.CertDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			_ = os.Remove(filepath.Join(c.TLS.CertDir, certs.ClientDir)) // only if empty
		}
	}
	if err := os.Remove(l.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(l.Dir)
		var left []string
		for _, e := range ents {
			left = append(left, e.Name())
		}
		m.progress("Left %s in place: it holds files vch did not create (%s)", l.Dir, strings.Join(left, ", "))
	}
	return errors.Join(errs...)
}

// processesUsing returns the PIDs (other than this process) whose command
// line names a path under dir: container VMMs whose disks live there.
func processesUsing(dir string) []int {
	prefix := filepath.Clean(dir) + "/"
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !alive(pid) {
			continue
		}
		if bytes.Contains(b, []byte(prefix)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
