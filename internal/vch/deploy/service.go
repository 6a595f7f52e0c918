package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/vch/certs"
)

// Service kinds.
const (
	// ServiceSystemd runs the daemon as a systemd unit, vch-NAME.service.
	ServiceSystemd = "systemd"
	// ServiceProcess runs it under `vch supervise NAME`, a background
	// process that restarts it when it dies.
	ServiceProcess = "process"
)

// Timeouts, each with its reason.
const (
	// StopTimeout bounds a service stop: the daemon lets go of its
	// container VMs (they keep running), finishes exits in progress (a
	// guest power-off takes up to 10 s) and closes its stores.
	StopTimeout = 2 * time.Minute
	// ReadyTimeout bounds the wait for a started daemon to answer: it
	// builds the guest initramfs and opens its stores first.
	ReadyTimeout = 90 * time.Second
)

// SystemdRunning reports whether systemd is PID 1 on this host, as
// sd_booted(3) decides: /run/systemd/system exists. /proc/1/comm must
// also say systemd, so a container that merely mounts /run does not count.
func SystemdRunning() bool {
	if st, err := os.Stat("/run/systemd/system"); err != nil || !st.IsDir() {
		return false
	}
	b, err := os.ReadFile("/proc/1/comm")
	return err == nil && strings.TrimSpace(string(b)) == "systemd"
}

// DaemonArgs returns the `vch` arguments that run c's daemon: the admin
// socket and the endpoint, TLS files, limits and registries, and for a
// vSphere VCH the files of its driver configuration and credentials
// (never the credentials themselves).
func DaemonArgs(c Config, l Layout) []string {
	admin := "unix://" + l.AdminSocket()
	args := []string{"daemon", "--name", c.Name, "--root", l.Root(), "--pidfile", l.DaemonPIDFile(), "-H", admin}
	if c.Host != admin {
		args = append(args, "-H", c.Host)
	}
	if c.TLS.Enabled {
		args = append(args,
			"--tlscert", filepath.Join(c.TLS.CertDir, certs.ServerCertFile),
			"--tlskey", filepath.Join(c.TLS.CertDir, certs.ServerKeyFile))
		if c.TLS.Verify {
			args = append(args, "--tlsverify", "--tlscacert", filepath.Join(c.TLS.CertDir, certs.CAFile))
		} else {
			// dockerd's --tls alone implies --tlsverify; say no explicitly.
			args = append(args, "--tls", "--tlsverify=false")
		}
	}
	if c.Accel != "" {
		args = append(args, "--accel", c.Accel)
	}
	lim := c.Limits
	if lim.DefaultContainerMemoryMiB > 0 {
		args = append(args, "--default-container-memory", strconv.Itoa(lim.DefaultContainerMemoryMiB))
	}
	if lim.DefaultContainerCPUs > 0 {
		args = append(args, "--default-container-cpus", strconv.Itoa(lim.DefaultContainerCPUs))
	}
	if lim.Containers > 0 {
		args = append(args, "--max-containers", strconv.Itoa(lim.Containers))
	}
	if lim.MemoryMiB > 0 {
		args = append(args, "--memory-budget", strconv.Itoa(lim.MemoryMiB))
	}
	if lim.CPUs > 0 {
		args = append(args, "--cpu-budget", strconv.Itoa(lim.CPUs))
	}
	for _, r := range c.Registries.Insecure {
		args = append(args, "--insecure-registry", r)
	}
	for _, r := range c.Registries.Whitelist {
		args = append(args, "--whitelist-registry", r)
	}
	if lim.NoVMTemplates {
		args = append(args, "--vm-templates=false")
	}
	if lim.MemoryMerge {
		args = append(args, "--memory-merge")
	}
	if c.LogDriver != "" {
		args = append(args, "--log-driver", c.LogDriver)
	}
	for _, k := range slices.Sorted(maps.Keys(c.LogOpts)) {
		args = append(args, "--log-opt", k+"="+c.LogOpts[k])
	}
	if lim.StorageQuotaBytes > 0 {
		args = append(args, "--storage-quota", strconv.FormatInt(lim.StorageQuotaBytes, 10))
	}
	if c.VSphere != nil {
		args = append(args, "--vsphere-config", l.VSphereConfigFile(), "--vsphere-credentials", l.CredentialsFile())
		if c.VSphere.BridgeInterface != "" {
			args = append(args, "--bridge-interface", c.VSphere.BridgeInterface)
		}
	}
	for _, vs := range c.VolumeStores {
		args = append(args, "--volume-store", vs)
	}
	for _, f := range c.Registries.CAFiles {
		args = append(args, "--registry-ca", f)
	}
	if c.LogLevel != "" {
		args = append(args, "--log-level", c.LogLevel)
	}
	return args
}

