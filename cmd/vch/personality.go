package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/tlsfiles"
	"github.com/vchproject/vch/internal/vch"
)

func personalityCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "personality",
		Short: "Run a front end as its own process against a VCH's Port Layer API",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(dockerPersonalityCmd())
	return cmd
}

// hostSource is the Docker personality's system source over the API.
type hostSource struct{ c *client.Client }

func (h hostSource) Host(ctx context.Context) (docker.HostInfo, error) {
	return h.c.Host(ctx)
}

func dockerPersonalityCmd() *cobra.Command {
	var addr, logLevel, plCA, plCert, plKey string
	var hosts []string
	var tf tlsFlags
	cmd := &cobra.Command{
		Use:   "docker --portlayer unix:///PL.sock -H unix:///PATH.sock|tcp://ADDR:PORT [-H …]",
		Short: "Serve the Docker Engine API in its own process, on a VCH's Port Layer API",
		Long: `Serve the Docker Engine API in its own process, every call going to the
Port Layer API of a VCH ("vch daemon --portlayer-listen"): the same
personality as the daemon's own endpoint, so the docker CLI sees the same
containers, images, volumes and networks through either. docker build is
not served this way (its builder reads images' trees on the daemon's
host). -H and the TLS flags are the daemon's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := stderrLogger(logLevel)
			if err != nil {
				return err
			}
			if addr == "" {
				return fmt.Errorf("vch: --portlayer unix:///PL.sock is required")
			}
			var plTLS *tls.Config
			if strings.HasPrefix(addr, "tcp://") {
				if plCA == "" || plCert == "" || plKey == "" {
					return fmt.Errorf("vch: --portlayer %s: TCP needs --portlayer-tlscacert, --portlayer-tlscert and --portlayer-tlskey", addr)
				}
				var err error
				if plTLS, err = tlsfiles.Client(plCA, plCert, plKey); err != nil {
					return err
				}
			}
			c, err := client.New(addr, plTLS)
			if err != nil {
				return err
			}
			tlsCfg, err := tf.config(cmd.Flags())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if _, err := c.Host(ctx); err != nil {
				return fmt.Errorf("vch: the port layer at %s: %w", addr, err)
			}
			images := c.Images()
			srv := docker.New(docker.Config{Version: vch.Version, GitCommit: vch.GitCommit}, docker.Backend{
				Compute: c, Interaction: c, Images: images, Execs: c, Pauser: c, Monitor: c,
				Events: c, Publish: c.Publish, Volumes: c, Networks: c, NetworkConnector: c,
				System: hostSource{c}, Archives: c, Committer: images, Updater: c, Login: images,
			}, logger)
			l, cleanup, err := docker.Listen(hosts, tlsCfg, logger)
			if err != nil {
				return err
			}
			defer cleanup()
			logger.Info("docker personality serving", "portlayer", addr)
			return srv.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "portlayer", "", "the VCH's Port Layer API, unix:///PATH.sock or tcp://HOST:PORT (required)")
	f.StringVar(&plCA, "portlayer-tlscacert", "", "for a tcp:// port layer: the CA that signed its certificate")
	f.StringVar(&plCert, "portlayer-tlscert", "", "for a tcp:// port layer: this client's certificate")
	f.StringVar(&plKey, "portlayer-tlskey", "", "for a tcp:// port layer: this client's key")
	f.StringArrayVarP(&hosts, "host", "H", nil, "listen address, repeatable: unix:///PATH.sock or tcp://ADDR:PORT (required)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	tf.install(f)
	_ = cmd.MarkFlagRequired("portlayer")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}
