package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vchproject/vch/internal/vch/deploy"
)

// limitFlags are the options create and configure share.
type limitFlags struct {
	accel, logLevel       string
	memory, defaultMemory string
	cpus, defaultCPUs     int
	containers            int
	insecure, whitelist   []string
	registryCAs           []string
	volumeStores          []string
	storageQuota          string
	vmTemplates           bool
	memoryMerge           bool
	logDriver             string
	logOpts               []string
}

func (lf *limitFlags) install(f *pflag.FlagSet) {
	f.StringVar(&lf.accel, "accel", "auto", "accelerator: auto (KVM when usable, else TCG), kvm or tcg")
	f.StringVar(&lf.memory, "memory", "", "guest RAM all running container VMs share: MiB, or with a unit (512m, 4g); empty: no limit")
	f.IntVar(&lf.cpus, "cpu", 0, "vCPUs all running container VMs share (0: no limit)")
	f.IntVar(&lf.containers, "containers", 0, "most containers that may exist, in any state (0: no limit)")
	f.StringVar(&lf.defaultMemory, "default-container-memory", "", "guest RAM of a container VM without -m: MiB or with a unit (default 256 MiB)")
	f.IntVar(&lf.defaultCPUs, "default-container-cpus", 0, "vCPUs of a container VM without --cpus (default 1)")
	f.StringArrayVar(&lf.insecure, "insecure-registry", nil, "registry to pull from without verified TLS: host[:port] or CIDR; repeatable")
	f.StringArrayVar(&lf.whitelist, "whitelist-registry", nil, "pull only from these registries: host[:port], *.domain or CIDR; repeatable")
	f.StringArrayVar(&lf.registryCAs, "registry-ca", nil, "PEM file of extra CA certificates trusted for TLS registries (pull and push), added to the system pool; repeatable")
	f.StringVar(&lf.storageQuota, "storage-quota", "", "host disk space images, containers and volumes may take together: 20g, 500m (empty or 0: no limit); checked before pull, load, import, commit and volume create")
	f.StringArrayVar(&lf.volumeStores, "volume-store", nil, "NAME:PATH: a directory (absolute) volume disks may live in, chosen with docker volume create --opt volume-store=NAME; on a vSphere VCH (--target) also NAME:ds://DATASTORE/PATH, a directory vch makes on that datastore; repeatable; the VCH root's volumes/ is \"default\" unless named here")
	f.BoolVar(&lf.vmTemplates, "vm-templates", true, "restore container VMs from a template of their shape instead of booting each (false: every VM boots cold, no guest memory shared between VMs)")
	f.BoolVar(&lf.memoryMerge, "memory-merge", false, "mark the memory of VMs restored from templates mergeable for the host's KSM (saves memory only where /sys/kernel/mm/ksm/run is 1; KSM merges across every VCH on the host)")
	f.StringVar(&lf.logLevel, "log-level", "info", "daemon log level: debug, info, warn or error")
	f.StringVar(&lf.logDriver, "log-driver", "json-file", "logging driver of containers that name none: json-file, local (kept as json-file) or none (no log: docker logs refuses)")
	f.StringArrayVar(&lf.logOpts, "log-opt", nil, "KEY=VALUE, an option of the default logging driver for containers that do not set it (max-size=50m, max-file=5), repeatable; on configure, the given ones replace all")
}