// service keeps one VCH's daemon running.
type service interface {
	// Start installs (if needed) and starts the service; it returns once
	// the service is started, not once the daemon answers.
	Start(ctx context.Context) error
	// Stop stops the service and waits (up to StopTimeout) for the daemon
	// to exit. Stopping a stopped service is a no-op.
	Stop(ctx context.Context) error
	// Uninstall stops the service and removes what Start installed.
	Uninstall(ctx context.Context) error
	// Active reports whether the service (supervisor or unit) is running,
	// and why it failed if it exited early.
	Active() (bool, error)
	// Describe names the service for progress lines ("under the X", "its X").
	Describe() string
}

// processService runs `vch supervise NAME` in the background.
type processService struct {
	base   string // the state base directory
	layout Layout
	cfg    Config
	// proc is the supervisor this value started, if any; exited is closed
	// when it exits, and waitErr then holds its exit status.
	proc    *os.Process
	exited  chan struct{}
	waitErr error
}

func (p *processService) Describe() string {
	return "supervisor process `vch supervise " + p.cfg.Name + "`"
}

func (p *processService) Start(ctx context.Context) error {
	if ok, _ := p.Active(); ok {
		return nil
	}
	if err := os.MkdirAll(p.layout.Logs(), 0o700); err != nil {
		return fmt.Errorf("vch: %w", err)
	}
	logf, err := os.OpenFile(p.layout.SuperviseLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("vch: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(p.cfg.Binary, "--state-dir", p.base, "supervise", p.cfg.Name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = withoutCredentials(os.Environ())
	cmd.Dir = "/"
	// Its own session: the supervisor outlives the shell that ran create
	// and does not get the terminal's signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("vch: start supervisor: %w", err)
	}
	p.proc, p.exited = cmd.Process, make(chan struct{})
	go func() { p.waitErr = cmd.Wait(); close(p.exited) }()
	return nil
}

func (p *processService) Active() (bool, error) {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false, fmt.Errorf("vch: the supervisor exited: %v", p.waitErr)
		default:
		}
	}
	pid := readPID(p.layout.SupervisorPIDFile())
	return pid > 0 && isOurs(pid, "supervise", p.cfg.Name), nil
}

func (p *processService) Stop(ctx context.Context) error {
	pid := readPID(p.layout.SupervisorPIDFile())
	if pid <= 0 && p.proc != nil {
		// Started by this value and not yet past writing its pidfile.
		pid = p.proc.Pid
	}
	if pid > 0 && isOurs(pid, "supervise", p.cfg.Name) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(ctx, pid, StopTimeout) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(ctx, pid, 5*time.Second)
		}
	}
	// A daemon left without its supervisor (kill -9 of the supervisor
	// before the daemon noticed) is stopped too.
	return stopDaemon(ctx, p.layout)
}

func (p *processService) Uninstall(ctx context.Context) error { return p.Stop(ctx) }

// stopDaemon stops a daemon still recorded in daemon.pid: SIGTERM, then
// SIGKILL after StopTimeout.
func stopDaemon(ctx context.Context, l Layout) error {
	pid := readPID(l.DaemonPIDFile())
	if pid <= 0 || !isOurs(pid, "daemon", l.Root()) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if waitGone(ctx, pid, StopTimeout) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !waitGone(ctx, pid, 5*time.Second) {
		return fmt.Errorf("vch: daemon %d did not exit: %w", pid, errdefs.ErrUnavailable)
	}
	return nil
}

// systemdService runs the daemon as vch-NAME.service.
type systemdService struct {
	unitDir string // /etc/systemd/system
	layout  Layout
	cfg     Config
	// run runs a command (systemctl); replaced in tests.
	run func(ctx context.Context, name string, args ...string) error
}

