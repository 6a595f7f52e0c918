package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vchproject/vch/internal/hypervisor/vsphere"
	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/volume"
	"github.com/vchproject/vch/internal/vch"
	"github.com/vchproject/vch/internal/vch/certs"
	"github.com/vchproject/vch/internal/vch/deploy"
)

// tlsFlags are dockerd's TLS flags, with its defaults and rules
// (cmd/dockerd/options.go): --tlsverify implies --tls; --tls alone
// implies --tlsverify unless --tlsverify=false is given; the files
// default to DOCKER_CERT_PATH (or ~/.docker)/{ca,cert,key}.pem.
type tlsFlags struct {
	tls, verify               bool
	caFile, certFile, keyFile string
}

func (t *tlsFlags) install(f *pflag.FlagSet) {
	dir := os.Getenv("DOCKER_CERT_PATH")
	if dir == "" {
		dir = os.Getenv("DOCKER_CONFIG")
	}
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".docker")
	}
	f.BoolVar(&t.tls, "tls", false, "use TLS; implied by --tlsverify")
	f.BoolVar(&t.verify, "tlsverify", os.Getenv("DOCKER_TLS_VERIFY") != "", "use TLS and verify the remote (clients must present a certificate signed by --tlscacert)")
	f.StringVar(&t.caFile, "tlscacert", filepath.Join(dir, certs.CAFile), "trust certs signed only by this CA")
	f.StringVar(&t.certFile, "tlscert", filepath.Join(dir, certs.CertFile), "path to TLS certificate file")
	f.StringVar(&t.keyFile, "tlskey", filepath.Join(dir, certs.KeyFile), "path to TLS key file")
}

// config returns the server TLS config, or nil without TLS.
func (t *tlsFlags) config(f *pflag.FlagSet) (*tls.Config, error) {
	useTLS, verify := t.tls, t.verify
	if f.Changed("tlsverify") || verify {
		useTLS = true
	}
	if useTLS && !f.Changed("tlsverify") {
		verify = true
	}
	if !useTLS {
		return nil, nil
	}
	return certs.ServerTLS(t.caFile, t.certFile, t.keyFile, verify)
}