// apply writes the flags that were given (all of them for create) into c.
func (lf *limitFlags) apply(f *pflag.FlagSet, c *deploy.Config, all bool) error {
	set := func(name string) bool { return all || f.Changed(name) }
	if set("accel") {
		c.Accel = lf.accel
	}
	if set("log-level") {
		c.LogLevel = lf.logLevel
	}
	if set("log-driver") {
		c.LogDriver = lf.logDriver
		if c.LogDriver == "json-file" {
			c.LogDriver = "" // the daemon's default
		}
	}
	if set("log-opt") {
		opts, err := parseLogOpts(lf.logOpts)
		if err != nil {
			return err
		}
		c.LogOpts = opts
	}
	if set("memory") {
		mib, err := parseMiB("--memory", lf.memory)
		if err != nil {
			return err
		}
		c.Limits.MemoryMiB = mib
	}
	if set("default-container-memory") {
		mib, err := parseMiB("--default-container-memory", lf.defaultMemory)
		if err != nil {
			return err
		}
		c.Limits.DefaultContainerMemoryMiB = mib
	}
	if set("cpu") {
		c.Limits.CPUs = lf.cpus
	}
	if set("default-container-cpus") {
		c.Limits.DefaultContainerCPUs = lf.defaultCPUs
	}
	if set("containers") {
		c.Limits.Containers = lf.containers
	}
	if set("insecure-registry") {
		c.Registries.Insecure = nonEmpty(lf.insecure)
	}
	if set("whitelist-registry") {
		c.Registries.Whitelist = nonEmpty(lf.whitelist)
	}
	if set("storage-quota") {
		mib, err := parseMiB("--storage-quota", lf.storageQuota)
		if err != nil {
			return err
		}
		c.Limits.StorageQuotaBytes = int64(mib) << 20
	}
	if set("vm-templates") {
		c.Limits.NoVMTemplates = !lf.vmTemplates
	}
	if set("memory-merge") {
		c.Limits.MemoryMerge = lf.memoryMerge
	}
	if set("volume-store") {
		c.VolumeStores = nonEmpty(lf.volumeStores)
	}
	if set("registry-ca") {
		var files []string
		for _, f := range nonEmpty(lf.registryCAs) {
			abs, err := filepath.Abs(f)
			if err != nil {
				return fmt.Errorf("vch: --registry-ca %q: %w", f, err)
			}
			if err := checkPEM(abs); err != nil {
				return err
			}
			files = append(files, abs)
		}
		c.Registries.CAFiles = files
	}
	return nil
}

// checkPEM returns InvalidArgument unless path is a readable file with at
// least one PEM certificate, so create fails before the daemon would.
func checkPEM(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("vch: --registry-ca: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("vch: --registry-ca %s: no PEM certificate in it: %w", path, errdefs.ErrInvalidArgument)
	}
	return nil
}

// parseMiB reads a size: a bare number is MiB; with a unit (k, m, g, t,
// binary multiples as docker -m reads them) it is rounded down to MiB.
// "" and "0" mean unset.
func parseMiB(flag, s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("vch: %s %q: want a size such as 4096 (MiB) or 4g: %w", flag, s, errdefs.ErrInvalidArgument)
		}
		return n, nil
	}
	b, err := units.RAMInBytes(s)
	if err != nil || b < 0 {
		return 0, fmt.Errorf("vch: %s %q: want a size such as 4096 (MiB) or 4g: %w", flag, s, errdefs.ErrInvalidArgument)
	}
	if b > 0 && b < 1<<20 {
		return 0, fmt.Errorf("vch: %s %q: less than 1 MiB: %w", flag, s, errdefs.ErrInvalidArgument)
	}
	return int(b >> 20), nil
}

// nonEmpty drops empty entries, so --whitelist-registry "" clears a list.
func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// vsphereFlags are create's vSphere flags, named as vic-machine's.
type vsphereFlags struct{ o deploy.VSphereOptions }

// vsphereFlagNames are the flags that only make sense with --target.
var vsphereFlagNames = []string{"thumbprint", "insecure-target", "compute-resource", "image-store", "bridge-network", "public-network", "channel-listen", "bridge-interface"}

func (vf *vsphereFlags) install(f *pflag.FlagSet) {
	f.StringVar(&vf.o.Target, "target", "", "vSphere SDK endpoint, https://USER:PASS@HOST/sdk (or https://HOST/sdk with "+deploy.TargetUsernameEnv+" and "+deploy.TargetPasswordEnv+" set): make the VCH's resource pool, VM folder and image store there; the credentials are kept in STATE/target.json (0600) only")
	f.StringVar(&vf.o.Thumbprint, "thumbprint", "", "SHA-1 thumbprint (AB:CD:…) of the target's certificate, trusted when the system's CAs do not vouch for it")
	f.BoolVar(&vf.o.Insecure, "insecure-target", false, "do not check the target's certificate (excludes --thumbprint)")
	f.StringVar(&vf.o.ComputeResource, "compute-resource", "", "with --target: inventory path of the cluster or host, /DATACENTER/host/CLUSTER")
	f.StringVar(&vf.o.ImageStore, "image-store", "", "with --target: DATASTORE[/PATH] of the VCH's images and VM files (PATH defaults to the VCH's name)")
	f.StringVar(&vf.o.BridgeNetwork, "bridge-network", "", "with --target: portgroup for the container VMs' network")
	f.StringVar(&vf.o.PublicNetwork, "public-network", "", "with --target: portgroup of the VCH's public network")
	f.StringVar(&vf.o.BridgeInterface, "bridge-interface", "", "with --bridge-network: this host's interface on that portgroup, which the VCH's daemon enslaves to its default bridge so that the container VMs reach it (default: none)")
	f.StringVar(&vf.o.ChannelListen, "channel-listen", "", "with --target: HOST:PORT the VCH listens on for its container VMs' serial ports, which the ESX hosts connect to (default "+deploy.DefaultChannelListen+": loopback, reachable only by VMs on this machine)")
}

