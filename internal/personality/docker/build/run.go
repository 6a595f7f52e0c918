package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/moby/api/types/jsonstream"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// runStep runs a RUN instruction in a container VM made from the stage's
// image and commits what it changed, as the classic builder does: the
// container has the stage's Env plus its build arguments, User and
// WorkingDir, and joins the default bridge (or --network's network; none:
// loopback only), so it reaches what containers reach; its output streams as the build's (stderr in red, as dockerd
// marks it); a non-zero exit fails the build with dockerd's text and the
// exit code. The container is removed whatever happens.
func (b *builder) runStep(ctx context.Context, st *stage, c *instructions.RunCommand) error {
	if len(c.FlagsUsed) > 0 {
		return stepErrorf("RUN --%s needs BuildKit, which vch does not provide", c.FlagsUsed[0])
	}
	if len(c.Files) > 0 {
		return stepErrorf("RUN with a here-document needs BuildKit, which vch does not provide")
	}
	if st.image == "" {
		return stepErrorf("RUN in a stage FROM scratch: there is no image to run in yet")
	}
	args := b.withShell(st, c.ShellDependantCmdLine)
	// The build arguments a RUN sees, and which the history shows as
	// "|N k=v …" before the command (Docker's rule): those ARG declared
	// with a value and no ENV of the same name overrides.
	var argEnv []string
	envKeys := map[string]bool{}
	for _, e := range st.cfg.Env {
		k, _, _ := strings.Cut(e, "=")
		envKeys[k] = true
	}
	for _, k := range st.argSet {
		if !envKeys[k] {
			argEnv = append(argEnv, k+"="+st.args[k])
		}
	}
	slices.Sort(argEnv)
	createdBy := strings.Join(args, " ")
	if len(argEnv) > 0 {
		createdBy = fmt.Sprintf("|%d %s %s", len(argEnv), strings.Join(argEnv, " "), createdBy)
	}
	key := stepKey(st.image, createdBy, st.cfg, st.extraKey())
	if id, ok := b.cached(ctx, key, st.image); ok {
		st.image = id
		return nil
	}
	env := append(slices.Clone(st.cfg.Env), argEnv...)
	for _, k := range predefinedArgs {
		if v, ok := b.opts.buildArgs[k]; ok && v != nil && !envKeys[k] {
			env = append(env, k+"="+*v)
		}
	}
	spec := portlayer.ContainerSpec{
		Image: st.image, ImageRef: st.image, Args: args, Env: env,
		WorkingDir: st.cfg.WorkingDir, User: st.cfg.User, CaptureChanges: true,
	}
	switch b.opts.network {
	case "none":
		spec.NoNetwork = true
	case "", "default", "bridge":
		spec.Networks = []portlayer.EndpointSpec{{Network: "bridge"}}
	default:
		spec.Networks = []portlayer.EndpointSpec{{Network: b.opts.network}}
	}
	// A session pays off from the second RUN on: a lone (or last) RUN with
	// none running yet gets a VM of its own, which costs less.
	if b.rt.be.Execs != nil && (st.moreRuns || st.sess != nil && st.sess.image == st.image) {
		sess, err := b.sessionFor(ctx, st, spec)
		if err != nil {
			return err
		}
		if sess != nil {
			return b.runInSession(ctx, st, sess, key, createdBy, args, env)
		}
	}
	ctr, err := b.createContainer(ctx, spec)
	if err != nil {
		return err
	}
	defer func() {
		if err := b.rt.be.Compute.Remove(detached(ctx), ctr.ID, true); err != nil {
			b.rt.log.Warn("intermediate container not removed", "container", ctr.ID, "err", err)
		}
	}()
	b.say(" ---> Running in " + shortID(ctr.ID) + "\n")
	code, err := b.runContainer(ctx, ctr.ID)
	if err != nil {
		return err
	}
	if code != 0 {
		return &stepError{msg: fmt.Sprintf("The command '%s' returned a non-zero code: %d", strings.Join(args, " "), code), code: code}
	}
	_, layer, err := b.rt.be.Archives.ChangesLayer(ctx, ctr.ID)
	if err != nil {
		return stepErrorf("%s", httputils.PortLayerText(err))
	}
	img, err := b.rt.be.Committer.Commit(ctx, portlayer.CommitSpec{Parent: st.image, Layer: layer, Config: st.cfg, ConfigExtra: st.extra, CreatedBy: createdBy})
	layer.Close()
	if err != nil {
		return stepErrorf("%s", httputils.PortLayerText(err))
	}
	b.say("Removing intermediate container " + shortID(ctr.ID) + "\n")
	return b.stepDone(st, key, img, st.cfg)
}