// stderrLogger is a text logger to stderr at level ("debug", "info",
// "warn" or "error": the --log-level flag).
func stderrLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func daemonCmd() *cobra.Command {
	var cfg vch.Config
	var hosts []string
	var logLevel, pidfile, portLayerListen string
	var tf tlsFlags
	var volumeStores []string
	var storageQuota string
	var vmTemplates bool
	var logOpts []string
	var vsphereConfig, vsphereCredentials string
	cmd := &cobra.Command{
		Use:   "daemon --root DIR -H unix:///PATH.sock|tcp://ADDR:PORT [-H …]",
		Short: "Run one VCH endpoint in the foreground until SIGTERM or SIGINT",
		Long: `Run one VCH's engine in the foreground until SIGTERM or SIGINT; then it
lets go of the container VMs, which keep running, and removes its sockets.
The next daemon on the same root takes the VMs back (as dockerd's live
restore), also after a kill -9; containers whose VM is gone are recorded
exited (255) and started again if their restart policy says so.
"vch create" runs it as a service; run it by hand for development.

TCP endpoints take dockerd's TLS flags. Without TLS only loopback addresses
are served; with --tlsverify clients must present a certificate signed by
--tlscacert. Unix sockets are created mode 0660 (root only) and never use
TLS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			logger, err := stderrLogger(logLevel)
			if err != nil {
				return err
			}
			if cfg.DefaultMemoryMiB < 64 {
				return fmt.Errorf("--default-container-memory %d: at least 64 MiB", cfg.DefaultMemoryMiB)
			}
			if cfg.DefaultCPUs < 1 {
				return fmt.Errorf("--default-container-cpus %d: at least 1", cfg.DefaultCPUs)
			}
			cfg.NoVMTemplates = !vmTemplates
			if cfg.LogOpts, err = parseLogOpts(logOpts); err != nil {
				return err
			}
			if vsphereConfig != "" {
				if cfg.VSphere, err = readVSphereConfig(vsphereConfig, vsphereCredentials); err != nil {
					return err
				}
			} else if vsphereCredentials != "" {
				return fmt.Errorf("--vsphere-credentials needs --vsphere-config")
			}
			if cfg.MaxConcurrentBoots < 0 || cfg.MaxConcurrentBoots > 1024 {
				return fmt.Errorf("--max-concurrent-boots %d: want 0..1024", cfg.MaxConcurrentBoots)
			}
			if cfg.WarmVMs < 0 || cfg.WarmVMs > 64 {
				return fmt.Errorf("--warm-vms %d: want 0..64", cfg.WarmVMs)
			}
			if storageQuota != "" {
				n, err := units.RAMInBytes(storageQuota)
				if err != nil || n < 0 {
					return fmt.Errorf("--storage-quota %q: want a size such as 20g or 500m", storageQuota)
				}
				cfg.StorageQuotaBytes = n
			}
			for _, vs := range volumeStores {
				name, path, err := volume.ParseStore(vs)
				if err != nil {
					return err
				}
				if cfg.VolumeStores == nil {
					cfg.VolumeStores = map[string]string{}
				}
				cfg.VolumeStores[name] = path
			}
			tlsCfg, err := tf.config(cmd.Flags())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			v, err := vch.Open(ctx, cfg, logger)
			if err != nil {
				return err
			}
			l, cleanup, err := docker.Listen(hosts, tlsCfg, logger)
			if err != nil {
				_ = v.Close()
				return err
			}
			defer cleanup()
			if portLayerListen != "" {
				pl, err := api.Listen(portLayerListen, tlsCfg)
				if err != nil {
					_ = v.Close()
					return err
				}
				if path, ok := strings.CutPrefix(portLayerListen, "unix://"); ok {
					defer os.Remove(path)
				}
				go func() {
					if err := v.ServePortLayer(ctx, pl); err != nil {
						logger.Error("port layer API stopped", "err", err)
					}
				}()
			}
			if pidfile != "" {
				if err := writePIDFile(pidfile); err != nil {
					_ = v.Close()
					return err
				}
				defer removePIDFile(pidfile)
			}
			return v.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Root, "root", "", "state directory of this VCH (required)")
	f.StringArrayVarP(&hosts, "host", "H", nil, "listen address, repeatable: unix:///PATH.sock or tcp://ADDR:PORT (required)")
	f.StringVar(&cfg.KernelDir, "kernel-dir", filepath.Join(exeDir(), "guest", "kernel"), "unpacked Debian guest kernel package (boot/, lib/modules/)")
	f.StringVar(&cfg.Tether, "tether", filepath.Join(exeDir(), "tether"), "static tether binary (the guest's PID 1)")
	f.StringVar(&cfg.RAMShim, "ram-shim", filepath.Join(exeDir(), "vch-ramshim.so"), "QEMU preload library that lets VMs restored from templates return freed memory")
	f.StringVar(&cfg.ShareKernelDir, "share-kernel-dir", filepath.Join(exeDir(), "guest", "kernel-generic"), "unpacked Debian generic kernel package (virtio-9p) for containers with host bind mounts")
	f.StringArrayVar(&cfg.BindRoots, "allow-bind-mounts", nil, "host directory containers may bind-mount from (and beneath), repeatable; / allows any (default: none)")
	f.StringVar(&cfg.Accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	f.StringVar(&cfg.Name, "name", "", "VCH name shown by docker info (default: host name)")
	f.IntVar(&cfg.DefaultMemoryMiB, "default-container-memory", vch.DefaultMemoryMiB, "guest RAM of a container VM without -m, in MiB")
	f.IntVar(&cfg.DefaultCPUs, "default-container-cpus", 1, "vCPUs of a container VM without --cpus")
	f.IntVar(&cfg.MaxContainers, "max-containers", 0, "most containers that may exist (0: no limit)")
	f.IntVar(&cfg.MemoryMiB, "memory-budget", 0, "guest RAM all running container VMs share, in MiB (0: no limit)")
	f.IntVar(&cfg.CPUs, "cpu-budget", 0, "vCPUs all running container VMs share (0: no limit)")
	f.StringArrayVar(&cfg.Registries.Insecure, "insecure-registry", nil, "registry (host[:port] or CIDR) to pull from without verified TLS, repeatable")
	f.StringArrayVar(&cfg.Registries.Allowed, "whitelist-registry", nil, "pull only from these registries (host[:port], *.domain or CIDR), repeatable")
	f.StringArrayVar(&cfg.Registries.CAFiles, "registry-ca", nil, "PEM file of extra CA certificates trusted for TLS registries on pull and push (added to the system pool), repeatable")
	f.StringVar(&storageQuota, "storage-quota", "", "host disk space images, containers and volumes may take together (20g, 500m, bytes); checked before pull, load, import, commit and volume create (default: no limit)")
	f.StringArrayVar(&volumeStores, "volume-store", nil, "NAME:PATH, a directory volume disks may live in (docker volume create --opt volume-store=NAME), repeatable; PATH may be ds://DATASTORE/PATH on vSphere; ROOT/volumes is \"default\" unless named here")
	f.BoolVar(&cfg.NoEgress, "no-egress", false, "containers cannot open TCP connections to addresses outside the VCH")
	f.StringVar(&cfg.EgressNamespace, "egress-netns", "", "named network namespace that containers' outbound TCP connections leave from (default: the daemon's)")
	f.IntVar(&cfg.MaxConcurrentBoots, "max-concurrent-boots", 0, "container VMs booted (or restored) at once; further starts wait their turn (0: the host's CPU count)")
	f.IntVar(&cfg.WarmVMs, "warm-vms", 1, "container VMs of the common shape kept restored and woken ahead of need, so a start takes one (0: none; each idle one costs what an idle container does)")
	f.BoolVar(&cfg.MemoryMerge, "memory-merge", false, "mark the memory of VMs restored from templates mergeable for the host's KSM (saves memory only where /sys/kernel/mm/ksm/run is 1; KSM merges across every VCH on the host)")
	f.BoolVar(&vmTemplates, "vm-templates", true, "restore container VMs from a template of their shape instead of booting each (false: every VM boots cold and no guest memory is shared between VMs)")
	f.StringVar(&cfg.LogDriver, "log-driver", "json-file", "logging driver of containers that name none: json-file, local (kept as json-file) or none (no log: docker logs refuses)")
	f.StringArrayVar(&logOpts, "log-opt", nil, "KEY=VALUE, an option of the default logging driver for containers that do not set it (max-size=50m, max-file=5), repeatable")
	f.StringVar(&vsphereConfig, "vsphere-config", "", "run the container VMs on vSphere: a JSON file of the vsphere driver's configuration, as vch create --target writes it (docs/vsphere.md); mode 0600 if its url holds credentials (default: this host's QEMU)")
	f.StringVar(&cfg.BridgeInterface, "bridge-interface", "", "host interface on the network the container VMs' NICs are on (a vSphere VCH's bridge portgroup): moved into the VCH's network namespace and enslaved to its default bridge (default: none)")
	f.StringVar(&vsphereCredentials, "vsphere-credentials", "", "with --vsphere-config: a JSON file {\"username\", \"password\"} (mode 0600) of the vSphere target's credentials, used in place of any in the config's url")
	f.StringVar(&pidfile, "pidfile", "", "write the daemon's PID to this file while it runs")
	f.StringVar(&portLayerListen, "portlayer-listen", "", "also serve the Port Layer API (v1) on this address: unix:///PATH.sock (a root-only socket) or tcp://HOST:PORT (only with --tlsverify: mutual TLS with the daemon's certificates) (default: not served)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	tf.install(f)
	_ = cmd.MarkFlagRequired("root")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}

// parseLogOpts reads --log-opt KEY=VALUE flags into a map (nil for
// none); an entry without "=" or with an empty key is refused, and a key
// given twice keeps its last value.
func parseLogOpts(opts []string) (map[string]string, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--log-opt %q: want KEY=VALUE: %w", o, errdefs.ErrInvalidArgument)
		}
		m[k] = v
	}
	return m, nil
}

// writePIDFile writes this process's PID to path, refusing when the file
// names a live process started with the same pid file (as dockerd's
// pidfile does); a stale file, left by a killed daemon, is replaced.
func writePIDFile(path string) error {
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() {
			if err := syscall.Kill(pid, 0); err == nil {
				if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && slices.Contains(strings.Split(string(cmdline), "\x00"), path) {
					return fmt.Errorf("vch: pid file %s names a running daemon (pid %d): %w", path, pid, errdefs.ErrFailedPrecondition)
				}
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("vch: pid file: %w", err)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("vch: pid file: %w", err)
	}
	return nil
}

// removePIDFile removes path if it still names this process.
func removePIDFile(path string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}

// readVSphereConfig reads --vsphere-config's file, a JSON vsphere.Config
// with no unknown fields, and, when credsPath is set, the credentials of
// --vsphere-credentials into its URL. A file that holds credentials must
// be readable by its owner alone.
func readVSphereConfig(path, credsPath string) (*vsphere.Config, error) {
	var c vsphere.Config
	if err := readPrivateJSON("--vsphere-config", path, &c, func() bool {
		u, err := url.Parse(c.URL)
		_, hasPass := u.User.Password()
		return err == nil && u.User != nil && hasPass
	}); err != nil {
		return nil, err
	}
	if credsPath == "" {
		return &c, nil
	}
	var creds deploy.Credentials
	if err := readPrivateJSON("--vsphere-credentials", credsPath, &creds, func() bool { return true }); err != nil {
		return nil, err
	}
	u, err := url.Parse(c.URL)
	if err != nil || creds.Username == "" {
		return nil, fmt.Errorf("--vsphere-config %s: url does not parse, or --vsphere-credentials %s has no username", path, credsPath)
	}
	u.User = url.UserPassword(creds.Username, creds.Password)
	c.URL = u.String()
	return &c, nil
}

// readPrivateJSON decodes the JSON file path (at most 1 MiB, no unknown
// fields) into v; when private reports that it holds credentials, the
// file must not be readable by its group or others.
func readPrivateJSON(flag, path string, v any, private func() bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	dec := json.NewDecoder(io.LimitReader(f, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if st.Mode().Perm()&0o077 != 0 && private() {
		return fmt.Errorf("%s %s: mode %04o: it holds credentials, make it readable by its owner alone (chmod 600)", flag, path, st.Mode().Perm())
	}
	return nil
}