// options returns the vSphere options, nil without --target; without
// --target the other vSphere flags are refused.
func (vf *vsphereFlags) options(f *pflag.FlagSet) (*deploy.VSphereOptions, error) {
	if !f.Changed("target") {
		for _, n := range vsphereFlagNames {
			if f.Changed(n) {
				return nil, fmt.Errorf("vch: --%s needs --target (a vSphere VCH): %w", n, errdefs.ErrInvalidArgument)
			}
		}
		return nil, nil
	}
	o := vf.o
	return &o, nil
}

func createCmd(g *globals) *cobra.Command {
	var lf limitFlags
	var vf vsphereFlags
	var o deploy.CreateOptions
	var noTLS, noVerify bool
	var service string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Deploy a VCH and print the lines that point the docker CLI at it",
		Long: `Deploy a VCH named NAME: its state directory (--state-dir/NAME), its
certificates, its limits, and a service that keeps its daemon running (a
systemd unit where systemd is PID 1, otherwise a supervised background
process, "vch supervise NAME"). Then wait until it answers and print the
lines to paste: an "export DOCKER_HOST=…" line and a "docker context
create" line. Progress goes to stderr, those lines to stdout.

By default the VCH serves mutual TLS on tcp://127.0.0.1:2376, or on the
next port above it that is free and that no other VCH under --state-dir
claims; an explicit --host is used as given and must be free. Clients need
the generated client certificate (DOCKER_CERT_PATH). --no-tlsverify serves
TLS without asking for client certificates; --no-tls serves plain HTTP,
on loopback addresses or, by default, on a unix socket in the state
directory.

With --target the VCH is also deployed on vSphere (vCenter or ESX), as
vic-machine did: vch logs in, and makes a resource pool (limited by
--memory and --cpu), a VM folder and the image store's directory, all
named after the VCH, and the directories of the NAME:ds://DATASTORE/PATH
volume stores; if anything later fails, they are removed again, and vch
delete removes them. --compute-resource and --image-store are required
with --target. The credentials come from the URL or from
` + deploy.TargetUsernameEnv + ` and ` + deploy.TargetPasswordEnv + ` and are kept only in
STATE/target.json (mode 0600); a password in the URL is visible to ps
while vch create runs, so prefer the environment. The VCH's daemon then
runs its container VMs on vSphere (only the default bridge network or
none, no volumes yet: docs/vsphere.md); --bridge-interface names this
host's interface on the bridge portgroup, --channel-listen the address
the ESX hosts reach for the VMs' serial ports.`,
		Example: `  vch create team1
  vch create team1 --host tcp://0.0.0.0:2376 --tls-cname vch.example.com --memory 8g --cpu 4 --containers 20
  vch create dev --no-tls
  VCH_TARGET_USERNAME=admin VCH_TARGET_PASSWORD=… vch create team2 --target https://vcenter.example.com/sdk \
      --thumbprint AB:CD:… --compute-resource /DC1/host/cluster1 --image-store datastore1 \
      --volume-store default:ds://datastore1/vch-volumes --bridge-network vch-bridge --cpu 8 --memory 16g`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			o.Name = args[0]
			if err := deploy.ValidateName(o.Name); err != nil {
				return err
			}
			o.TLS = o.TLS && !noTLS
			o.TLSVerify = !noVerify
			if !o.TLS && (cmd.Flags().Changed("tls-cname") || cmd.Flags().Changed("tls-cert-path") || noVerify) {
				return fmt.Errorf("vch: --tls-cname, --tls-cert-path and --no-tlsverify need TLS; drop --no-tls: %w", errdefs.ErrInvalidArgument)
			}
			var c deploy.Config
			if err := lf.apply(cmd.Flags(), &c, true); err != nil {
				return err
			}
			o.Accel, o.LogLevel, o.Limits, o.Registries, o.VolumeStores = c.Accel, c.LogLevel, c.Limits, c.Registries, c.VolumeStores
			o.LogDriver, o.LogOpts = c.LogDriver, c.LogOpts
			if o.VSphere, err = vf.options(cmd.Flags()); err != nil {
				return err
			}
			switch service {
			case "auto":
				m.Service = ""
			case deploy.ServiceSystemd, deploy.ServiceProcess:
				m.Service = service
			default:
				return fmt.Errorf("vch: --service %q: want auto, systemd or process: %w", service, errdefs.ErrInvalidArgument)
			}
			res, err := m.Create(cmd.Context(), o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# VCH %s is running. Point the docker CLI at it:\n%s\n", o.Name, res.Env)
			fmt.Fprintf(out, "# or create a docker context:\n%s\n", res.Context)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Host, "host", "H", "", "endpoint: tcp://ADDR:PORT (or ADDR:PORT) or unix:///PATH.sock (default tcp://127.0.0.1:2376 or the next free port)")
	f.BoolVar(&o.TLS, "tls", true, "serve TCP with TLS (--tls=false is --no-tls)")
	f.BoolVar(&noTLS, "no-tls", false, "serve plain HTTP: a unix socket, or a loopback TCP address")
	f.BoolVar(&noVerify, "no-tlsverify", false, "serve TLS without requiring client certificates (anyone who reaches the port can use the VCH)")
	f.StringArrayVar(&o.TLSCNames, "tls-cname", nil, "extra DNS name or IP address for the server certificate; repeatable")
	f.StringVar(&o.TLSCertPath, "tls-cert-path", "", "use the certificates in this directory (ca.pem, server-cert.pem, server-key.pem), or generate them there (default STATE/certs)")
	f.StringVar(&service, "service", "auto", "how to keep the daemon running: auto (systemd when it is PID 1), systemd or process")
	lf.install(f)
	vf.install(f)
	return cmd
}