// createContainer creates a build container; on a VCH without networks
// the default bridge is left out (loopback only).
func (b *builder) createContainer(ctx context.Context, spec portlayer.ContainerSpec) (portlayer.Container, error) {
	ctr, err := b.rt.be.Compute.Create(ctx, spec)
	if err != nil && errdefs.IsNotFound(err) && (b.opts.network == "" || b.opts.network == "default") {
		spec.Networks = nil
		ctr, err = b.rt.be.Compute.Create(ctx, spec)
	}
	if err != nil {
		return portlayer.Container{}, stepErrorf("%s", httputils.PortLayerText(err))
	}
	return ctr, nil
}

// runInSession runs a RUN step as an exec in the stage's session and
// commits the difference it made.
func (b *builder) runInSession(ctx context.Context, st *stage, sess *session, key, createdBy string, args, env []string) error {
	b.say(" ---> Running in " + shortID(sess.id) + "\n")
	code, err := b.execStep(ctx, sess, args, env, st.cfg.User, st.cfg.WorkingDir)
	if err != nil {
		return err
	}
	if code != 0 {
		return &stepError{msg: fmt.Sprintf("The command '%s' returned a non-zero code: %d", strings.Join(args, " "), code), code: code}
	}
	layer, err := os.CreateTemp(filepath.Join(b.rt.root, "tmp"), "layer-*.tar")
	if err != nil {
		return fmt.Errorf("build: layer: %w", err)
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	if err := b.delta(ctx, sess, layer); err != nil {
		b.endSession(st)
		return stepErrorf("RUN: changes: %v", err)
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("build: layer: %w", err)
	}
	img, err := b.rt.be.Committer.Commit(ctx, portlayer.CommitSpec{Parent: st.image, Layer: layer, Config: st.cfg, ConfigExtra: st.extra, CreatedBy: createdBy})
	if err != nil {
		return stepErrorf("%s", httputils.PortLayerText(err))
	}
	sess.image = img.ID
	return b.stepDone(st, key, img, st.cfg)
}

// runContainer starts the container with its output attached and returns
// its exit code once all output was sent.
func (b *builder) runContainer(ctx context.Context, id string) (int, error) {
	waitc, err := b.rt.be.Compute.Wait(ctx, id, portlayer.WaitNextExit)
	if err != nil {
		return 0, stepErrorf("%s", httputils.PortLayerText(err))
	}
	var stdout, stderr *streamWriter
	if !b.opts.quiet {
		stdout, stderr = &streamWriter{out: b.out}, &streamWriter{out: b.out, stderr: true}
	}
	opts := portlayer.AttachOptions{Stream: true}
	if stdout != nil {
		opts.Stdout, opts.Stderr = stdout, stderr
	}
	att, err := b.rt.be.Interaction.Attach(ctx, id, opts)
	if err != nil {
		return 0, stepErrorf("%s", httputils.PortLayerText(err))
	}
	defer att.Close()
	if err := b.rt.be.Compute.Start(ctx, id); err != nil {
		return 0, stepErrorf("%s", httputils.PortLayerText(err))
	}
	var res portlayer.WaitResult
	select {
	case res = <-waitc:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-att.Done():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if res.Error != "" {
		return 0, stepErrorf("%s", res.Error)
	}
	return res.ExitCode, nil
}

// streamWriter sends a RUN's output as build stream messages; stderr is
// wrapped in the ANSI red dockerd uses ("\x1b[91m" … "\x1b[0m").
type streamWriter struct {
	mu     sync.Mutex
	out    *httputils.JSONStream
	stderr bool
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := string(p)
	if w.stderr {
		s = "\x1b[91m" + s + "\x1b[0m"
	}
	w.out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Stream: s}})
	return len(p), nil
}
