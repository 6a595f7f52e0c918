package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/vch"
	"github.com/vchproject/vch/internal/vch/deploy"
)

func lsCmd(g *globals) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the VCHs on this host",
		Long: `List the VCHs under --state-dir: NAME, STATE (running: the daemon answers;
starting: its service runs but the daemon does not answer yet; stopped),
DOCKER_HOST and VERSION (the running daemon's, else the vch that created
or last configured it). When any VCH is a vSphere one (vch create
--target), the columns TARGET (https://HOST/sdk, never credentials),
COMPUTE_RESOURCE, RESOURCE_POOL, VM_FOLDER, IMAGE_STORE, VOLUME_STORES
and NETWORKS follow ("-" for a local VCH).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			list, err := m.List(cmd.Context())
			if err != nil {
				return err
			}
			if quiet {
				for _, s := range list {
					fmt.Fprintln(cmd.OutOrStdout(), s.Name)
				}
				return nil
			}
			vsphere := slices.ContainsFunc(list, func(s deploy.Status) bool { return s.VSphere != nil })
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprint(w, "NAME\tSTATE\tDOCKER_HOST\tVERSION")
			if vsphere {
				fmt.Fprint(w, "\tTARGET\tCOMPUTE_RESOURCE\tRESOURCE_POOL\tVM_FOLDER\tIMAGE_STORE\tVOLUME_STORES\tNETWORKS")
			}
			fmt.Fprintln(w)
			for _, s := range list {
				v := s.Versions.Daemon
				if v == "" {
					v = s.Versions.VCH
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s", s.Name, s.State, s.Endpoint.DockerHost, v)
				if vsphere {
					fmt.Fprint(w, "\t"+strings.Join(vsphereColumns(s.VSphere), "\t"))
				}
				fmt.Fprintln(w)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only print names")
	return cmd
}

// vsphereColumns are ls's vSphere columns of a VCH: "-" for a local one
// or an empty value.
func vsphereColumns(v *deploy.VSphereInfo) []string {
	if v == nil {
		return []string{"-", "-", "-", "-", "-", "-", "-"}
	}
	var nets []string
	if v.BridgeNetwork != "" {
		nets = append(nets, "bridge="+v.BridgeNetwork)
	}
	if v.PublicNetwork != "" {
		nets = append(nets, "public="+v.PublicNetwork)
	}
	dash := func(s string) string { return cmp.Or(s, "-") }
	return []string{v.Target, v.ComputeResource, v.ResourcePool, v.VMFolder, v.ImageStore,
		dash(strings.Join(v.VolumeStores, ",")), dash(strings.Join(nets, ","))}
}

func inspectCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect NAME [NAME...]",
		Short: "Show a VCH's endpoint, state, versions, limits, usage and paths as JSON",
		Long: `Print a JSON array with one object per VCH, as docker inspect does: its
endpoint (DOCKER_HOST, TLS, DOCKER_CERT_PATH, the admin socket), state,
daemon and supervisor PIDs, versions, limits and usage (asked of the
daemon when it answers), registries, service and paths, and for a vSphere
VCH its VSphere section (target, compute resource, resource pool, VM
folder, image store, volume stores, networks, pool limits; never the
credentials). --format
renders each with a Go template instead, e.g. '{{.State}}'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			var tmpl *template.Template
			if format != "" {
				if tmpl, err = template.New("format").Funcs(template.FuncMap{"json": func(v any) (string, error) {
					b, err := json.Marshal(v)
					return string(b), err
				}}).Parse(format); err != nil {
					return fmt.Errorf("vch: --format: %w", err)
				}
			}
			var out []deploy.Status
			for _, name := range args {
				st, err := m.Inspect(cmd.Context(), name)
				if err != nil {
					return err
				}
				out = append(out, st)
			}
			if tmpl != nil {
				for _, st := range out {
					if err := tmpl.Execute(cmd.OutOrStdout(), st); err != nil {
						return fmt.Errorf("vch: --format: %w", err)
					}
					fmt.Fprintln(cmd.OutOrStdout())
				}
				return nil
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "    ")
			return enc.Encode(out)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "format the output using a Go template")
	return cmd
}

func startCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "start NAME",
		Short: "Start a stopped VCH's service and wait until it answers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return m.Start(cmd.Context(), args[0])
		},
	}
}

func stopCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Stop a VCH's service (its container VMs keep running; the next start takes them back)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return m.Stop(cmd.Context(), args[0])
		},
	}
}

func deleteCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Stop a VCH and remove everything it created",
		Long: `Stop VCH NAME's service and remove what "vch create" made: its systemd
unit or supervisor, its state directory's files (config, images,
containers, volumes, logs, sockets) and the certificates it generated.
For a vSphere VCH, also its resource pool, its VM folder with the VMs in
it, its image store directory, and the datastore volume store
directories vch create made, when they are empty (it logs in with
STATE/target.json, or ` + deploy.TargetUsernameEnv + `/` + deploy.TargetPasswordEnv + ` when set).
Certificates the operator supplied with --tls-cert-path, and files others
put in the state directory, are left in place.

It refuses while containers run, unless --force, which kills their VMs
(container VMs outlive their daemon, so stopping the service alone does
not end them).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			if err := m.Delete(cmd.Context(), args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VCH %s deleted\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete even though containers run (they are stopped)")
	return cmd
}

func superviseCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "supervise NAME",
		Short: "Run VCH NAME's daemon and restart it whenever it dies (run by vch create where systemd is not PID 1)",
		Long: `Run VCH NAME's daemon in the foreground and restart it whenever it exits
(after 1 s, doubling up to 30 s while it keeps failing), until SIGTERM or
SIGINT; then stop the daemon and exit. "vch create" and "vch start" run
it in the background where systemd is not PID 1; its PID is in
STATE/supervise.pid and its log in STATE/logs/supervise.log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := deploy.ValidateName(args[0]); err != nil {
				return err
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			l := m.Layout(args[0])
			if _, err := deploy.LoadConfig(l); err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "supervise", "vch", args[0])
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return deploy.Supervise(ctx, l, logger)
		},
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print vch's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "vch %s\n", vch.Version)
			if vch.GitCommit != "" {
				fmt.Fprintf(w, " Git commit:  %s\n", vch.GitCommit)
			}
			fmt.Fprintf(w, " Go version:  %s\n", runtime.Version())
			fmt.Fprintf(w, " API version: %s (minimum version %s)\n", docker.MaxAPIVersion, docker.MinAPIVersion)
			fmt.Fprintf(w, " OS/Arch:     %s/%s\n", runtime.GOOS, runtime.GOARCH)
		},
	}
}
