package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/go-connections/nat"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/jsonstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/personality/docker/image"
	"github.com/vchproject/vch/internal/portlayer"
)

// plan is a parsed Dockerfile: the stages to build (up to --target) and
// the ARGs before the first FROM.
type plan struct {
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand
	escape   rune
	total    int // steps, as "Step N/total" counts them
}

// parseDockerfile parses with BuildKit's parser and instructions, keeps
// the stages up to opts.target and adds a LABEL step for opts.labels, as
// the classic builder does. InvalidArgument (400) with dockerd's "dockerfile
// parse error line N: …" texts for syntax errors and unknown instructions.
func parseDockerfile(df []byte, opts options) (*plan, error) {
	res, err := parser.Parse(bytes.NewReader(df))
	if err != nil {
		return nil, parseErr(err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, parseErr(err)
	}
	if len(stages) == 0 {
		return nil, httputils.InvalidArgument("dockerfile parse error: no FROM instruction: a Dockerfile must start with FROM (after ARGs and comments)")
	}
	if opts.target != "" {
		i, ok := instructions.HasStage(stages, opts.target)
		if !ok {
			return nil, httputils.InvalidArgument("failed to reach build target %s in Dockerfile", opts.target)
		}
		stages = stages[:i+1]
	}
	if len(opts.labels) > 0 {
		last := &stages[len(stages)-1]
		for _, k := range sortedKeys(opts.labels) {
			last.AddCommand(instructions.NewLabelCommand(k, opts.labels[k], true))
		}
	}
	p := &plan{stages: stages, metaArgs: metaArgs, escape: res.EscapeToken, total: len(metaArgs)}
	for _, s := range stages {
		p.total += 1 + len(s.Commands)
	}
	return p, nil
}

func parseErr(err error) error {
	var ui *instructions.UnknownInstructionError
	if errors.As(err, &ui) {
		return httputils.Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("dockerfile parse error line %d: unknown instruction: %s", ui.Line, strings.ToUpper(ui.Instruction)))
	}
	msg := strings.Replace(err.Error(), "dockerfile parse error on line", "dockerfile parse error line", 1)
	return httputils.Classify(errdefs.ErrInvalidArgument, err, msg)
}

// builder runs one build.
type builder struct {
	rt     *Router
	opts   options
	plan   *plan
	ctxDir string
	out    *httputils.JSONStream

	step     int
	results  []string          // image ID of each finished stage; "" for an empty scratch stage
	trees    map[string]string // image ID → flattened tree, for COPY --from and --chown
	releases []func()
	usedArgs map[string]bool // build arguments some ARG declared
	sessions []*session      // every session container, removed at the end
}

// stage is the state of the stage being built.
type stage struct {
	image  string // current image ID; "" while a scratch stage has no step
	cfg    ocispec.ImageConfig
	shell  []string
	args   map[string]string // declared ARGs with a value
	argSet []string          // their names in declaration order
	cmdSet bool              // CMD was set in this stage
	// extra are the image config's Docker members (Healthcheck, OnBuild,
	// Shell), carried from the base image and set by HEALTHCHECK, ONBUILD
	// and SHELL.
	extra map[string]json.RawMessage
	// sess is the container VM running the stage's RUN steps (nil: none
	// yet, or it no longer holds image); noSession: image cannot host one.
	sess      *session
	noSession bool
	// moreRuns: a RUN follows the current step in the stage.
	moreRuns bool
}

var defaultShell = []string{"/bin/sh", "-c"}

// predefinedArgs may be given with --build-arg without an ARG; RUN steps
// see them, history and the cache key do not (Docker's proxy variables).
var predefinedArgs = []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}

func (b *builder) say(s string) {
	if !b.opts.quiet {
		b.out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Stream: s}})
	}
}

func (b *builder) cleanup(ctx context.Context) {
	b.removeSessions(ctx)
	for _, r := range b.releases {
		r()
	}
}