// UnitName is the systemd unit of a VCH.
func UnitName(name string) string { return "vch-" + name + ".service" }

func (s *systemdService) unitPath() string { return filepath.Join(s.unitDir, UnitName(s.cfg.Name)) }

func (s *systemdService) Describe() string {
	return "systemd unit " + UnitName(s.cfg.Name)
}

// Unit renders the unit file of c. KillMode=process signals the daemon
// alone, when the unit stops and when the daemon died and is restarted:
// the container VMs in the unit's cgroup outlive the daemon, and the next
// one takes them back (as docker.service does for dockerd's live
// restore).
func Unit(c Config, l Layout) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by vch create; vch configure rewrites it and vch delete removes it.\n")
	fmt.Fprintf(&b, "[Unit]\nDescription=vch Virtual Container Host %s\n", c.Name)
	fmt.Fprintf(&b, "After=network-online.target\nWants=network-online.target\n\n")
	fmt.Fprintf(&b, "[Service]\nType=simple\nExecStart=%s", systemdQuote(c.Binary))
	for _, a := range DaemonArgs(c, l) {
		fmt.Fprintf(&b, " %s", systemdQuote(a))
	}
	fmt.Fprintf(&b, "\nRestart=always\nRestartSec=2\nKillMode=process\nTimeoutStopSec=%d\n", int(StopTimeout/time.Second))
	fmt.Fprintf(&b, "StandardOutput=append:%s\nStandardError=append:%s\n\n", l.DaemonLog(), l.DaemonLog())
	fmt.Fprintf(&b, "[Install]\nWantedBy=multi-user.target\n")
	return b.String()
}

// systemdQuote quotes an ExecStart word when it needs it (systemd.service(5):
// double quotes, with backslash escapes; "%" is written "%%").
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;$") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`)
	return `"` + r.Replace(s) + `"`
}

func (s *systemdService) Start(ctx context.Context) error {
	if err := os.MkdirAll(s.layout.Logs(), 0o700); err != nil {
		return fmt.Errorf("vch: %w", err)
	}
	if err := os.WriteFile(s.unitPath(), []byte(Unit(s.cfg, s.layout)), 0o644); err != nil {
		return fmt.Errorf("vch: write unit: %w", err)
	}
	if err := s.run(ctx, "systemctl", "daemon-reload"); err != nil {
		return err
	}
	return s.run(ctx, "systemctl", "enable", "--now", UnitName(s.cfg.Name))
}

func (s *systemdService) Stop(ctx context.Context) error {
	if _, err := os.Stat(s.unitPath()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return s.run(ctx, "systemctl", "stop", UnitName(s.cfg.Name))
}

func (s *systemdService) Uninstall(ctx context.Context) error {
	if _, err := os.Stat(s.unitPath()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := s.run(ctx, "systemctl", "disable", "--now", UnitName(s.cfg.Name)); err != nil {
		return err
	}
	if err := os.Remove(s.unitPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vch: %w", err)
	}
	return s.run(ctx, "systemctl", "daemon-reload")
}

func (s *systemdService) Active() (bool, error) {
	err := s.run(context.Background(), "systemctl", "is-active", "--quiet", UnitName(s.cfg.Name))
	return err == nil, nil
}

// runCommand runs name with args; the error carries its output.
func runCommand(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vch: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// readPID reads a pidfile; 0 if it is missing or malformed.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// isOurs reports whether pid is alive and its command line holds every
// word in want, so a recycled PID is never signalled.
func isOurs(pid int, want ...string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// A zombie has exited; only its parent has not reaped it yet.
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for _, w := range want {
		found := false
		for _, a := range args {
			if a == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// waitGone waits up to d for pid to exit; it reports whether it did.
func waitGone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	f := strings.Fields(string(st[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// withoutCredentials is env without the target credential variables
// (TargetUsernameEnv, TargetPasswordEnv) that vch create may have been
// given: the supervisor and the daemon never hold them.
func withoutCredentials(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, TargetUsernameEnv+"=") || strings.HasPrefix(kv, TargetPasswordEnv+"=")
	})
}
