package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Restart back-off of the supervisor, each with its reason.
const (
	// restartMin is the first delay before restarting a daemon that died,
	// like systemd's RestartSec=2 but quicker: the daemon's state is on
	// disk, so an immediate restart is safe.
	restartMin = 1 * time.Second
	// restartMax caps the doubling: a daemon that cannot start (a broken
	// kernel path) is retried twice a minute, not in a hot loop.
	restartMax = 30 * time.Second
	// stableAfter is how long a daemon must run for the back-off to reset.
	stableAfter = 30 * time.Second
)

// Supervise runs the daemon of the VCH in l and restarts it whenever it
// exits, until ctx ends; then it stops the daemon with SIGTERM (SIGKILL
// after StopTimeout) and returns nil. It holds supervise.pid (locked, so
// a second supervisor of the same VCH fails with FailedPrecondition).
// Each start re-reads config.json, so `vch configure` takes effect at the
// next restart. Logs go to logger; the daemon's output to
// logs/daemon.log.
func Supervise(ctx context.Context, l Layout, logger *slog.Logger) error {
	pidf, err := os.OpenFile(l.SupervisorPIDFile(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("vch: supervise: %w", err)
	}
	defer pidf.Close()
	if err := unix.Flock(int(pidf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("vch: another supervisor runs this VCH (%s): %w", l.SupervisorPIDFile(), errdefs.ErrFailedPrecondition)
	}
	if err := pidf.Truncate(0); err == nil {
		_, _ = pidf.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	defer os.Remove(l.SupervisorPIDFile())

	delay := restartMin
	for {
		cfg, err := LoadConfig(l)
		if err != nil {
			return err
		}
		started := time.Now()
		err = runDaemon(ctx, cfg, l, logger)
		if ctx.Err() != nil {
			logger.Info("supervisor stopped")
			return nil
		}
		if time.Since(started) >= stableAfter {
			delay = restartMin
		}
		logger.Warn("daemon exited; restarting", "error", err, "ran", time.Since(started).Round(time.Millisecond), "delay", delay)
		select {
		case <-ctx.Done():
			logger.Info("supervisor stopped")
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, restartMax)
	}
}

// runDaemon runs one daemon until it exits or ctx ends (then it stops it).
func runDaemon(ctx context.Context, cfg Config, l Layout, logger *slog.Logger) error {
	logf, err := os.OpenFile(l.DaemonLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("vch: daemon log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(cfg.Binary, DaemonArgs(cfg, l)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = withoutCredentials(os.Environ())
	cmd.Dir = "/"
	// If the supervisor is killed outright, the daemon stops cleanly
	// rather than run unsupervised.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("vch: start daemon: %w", err)
	}
	logger.Info("daemon started", "pid", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	logger.Info("stopping daemon", "pid", cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		logger.Info("daemon stopped", "status", fmt.Sprint(err))
		return err
	case <-time.After(StopTimeout):
		logger.Warn("daemon did not stop in time; killing it", "pid", cmd.Process.Pid, "timeout", StopTimeout)
		_ = cmd.Process.Kill()
		return <-done
	}
}