// run builds every stage and tags the last one; it returns its image ID.
func (b *builder) run(ctx context.Context) (string, error) {
	b.trees = map[string]string{}
	b.usedArgs = map[string]bool{}
	meta := map[string]string{}
	for _, a := range b.plan.metaArgs {
		b.stepHeader(a.String())
		for _, kv := range a.Args {
			name := kv.Key
			v, _, err := shell.NewLex(b.plan.escape).ProcessWord(deref(kv.Value), shell.EnvsFromSlice(envList(meta)))
			if err != nil {
				return "", stepErrorf("%v", err)
			}
			val, has := v, kv.Value != nil
			if bv, ok := b.opts.buildArgs[name]; ok && bv != nil {
				val, has = *bv, true
			}
			b.usedArgs[name] = true
			if has {
				meta[name] = val
			}
		}
	}
	var last string
	for i := range b.plan.stages {
		id, err := b.buildStage(ctx, &b.plan.stages[i], meta)
		if err != nil {
			b.removeSessions(ctx) // before the client hears of the failure
			return "", err
		}
		b.results = append(b.results, id)
		last = id
	}
	b.removeSessions(ctx)
	if last == "" {
		return "", stepErrorf("No image was generated. Is your Dockerfile empty?")
	}
	var unused []string
	for _, k := range sortedKeys(b.opts.buildArgs) {
		if !b.usedArgs[k] && !slices.Contains(predefinedArgs, k) {
			unused = append(unused, k)
		}
	}
	if len(unused) > 0 {
		b.say(fmt.Sprintf("[Warning] One or more build-args [%s] were not consumed\n", strings.Join(unused, " ")))
	}
	aux, _ := json.Marshal(map[string]string{"ID": last})
	raw := json.RawMessage(aux)
	b.out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Aux: &raw}})
	if b.opts.quiet {
		b.out.Send(httputils.ProgressMessage{Message: jsonstream.Message{Stream: last + "\n"}})
	}
	b.say("Successfully built " + shortID(last) + "\n")
	for _, t := range b.opts.tags {
		if err := b.rt.be.Images.Tag(ctx, last, t); err != nil {
			return "", stepErrorf("tag %s: %s", t, httputils.PortLayerText(err))
		}
		b.say("Successfully tagged " + t + "\n")
	}
	return last, nil
}

func (b *builder) stepHeader(text string) {
	b.step++
	b.say(fmt.Sprintf("Step %d/%d : %s", b.step, b.plan.total, text))
	b.say("\n")
}

// source is an instruction's text as written (BuildKit's commands keep
// it as their String).
func source(cmd instructions.Command) string {
	if s, ok := cmd.(fmt.Stringer); ok {
		return s.String()
	}
	return strings.ToUpper(cmd.Name())
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// envList renders a map as KEY=value entries, sorted.
func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, k+"="+m[k])
	}
	return out
}

// buildStage resolves FROM and dispatches the stage's instructions.
func (b *builder) buildStage(ctx context.Context, s *instructions.Stage, meta map[string]string) (string, error) {
	b.stepHeader(s.SourceCode)
	lex := shell.NewLex(b.plan.escape)
	metaEnv := shell.EnvsFromSlice(append(envList(meta), "BUILDPLATFORM=linux/amd64", "TARGETPLATFORM=linux/amd64", "TARGETOS=linux", "TARGETARCH=amd64"))
	baseName, _, err := lex.ProcessWord(s.BaseName, metaEnv)
	if err != nil {
		return "", stepErrorf("%v", err)
	}
	if s.Platform != "" {
		p, _, err := lex.ProcessWord(s.Platform, metaEnv)
		if err != nil {
			return "", stepErrorf("%v", err)
		}
		if err := checkPlatform(p); err != nil {
			return "", stepErrorf("%s", httputils.PortLayerText(err))
		}
	}
	st := &stage{shell: slices.Clone(defaultShell), args: map[string]string{}}
	switch base, err := b.resolveBase(ctx, baseName); {
	case err != nil:
		return "", err
	case base != nil:
		st.image, st.cfg, st.extra = base.ID, base.Config.Config, maps.Clone(base.ConfigExtra)
		if sh, ok := st.extra["Shell"]; ok {
			var shell []string
			if json.Unmarshal(sh, &shell) == nil && len(shell) > 0 {
				st.shell = shell
			}
		}
		b.say(" ---> " + shortID(base.ID) + "\n")
	}
	for i, cmd := range s.Commands {
		b.stepHeader(source(cmd))
		st.moreRuns = slices.ContainsFunc(s.Commands[i+1:], func(c instructions.Command) bool {
			_, ok := c.(*instructions.RunCommand)
			return ok
		})
		if err := b.dispatch(ctx, st, cmd, meta); err != nil {
			return "", err
		}
	}
	return st.image, nil
}

