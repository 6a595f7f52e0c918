// Package ctl is `vch ctl`, a second front end on the port layer: a
// small command line that talks to a VCH's Port Layer API (vch daemon
// --portlayer-listen) through package client alone, with no Docker code
// (a test checks its imports). It shows what the port layer offers a
// front end that is not Docker: images, containers, logs, volumes,
// networks and events, in its own words and output formats.
package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/tlsfiles"
)

// ExitError is a command's wish to exit with Code (a container's exit
// status) without printing an error.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Command returns the `ctl` command with its subcommands. Output goes to
// the command's stdout and stderr (cmd.SetOut/SetErr).
func Command() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Drive a VCH through its Port Layer API (no Docker involved)",
		Long: `ctl talks to the Port Layer API a VCH serves with
"vch daemon --portlayer-listen unix:///PATH.sock". Containers are named by
an ID, a unique ID prefix or a name.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var caFile, certFile, keyFile string
	pf := cmd.PersistentFlags()
	pf.StringVar(&addr, "portlayer", os.Getenv("VCH_PORTLAYER"), "the Port Layer API's address, unix:///PATH.sock or tcp://HOST:PORT (env VCH_PORTLAYER)")
	pf.StringVar(&caFile, "tlscacert", "", "for tcp://: the CA that signed the server's certificate")
	pf.StringVar(&certFile, "tlscert", "", "for tcp://: this client's certificate")
	pf.StringVar(&keyFile, "tlskey", "", "for tcp://: this client's key")
	connect := func() (*client.Client, error) {
		if addr == "" {
			return nil, fmt.Errorf("ctl: --portlayer unix:///PATH.sock is required")
		}
		return dial(addr, caFile, certFile, keyFile)
	}
	cmd.AddCommand(imagesCmd(connect), pullCmd(connect), runCmd(connect), psCmd(connect), logsCmd(connect),
		execCmd(connect), stopCmd(connect), rmCmd(connect), volumesCmd(connect), networksCmd(connect), eventsCmd(connect))
	return cmd
}

type connector func() (*client.Client, error)

// dial is a client for addr; a TCP address takes the TLS files.
func dial(addr, caFile, certFile, keyFile string) (*client.Client, error) {
	if !strings.HasPrefix(addr, "tcp://") {
		return client.New(addr, nil)
	}
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("ctl: %s: TCP needs --tlscacert, --tlscert and --tlskey (mutual TLS)", addr)
	}
	cfg, err := tlsfiles.Client(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return client.New(addr, cfg)
}

// shortID is an ID's first 12 hex digits, without "sha256:".
func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// size is n bytes in B, KB, MB or GB (powers of 1000, one decimal).
func size(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "KB", "MB", "GB"} {
		if f < 1000 || u == "GB" {
			if u == "B" {
				return fmt.Sprintf("%d%s", n, u)
			}
			return fmt.Sprintf("%.1f%s", f, u)
		}
		f /= 1000
	}
	return ""
}

// ago is how long before now t was, roughly.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func imagesCmd(connect connector) *cobra.Command {
	return &cobra.Command{
		Use:   "images",
		Short: "List images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			imgs, err := c.Images().List(cmd.Context())
			if err != nil {
				return err
			}
			tw := table(cmd.OutOrStdout())
			fmt.Fprintln(tw, "ID\tTAGS\tSIZE\tCREATED")
			for _, img := range imgs {
				tags := strings.Join(img.RepoTags, ",")
				if tags == "" {
					tags = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", shortID(img.ID), tags, size(img.Size), ago(img.Created))
			}
			return tw.Flush()
		},
	}
}

func pullCmd(connect connector) *cobra.Command {
	return &cobra.Command{
		Use:   "pull REF",
		Short: "Fetch an image from its registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			last := map[string]string{}
			img, err := c.Images().Pull(cmd.Context(), args[0], portlayer.RegistryAuth{}, func(p portlayer.Progress) {
				// One line per change of a layer's status, not per byte.
				if last[p.ID] == p.Status {
					return
				}
				last[p.ID] = p.Status
				if p.ID != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", p.ID, p.Status)
				} else {
					fmt.Fprintln(cmd.ErrOrStderr(), p.Status)
				}
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", img.ID, strings.Join(img.RepoTags, ","))
			return nil
		},
	}
}

// runOptions are ctl run's flags.
type runOptions struct {
	rm, detach, interactive, tty bool
	name, network                string
	env, volumes                 []string
}

func runCmd(connect connector) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [--rm] [-d] [-e K=V] [--network NET] [-v VOL:/path] [--name NAME] IMAGE [ARG...]",
		Short: "Create and start a container; without -d, show its output and exit with its status",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			return run(cmd, c, o, args[0], args[1:])
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
	f.BoolVarP(&o.detach, "detach", "d", false, "print the container's ID and leave it running")
	f.BoolVarP(&o.interactive, "interactive", "i", false, "connect stdin (its end ends the container's stdin)")
	f.BoolVarP(&o.tty, "tty", "t", false, "run on a terminal (the local one is put in raw mode)")
	f.StringArrayVarP(&o.env, "env", "e", nil, "K=V in the environment, repeatable")
	f.StringVar(&o.network, "network", "bridge", "the network to join; none for no network")
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "VOLUME:/PATH[:ro], a named volume (created if missing), repeatable")
	f.StringVar(&o.name, "name", "", "the container's name (default: its short ID)")
	return cmd
}

// spec builds the container spec from the image's config and the flags.
func spec(img portlayer.Image, o runOptions, ref string, args []string) (portlayer.ContainerSpec, error) {
	ic := img.Config.Config
	s := portlayer.ContainerSpec{Name: o.name, Image: img.ID, ImageRef: ref, WorkingDir: ic.WorkingDir, User: ic.User,
		Env: append(append([]string(nil), ic.Env...), o.env...)}
	cmdArgs := ic.Cmd
	if len(args) > 0 {
		cmdArgs = args
	}
	s.Args = append(append([]string(nil), ic.Entrypoint...), cmdArgs...)
	if len(s.Args) == 0 {
		return s, fmt.Errorf("ctl run: image %s has no command: give one after the image", ref)
	}
	for _, e := range o.env {
		if k, _, _ := strings.Cut(e, "="); k == "" {
			return s, fmt.Errorf("ctl run: -e %q: want K=V", e)
		}
	}
	switch o.network {
	case "none":
		s.NoNetwork = true
	case "":
	default:
		s.Networks = []portlayer.EndpointSpec{{Network: o.network}}
	}
	for _, v := range o.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			return s, fmt.Errorf("ctl run: -v %q: want VOLUME:/PATH[:ro]", v)
		}
		s.Mounts = append(s.Mounts, portlayer.MountSpec{Type: portlayer.MountVolume, Source: parts[0], Target: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"})
	}
	return s, nil
}

// run is ctl run.
func run(cmd *cobra.Command, c *client.Client, o runOptions, ref string, args []string) error {
	if (o.interactive || o.tty) && o.detach {
		return fmt.Errorf("ctl run: -i and -t are for a container you stay attached to, not with -d")
	}
	ctx := cmd.Context()
	img, err := c.Images().Get(ctx, ref)
	if err != nil {
		return err
	}
	s, err := spec(img, o, ref, args)
	if err != nil {
		return err
	}
	s.Tty, s.OpenStdin, s.StdinOnce = o.tty, o.interactive, o.interactive
	// A detached --rm container is removed by the port layer when it
	// exits (ctl is gone by then); a foreground one by ctl, after its
	// output has been read.
	s.AutoRemove = o.rm && o.detach
	for _, m := range s.Mounts {
		if _, err := c.CreateVolume(ctx, portlayer.VolumeSpec{Name: m.Source}); err != nil {
			return err
		}
	}
	ctr, err := c.Create(ctx, s)
	if err != nil {
		return err
	}
	remove := func() {
		if o.rm && !o.detach {
			_ = c.Remove(context.WithoutCancel(ctx), ctr.ID, true)
		}
	}
	exited, err := c.Wait(ctx, ctr.ID, portlayer.WaitNextExit)
	if err != nil {
		remove()
		return err
	}
	var att portlayer.Attachment
	term := openTerminal(o.tty)
	defer term.restore()
	if o.interactive || o.tty {
		// Attached before the start, so nothing is lost.
		opts := portlayer.AttachOptions{Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(), Stream: true}
		if o.interactive {
			opts.Stdin = cmd.InOrStdin()
		}
		if att, err = c.Attach(ctx, ctr.ID, opts); err != nil {
			remove()
			return err
		}
		defer att.Close()
	}
	if err := c.Start(ctx, ctr.ID); err != nil {
		remove()
		return err
	}
	if o.detach {
		fmt.Fprintln(cmd.OutOrStdout(), ctr.ID)
		return nil
	}
	if att != nil {
		if o.tty && term.rows > 0 {
			_ = c.Resize(ctx, ctr.ID, term.rows, term.cols)
		}
		stop := term.onResize(func(rows, cols uint) { _ = c.Resize(context.WithoutCancel(ctx), ctr.ID, rows, cols) })
		defer stop()
		<-att.Done()
	} else {
		logs, err := c.Logs(ctx, ctr.ID, portlayer.LogOptions{Stdout: true, Stderr: true, Follow: true, Tail: -1})
		if err != nil {
			remove()
			return err
		}
		copyLogs(cmd, logs)
	}
	res := <-exited
	term.restore()
	remove()
	if res.Error != "" {
		return fmt.Errorf("ctl run: %s", res.Error)
	}
	if res.ExitCode != 0 {
		return ExitError{Code: res.ExitCode}
	}
	return nil
}

// copyLogs writes log messages to the command's stdout and stderr.
func copyLogs(cmd *cobra.Command, logs <-chan portlayer.LogMessage) {
	for m := range logs {
		w := cmd.OutOrStdout()
		if m.Stream == "stderr" {
			w = cmd.ErrOrStderr()
		}
		_, _ = w.Write(m.Data)
	}
}

func psCmd(connect connector) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "ps [-a]",
		Short: "List running containers (-a: all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			cs, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := table(cmd.OutOrStdout())
			fmt.Fprintln(tw, "ID\tNAME\tIMAGE\tSTATE\tCOMMAND")
			for _, ctr := range cs {
				st := ctr.State
				if !all && st.Status != portlayer.StatusRunning && st.Status != portlayer.StatusPaused {
					continue
				}
				state := string(st.Status)
				switch st.Status {
				case portlayer.StatusExited:
					state = fmt.Sprintf("exited (%d) %s", st.ExitCode, ago(st.FinishedAt))
				case portlayer.StatusRunning:
					state = "running since " + ago(st.StartedAt)
				}
				image := ctr.Spec.ImageRef
				if image == "" {
					image = shortID(ctr.Spec.Image)
				}
				command := strings.Join(ctr.Spec.Args, " ")
				if len(command) > 40 {
					command = command[:37] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", shortID(ctr.ID), ctr.Spec.Name, image, state, command)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "all containers, not only running ones")
	return cmd
}

func logsCmd(connect connector) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] CONTAINER",
		Short: "Show a container's output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			logs, err := c.Logs(cmd.Context(), args[0], portlayer.LogOptions{Stdout: true, Stderr: true, Follow: follow, Tail: -1})
			if err != nil {
				return err
			}
			copyLogs(cmd, logs)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep showing new output until the container stops")
	return cmd
}

func execCmd(connect connector) *cobra.Command {
	var interactive, tty bool
	cmd := &cobra.Command{
		Use:   "exec [-it] CONTAINER ARG...",
		Short: "Run a command in a running container and exit with its status",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			term := openTerminal(tty)
			defer term.restore()
			spec := portlayer.ExecSpec{Args: args[1:], Tty: tty, AttachStdin: interactive, AttachStdout: true, AttachStderr: !tty,
				ConsoleRows: term.rows, ConsoleCols: term.cols}
			id, err := c.CreateExec(ctx, args[0], spec)
			if err != nil {
				return err
			}
			opts := portlayer.ExecStartOptions{Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(), Rows: term.rows, Cols: term.cols}
			if interactive {
				opts.Stdin = cmd.InOrStdin()
			}
			stop := term.onResize(func(rows, cols uint) { _ = c.ResizeExec(context.WithoutCancel(ctx), id, rows, cols) })
			defer stop()
			if err := c.StartExec(ctx, id, opts); err != nil {
				return err
			}
			info, err := c.InspectExec(ctx, id)
			if err != nil {
				return err
			}
			if info.ExitCode != nil && *info.ExitCode != 0 {
				return ExitError{Code: *info.ExitCode}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&interactive, "interactive", "i", false, "connect stdin")
	f.BoolVarP(&tty, "tty", "t", false, "run on a terminal (the local one is put in raw mode)")
	return cmd
}

func stopCmd(connect connector) *cobra.Command {
	var seconds int
	cmd := &cobra.Command{
		Use:   "stop CONTAINER",
		Short: "Stop a container: its stop signal, then the VM ends after the timeout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			var timeout *time.Duration
			if cmd.Flags().Changed("time") {
				d := time.Duration(seconds) * time.Second
				timeout = &d
			}
			// NotModified: it was not running, which is what was asked.
			if err := c.Stop(cmd.Context(), args[0], timeout); err != nil && portlayer.ClassOf(err) != portlayer.ClassNotModified {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	}
	cmd.Flags().IntVarP(&seconds, "time", "t", 0, "seconds to wait before the kill (default: the container's own)")
	return cmd
}

func rmCmd(connect connector) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] CONTAINER...",
		Short: "Remove containers (-f: running ones too)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			var failed error
			for _, ref := range args {
				if err := c.Remove(cmd.Context(), ref, force); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", ref, err)
					failed = fmt.Errorf("ctl rm: not every container was removed")
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), ref)
			}
			return failed
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

func volumesCmd(connect connector) *cobra.Command {
	return &cobra.Command{
		Use:   "volumes",
		Short: "List volumes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			vs, err := c.ListVolumes(cmd.Context())
			if err != nil {
				return err
			}
			tw := table(cmd.OutOrStdout())
			fmt.Fprintln(tw, "NAME\tSIZE\tUSED ON HOST\tCREATED")
			for _, v := range vs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, size(v.SizeBytes), size(v.DiskUsageBytes), ago(v.CreatedAt))
			}
			return tw.Flush()
		},
	}
}

func networksCmd(connect connector) *cobra.Command {
	return &cobra.Command{
		Use:   "networks",
		Short: "List networks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			ns, err := c.ListNetworks(cmd.Context())
			if err != nil {
				return err
			}
			sort.Slice(ns, func(i, j int) bool { return ns[i].Name < ns[j].Name })
			tw := table(cmd.OutOrStdout())
			fmt.Fprintln(tw, "ID\tNAME\tSUBNET\tCONTAINERS")
			for _, n := range ns {
				subnet := "-"
				if n.Subnet.IsValid() {
					subnet = n.Subnet.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", shortID(n.ID), n.Name, subnet, len(n.Endpoints))
			}
			return tw.Flush()
		},
	}
}

func eventsCmd(connect connector) *cobra.Command {
	return &cobra.Command{
		Use:   "events",
		Short: "Show events as they happen, until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			_, live := c.Subscribe(ctx, time.Time{}, true)
			for e := range live {
				var attrs []string
				for k, v := range e.Attributes {
					attrs = append(attrs, k+"="+v)
				}
				sort.Strings(attrs)
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s %s %s\n", e.Time.Format(time.RFC3339Nano), e.Type, e.Action, shortID(e.ID), strings.Join(attrs, " "))
			}
			return nil
		},
	}
}
