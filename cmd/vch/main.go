// Command vch runs and manages Virtual Container Hosts: Docker endpoints
// whose containers are each their own VM.
//
//	vch create NAME            deploy a VCH and print its DOCKER_HOST lines
//	vch ls | inspect NAME      report on VCHs
//	vch configure NAME         change limits and registries
//	vch start|stop NAME        start or stop a VCH's service
//	vch delete NAME [--force]  remove a VCH and everything it created
//	vch daemon --root DIR -H … run one VCH's engine in the foreground
//
// This package holds flags and wiring only: the engine is package vch, the
// operator's commands are package deploy.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	"github.com/vchproject/vch/internal/ctl"
	"github.com/vchproject/vch/internal/vch"
	"github.com/vchproject/vch/internal/vch/deploy"
)

// stateDirEnv overrides the default base state directory.
const stateDirEnv = "VCH_STATE_DIR"

func main() {
	// Ctrl-C or SIGTERM cancels the command's context, so an interrupted
	// create still removes what it made.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	var exit ctl.ExitError
	if errors.As(err, &exit) {
		// ctl run: the container's exit status, already shown by its output.
		os.Exit(exit.Code)
	}
	if err != nil {
		// Errors from the packages already carry their "vch: " context.
		// The error class (": already exists") is for programs, not people.
		msg, class := err.Error(), ": "+errdefs.Resolve(err).Error()
		for strings.HasSuffix(msg, class) {
			msg = strings.TrimSuffix(msg, class)
		}
		if !strings.HasPrefix(msg, "vch: ") {
			msg = "vch: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

// globals are the root command's persistent flags.
type globals struct {
	stateDir string
	// errOut receives progress lines: the command's stderr.
	errOut io.Writer
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "vch",
		Short: "Virtual Container Host: a Docker endpoint where every container is its own VM",
		Long: `vch deploys and runs Virtual Container Hosts (VCHs): Docker Engine API
endpoints where every container is its own QEMU microVM. An operator
creates a VCH with "vch create NAME" and hands the printed DOCKER_HOST
lines (and the client certificates) to a team.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			g.errOut = cmd.ErrOrStderr()
		},
	}
	def := os.Getenv(stateDirEnv)
	if def == "" {
		def = deploy.DefaultBaseDir
	}
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", def, "directory holding one state directory per VCH (env "+stateDirEnv+")")
	root.AddCommand(
		createCmd(g), lsCmd(g), inspectCmd(g), configureCmd(g), startCmd(g), stopCmd(g), deleteCmd(g),
		superviseCmd(g), daemonCmd(), versionCmd(), ctl.Command(), personalityCmd(),
	)
	return root
}

// manager returns the deploy.Manager for the global flags; progress lines
// go to stderr so stdout keeps only what a script reads.
func (g *globals) manager() (*deploy.Manager, error) {
	base, err := filepath.Abs(g.stateDir)
	if err != nil {
		return nil, err
	}
	bin, err := os.Executable()
	if err == nil {
		bin, err = filepath.EvalSymlinks(bin)
	}
	if err != nil {
		return nil, fmt.Errorf("vch: cannot find the vch binary: %w", err)
	}
	progress := g.errOut
	if progress == nil {
		progress = os.Stderr
	}
	return &deploy.Manager{Base: base, Binary: bin, Version: vch.Version, Progress: progress}, nil
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