// resolveBase finds FROM's image: an earlier stage (by name or index), the
// empty scratch (nil), or an image held or pulled.
func (b *builder) resolveBase(ctx context.Context, name string) (*portlayer.Image, error) {
	if strings.EqualFold(name, "scratch") {
		return nil, nil
	}
	if id, ok := b.stageResult(name); ok {
		if id == "" {
			return nil, nil
		}
		img, err := b.rt.be.Images.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		return &img, nil
	}
	return b.image(ctx, name, b.opts.pull)
}

// stageResult looks name up among the finished stages, by name (case
// insensitive) or index.
func (b *builder) stageResult(name string) (string, bool) {
	for i := range b.results {
		if strings.EqualFold(b.plan.stages[i].Name, name) && name != "" {
			return b.results[i], true
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 && n < len(b.results) {
		return b.results[n], true
	}
	return "", false
}

// image returns a held image, pulling it when missing or when pull is set.
func (b *builder) image(ctx context.Context, ref string, pull bool) (*portlayer.Image, error) {
	img, err := b.rt.be.Images.Get(ctx, ref)
	if err == nil && !pull {
		return &img, nil
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, stepErrorf("%s", httputils.PortLayerText(err))
	}
	pulled, perr := b.rt.be.Images.Pull(ctx, ref, portlayer.RegistryAuth{}, nil)
	if perr != nil {
		if err == nil {
			return &img, nil // --pull of an image held: keep it (no registry here)
		}
		return nil, stepErrorf("%s", httputils.PortLayerText(perr))
	}
	return &pulled, nil
}

// expander is the word expansion of a step: the stage's ARGs overridden by
// its ENV, Docker's rule.
func (b *builder) expander(st *stage) instructions.SingleWordExpander {
	env := map[string]string{}
	maps.Copy(env, st.args)
	for _, e := range st.cfg.Env {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	getter := shell.EnvsFromSlice(envList(env))
	lex := shell.NewLex(b.plan.escape)
	return func(word string) (string, error) {
		r, _, err := lex.ProcessWord(word, getter)
		return r, err
	}
}

// dispatch runs one instruction.
func (b *builder) dispatch(ctx context.Context, st *stage, cmd instructions.Command, meta map[string]string) error {
	if e, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
		if err := e.Expand(b.expander(st)); err != nil {
			return stepErrorf("%v", err)
		}
	}
	cfg := cloneConfig(st.cfg)
	comment := source(cmd)
	switch c := cmd.(type) {
	case *instructions.EnvCommand:
		var parts []string
		for _, kv := range c.Env {
			cfg.Env = image.SetEnv(cfg.Env, kv.Key, kv.Value)
			parts = append(parts, kv.Key+"="+kv.Value)
		}
		comment = "ENV " + strings.Join(parts, " ")
	case *instructions.LabelCommand:
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		var parts []string
		for _, kv := range c.Labels {
			cfg.Labels[kv.Key] = kv.Value
			parts = append(parts, strconv.Quote(kv.Key)+"="+strconv.Quote(kv.Value))
		}
		comment = "LABEL " + strings.Join(parts, " ")
	case *instructions.MaintainerCommand:
		// The author is a field of the image, not of its config.
		return b.commitConfig(ctx, st, cfg, "MAINTAINER "+c.Maintainer, c.Maintainer)
	case *instructions.CmdCommand:
		cfg.Cmd = b.withShell(st, c.ShellDependantCmdLine)
		st.cmdSet = true
		comment = "CMD " + jsonArgs(cfg.Cmd)
	case *instructions.EntrypointCommand:
		cfg.Entrypoint = b.withShell(st, c.ShellDependantCmdLine)
		if !st.cmdSet {
			cfg.Cmd = nil // an ENTRYPOINT drops the base image's CMD
		}
		comment = "ENTRYPOINT " + jsonArgs(cfg.Entrypoint)
	case *instructions.ExposeCommand:
		ports, _, err := nat.ParsePortSpecs(c.Ports)
		if err != nil {
			return stepErrorf("%v", err)
		}
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		var names []string
		for p := range ports {
			cfg.ExposedPorts[string(p)] = struct{}{}
			names = append(names, string(p))
		}
		slices.Sort(names)
		comment = "EXPOSE " + strings.Join(names, " ")
	case *instructions.VolumeCommand:
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if v = strings.TrimSpace(v); v == "" {
				return stepErrorf("VOLUME specified can not be an empty string")
			}
			cfg.Volumes[v] = struct{}{}
		}
		comment = "VOLUME " + jsonArgs(c.Volumes)
	case *instructions.UserCommand:
		cfg.User = c.User
		comment = "USER " + c.User
	case *instructions.WorkdirCommand:
		wd := c.Path
		if !path.IsAbs(wd) {
			wd = path.Join("/", cfg.WorkingDir, wd)
		}
		cfg.WorkingDir = path.Clean(wd)
		comment = "WORKDIR " + cfg.WorkingDir
	case *instructions.StopSignalCommand:
		if _, err := container.ParseSignal(c.Signal); err != nil {
			return stepErrorf("%s", httputils.PortLayerText(err))
		}
		cfg.StopSignal = c.Signal
	case *instructions.ShellCommand:
		st.shell = slices.Clone(c.Shell)
		st.setExtra("Shell", c.Shell)
		comment = "SHELL " + jsonArgs(c.Shell)
	case *instructions.ArgCommand:
		var parts []string
		for _, kv := range c.Args {
			name := kv.Key
			val, has := deref(kv.Value), kv.Value != nil
			if !has {
				if mv, ok := meta[name]; ok {
					val, has = mv, true
				}
			}
			if bv, ok := b.opts.buildArgs[name]; ok && bv != nil {
				val, has = *bv, true
			}
			b.usedArgs[name] = true
			if has {
				if _, seen := st.args[name]; !seen {
					st.argSet = append(st.argSet, name)
				}
				st.args[name] = val
			}
			part := name
			if kv.Value != nil {
				part += "=" + *kv.Value
			}
			parts = append(parts, part)
		}
		comment = "ARG " + strings.Join(parts, " ")
	case *instructions.HealthCheckCommand:
		st.setExtra("Healthcheck", c.Health)
		comment = "HEALTHCHECK " + healthText(c.Health)
	case *instructions.OnbuildCommand:
		var on []string
		if raw, ok := st.extra["OnBuild"]; ok {
			_ = json.Unmarshal(raw, &on)
		}
		st.setExtra("OnBuild", append(on, c.Expression))
		comment = "ONBUILD " + c.Expression
	case *instructions.RunCommand:
		return b.runStep(ctx, st, c)
	case *instructions.CopyCommand:
		return b.copyStep(ctx, st, copyRequest{
			name: "COPY", sd: c.SourcesAndDest, from: c.From, chown: c.Chown, chmod: c.Chmod,
		})
	case *instructions.AddCommand:
		return b.copyStep(ctx, st, copyRequest{
			name: "ADD", sd: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, unpack: c.Unpack == nil || *c.Unpack,
			checksum: c.Checksum,
		})
	default:
		return stepErrorf("%s is not supported by vch's builder", strings.ToUpper(cmd.Name()))
	}
	return b.commitConfig(ctx, st, cfg, comment, "")
}

// commitConfig commits a configuration-only step (or reuses its cached
// image) and makes it the stage's current image.
func (b *builder) commitConfig(ctx context.Context, st *stage, cfg ocispec.ImageConfig, comment, author string) error {
	createdBy := strings.Join(append(slices.Clone(st.shell), "#(nop) ", comment), " ")
	key := stepKey(st.image, createdBy, cfg, append([]string{"author=" + author}, st.extraKey()...))
	if id, ok := b.cached(ctx, key, st.image); ok {
		st.advance(id)
		st.cfg = cfg
		return nil
	}
	img, err := b.rt.be.Committer.Commit(ctx, portlayer.CommitSpec{Parent: st.image, Config: cfg, ConfigExtra: st.extra, CreatedBy: createdBy, Author: author})
	if err != nil {
		return stepErrorf("%s", httputils.PortLayerText(err))
	}
	st.advance(img.ID)
	return b.stepDone(st, key, img, cfg)
}

// cached looks the key up (unless --no-cache) and checks that its image
// still exists on the same parent; it prints Docker's "Using cache".
func (b *builder) cached(ctx context.Context, key, parent string) (string, bool) {
	if b.opts.noCache {
		return "", false
	}
	id, ok := b.rt.cache.get(key)
	if !ok {
		return "", false
	}
	img, err := b.rt.be.Images.Get(ctx, id)
	if err != nil || img.ID != id || img.Parent != parent {
		return "", false
	}
	b.say(" ---> Using cache\n")
	b.say(" ---> " + shortID(id) + "\n")
	return id, true
}

// advance moves a configuration step's stage to id; the session, whose
// filesystem that step did not change, follows.
func (st *stage) advance(id string) {
	if st.sess != nil && st.sess.image == st.image {
		st.sess.image = id
	}
	st.image = id
}

// stepDone records a new step image in the cache and the stage. A step
// that changed files has moved the session along itself (or it ends).
func (b *builder) stepDone(st *stage, key string, img portlayer.Image, cfg ocispec.ImageConfig) error {
	if err := b.rt.cache.put(key, img.ID); err != nil {
		b.rt.log.Warn("build cache not updated", "err", err)
	}
	st.image, st.cfg = img.ID, cfg
	b.say(" ---> " + shortID(img.ID) + "\n")
	return nil
}

// setExtra sets a Docker member of the image config.
func (st *stage) setExtra(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	if st.extra == nil {
		st.extra = map[string]json.RawMessage{}
	}
	st.extra[name] = b
}

// extraKey renders the Docker members for a cache key, in name order.
func (st *stage) extraKey() []string {
	var out []string
	for _, k := range sortedKeys(st.extra) {
		out = append(out, k+"="+string(st.extra[k]))
	}
	return out
}

// healthText is HEALTHCHECK's history text, as dockerd writes it.
func healthText(h *dockerspec.HealthcheckConfig) string {
	if h == nil {
		return ""
	}
	return fmt.Sprintf("&{%v %q %q %q %q %d}", h.Test, h.Interval, h.Timeout, h.StartPeriod, h.StartInterval, h.Retries)
}

// withShell turns a shell-form command line into argv with the stage's
// SHELL; an exec form is kept.
func (b *builder) withShell(st *stage, c instructions.ShellDependantCmdLine) []string {
	if c.PrependShell {
		return append(slices.Clone(st.shell), strings.Join(c.CmdLine, " "))
	}
	return slices.Clone(c.CmdLine)
}

func jsonArgs(a []string) string {
	b, _ := json.Marshal(a)
	return string(b)
}

func cloneConfig(c ocispec.ImageConfig) ocispec.ImageConfig {
	c.Env = slices.Clone(c.Env)
	c.Cmd = slices.Clone(c.Cmd)
	c.Entrypoint = slices.Clone(c.Entrypoint)
	c.Labels = maps.Clone(c.Labels)
	c.ExposedPorts = maps.Clone(c.ExposedPorts)
	c.Volumes = maps.Clone(c.Volumes)
	return c
}

// errorMessage is the stream's final error line, with the code of a
// failed RUN in errorDetail.
func errorMessage(code int, msg string) httputils.ProgressMessage {
	return httputils.ProgressMessage{
		Message:   jsonstream.Message{Error: &jsonstream.Error{Code: code, Message: msg}},
		ErrorText: msg,
	}
}