func configureCmd(g *globals) *cobra.Command {
	var lf limitFlags
	var force bool
	cmd := &cobra.Command{
		Use:   "configure NAME",
		Short: "Change a VCH's limits, registries, accelerator or log level",
		Long: `Change the given settings of VCH NAME and, if it runs, restart its daemon
so they take effect. Settings not given keep their values; a list flag
replaces the whole list (--whitelist-registry "" clears it). On a vSphere
VCH, --memory and --cpu also set the resource pool's limits, and a
NAME:ds://DATASTORE/PATH --volume-store added gets its directory; a
datastore volume store cannot be dropped, and the target cannot change. Containers,
images and volumes are kept, but restarting the daemon stops running
containers, so configure refuses while any run unless --force.`,
		Example: `  vch configure team1 --memory 16g --containers 40
  vch configure team1 --whitelist-registry registry.example.com --whitelist-registry docker.io`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			for _, n := range append([]string{"target"}, vsphereFlagNames...) {
				if cmd.Flags().Changed(n) {
					return fmt.Errorf("vch: configure cannot change --%s (the vSphere target, compute resource, image store and networks are fixed); delete the VCH and create it again: %w", n, errdefs.ErrInvalidArgument)
				}
			}
			changed := false
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if f.Name != "force" && f.Name != "state-dir" {
					changed = true
				}
			})
			if !changed {
				return fmt.Errorf("vch: configure %s: nothing to change; give at least one setting (see --help): %w", args[0], errdefs.ErrInvalidArgument)
			}
			st, err := m.Configure(cmd.Context(), args[0], force, func(c *deploy.Config) error {
				return lf.apply(cmd.Flags(), c, false)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VCH %s configured (%s)\n", st.Name, st.State)
			return nil
		},
	}
	lf.install(cmd.Flags())
	// Accepted only to be refused clearly.
	var vf vsphereFlags
	vf.install(cmd.Flags())
	for _, n := range append([]string{"target"}, vsphereFlagNames...) {
		_ = cmd.Flags().MarkHidden(n)
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "restart the daemon even though containers run (they are stopped)")
	return cmd
}
