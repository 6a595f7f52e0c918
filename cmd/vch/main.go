// Command vch runs and manages Virtual Container Hosts: Docker endpoints
// whose containers are each their own VM.
//
//	vch daemon --root DIR -H unix:///PATH.sock
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vchproject/vch/internal/vch"
)

func main() {
	root := &cobra.Command{
		Use:           "vch",
		Short:         "Virtual Container Host: a Docker endpoint where every container is its own VM",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(daemonCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		// Errors from the packages already carry their "vch: " context.
		msg := err.Error()
		if !strings.HasPrefix(msg, "vch: ") {
			msg = "vch: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print vch's version",
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Println("vch", vch.Version)
		},
	}
}

// exeDir is the directory of the running binary; default paths of the
// guest files are relative to it (bin/tether, bin/guest/kernel).
func exeDir() string {
	p, err := os.Executable()
	if err != nil {
		return "."
	}
	return filepath.Dir(p)
}

func daemonCmd() *cobra.Command {
	var cfg vch.Config
	var host, logLevel string
	cmd := &cobra.Command{
		Use:   "daemon --root DIR -H unix:///PATH.sock",
		Short: "Run one VCH endpoint in the foreground until SIGTERM or SIGINT",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if cfg.DefaultMemoryMiB < 64 {
				return fmt.Errorf("--default-container-memory %d: at least 64 MiB", cfg.DefaultMemoryMiB)
			}
			v, err := vch.Open(ctx, cfg, logger)
			if err != nil {
				return err
			}
			l, cleanup, err := listen(host)
			if err != nil {
				_ = v.Close()
				return err
			}
			defer cleanup()
			return v.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Root, "root", "", "state directory of this VCH (required)")
	f.StringVarP(&host, "host", "H", "", "listen address: unix:///PATH.sock or tcp://127.0.0.1:PORT (required)")
	f.StringVar(&cfg.KernelDir, "kernel-dir", filepath.Join(exeDir(), "guest", "kernel"), "unpacked Debian guest kernel package (boot/, lib/modules/)")
	f.StringVar(&cfg.Tether, "tether", filepath.Join(exeDir(), "tether"), "static tether binary (the guest's PID 1)")
	f.StringVar(&cfg.Accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	f.StringVar(&cfg.Name, "name", "", "VCH name shown by docker info (default: host name)")
	f.IntVar(&cfg.DefaultMemoryMiB, "default-container-memory", 256, "guest RAM of a container VM without -m, in MiB")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("root")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}

// listen opens the API listener. A unix socket is created mode 0660 (root
// only) after removing a stale one; cleanup removes it.
func listen(host string) (net.Listener, func(), error) {
	u, err := url.Parse(host)
	if err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") {
		return nil, nil, fmt.Errorf("-H %q: want unix:///PATH.sock or tcp://HOST:PORT", host)
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			path = strings.TrimPrefix(host, "unix://")
		}
		if path == "" || !filepath.IsAbs(path) {
			return nil, nil, fmt.Errorf("-H %q: want an absolute socket path, unix:///PATH.sock", host)
		}
		if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket == 0 {
			return nil, nil, fmt.Errorf("-H %q: %s exists and is not a socket", host, path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, nil, fmt.Errorf("socket dir: %w", err)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, nil, fmt.Errorf("-H %s: another daemon is listening there", host)
		}
		_ = os.Remove(path)
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, nil, fmt.Errorf("listen %s: %w", host, err)
		}
		_ = os.Chmod(path, 0o660)
		return l, func() { l.Close(); os.Remove(path) }, nil
	default:
		// No TLS yet: an unauthenticated Docker API is root on this host,
		// so only loopback addresses are accepted.
		h, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return nil, nil, fmt.Errorf("-H %q: want tcp://HOST:PORT: %w", host, err)
		}
		if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, nil, fmt.Errorf("-H %q: without TLS vch listens on loopback addresses only (127.0.0.1, ::1)", host)
		}
		l, err := net.Listen("tcp", u.Host)
		if err != nil {
			return nil, nil, fmt.Errorf("listen %s: %w", host, err)
		}
		return l, func() { l.Close() }, nil
	}
}
