package image

import (
	"errors"
	"maps"
	"path"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
)

// Changes are the `--change` instructions of docker commit and docker
// import, parsed as Dockerfile lines by BuildKit's parser, as dockerd
// does (builder/dockerfile BuildFromConfig).
type Changes struct {
	cmds   []instructions.Command
	escape rune
}

// changeCommands are the instructions a change may be (dockerd's
// validCommitCommands, less HEALTHCHECK and ONBUILD, which an OCI image
// config cannot hold).
var changeCommands = map[string]bool{
	"cmd": true, "entrypoint": true, "env": true, "expose": true, "label": true,
	"stopsignal": true, "user": true, "volume": true, "workdir": true,
}

// ParseChanges parses changes, one instruction each. InvalidArgument
// "<instruction> is not a valid change command" (the instruction in lower
// case, as dockerd prints it) for an instruction a change cannot be, or
// the parser's text for a malformed one.
func ParseChanges(changes []string) (Changes, error) {
	var lines []string
	for _, c := range changes {
		if c = strings.TrimSpace(c); c != "" {
			lines = append(lines, c)
		}
	}
	if len(lines) == 0 {
		return Changes{}, nil
	}
	res, err := parser.Parse(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		return Changes{}, httputils.InvalidArgument("%v", err)
	}
	ch := Changes{escape: res.EscapeToken}
	for _, n := range res.AST.Children {
		if name := strings.ToLower(n.Value); !changeCommands[name] {
			return Changes{}, httputils.InvalidArgument("%s is not a valid change command", name)
		}
		cmd, err := instructions.ParseCommand(n)
		if err != nil {
			return Changes{}, httputils.InvalidArgument("%v", errors.Unwrap(err))
		}
		ch.cmds = append(ch.cmds, cmd)
	}
	return ch, nil
}

// Apply lays the changes over cfg in order, as a Dockerfile's
// instructions would be: variables expand against cfg's environment as
// it stands at each one (so `ENV PATH=/x:$PATH` extends the container's
// PATH); CMD and ENTRYPOINT in shell form run under /bin/sh -c; an
// ENTRYPOINT drops the old CMD unless a change set one; ENV, LABEL,
// EXPOSE and VOLUME add to what is there; a relative WORKDIR is joined
// to the current one. InvalidArgument with dockerd's text for a bad
// signal, port or volume.
func (c Changes) Apply(cfg *ocispec.ImageConfig) error {
	cmdSet := false
	for _, cmd := range c.cmds {
		if e, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
			lex := shell.NewLex(c.escape)
			env := shell.EnvsFromSlice(cfg.Env)
			if err := e.Expand(func(word string) (string, error) {
				r, _, err := lex.ProcessWord(word, env)
				return r, err
			}); err != nil {
				return httputils.InvalidArgument("%v", err)
			}
		}
		switch x := cmd.(type) {
		case *instructions.EnvCommand:
			for _, kv := range x.Env {
				cfg.Env = SetEnv(cfg.Env, kv.Key, kv.Value)
			}
		case *instructions.LabelCommand:
			if cfg.Labels == nil {
				cfg.Labels = map[string]string{}
			}
			for _, kv := range x.Labels {
				cfg.Labels[kv.Key] = kv.Value
			}
		case *instructions.CmdCommand:
			cfg.Cmd, cmdSet = withShell(x.ShellDependantCmdLine), true
		case *instructions.EntrypointCommand:
			cfg.Entrypoint = withShell(x.ShellDependantCmdLine)
			if !cmdSet {
				cfg.Cmd = nil
			}
		case *instructions.ExposeCommand:
			ports := map[string]struct{}{}
			for _, p := range x.Ports {
				for _, w := range strings.Fields(p) {
					keys, err := exposedPorts(w)
					if err != nil {
						return err
					}
					for _, k := range keys {
						ports[k] = struct{}{}
					}
				}
			}
			if cfg.ExposedPorts == nil {
				cfg.ExposedPorts = map[string]struct{}{}
			}
			maps.Copy(cfg.ExposedPorts, ports)
		case *instructions.VolumeCommand:
			if cfg.Volumes == nil {
				cfg.Volumes = map[string]struct{}{}
			}
			for _, v := range x.Volumes {
				if v = strings.TrimSpace(v); v == "" {
					return httputils.InvalidArgument("VOLUME specified can not be an empty string")
				}
				cfg.Volumes[v] = struct{}{}
			}
		case *instructions.UserCommand:
			cfg.User = x.User
		case *instructions.WorkdirCommand:
			wd := x.Path
			if !path.IsAbs(wd) {
				wd = path.Join("/", cfg.WorkingDir, wd)
			}
			cfg.WorkingDir = path.Clean(wd)
		case *instructions.StopSignalCommand:
			if _, err := container.ParseSignal(x.Signal); err != nil {
				return err
			}
			cfg.StopSignal = x.Signal
		}
	}
	return nil
}

// withShell is a CMD or ENTRYPOINT's argv: its exec form as given, its
// shell form under /bin/sh -c (a change has no SHELL).
func withShell(c instructions.ShellDependantCmdLine) []string {
	if c.PrependShell {
		return []string{"/bin/sh", "-c", strings.Join(c.CmdLine, " ")}
	}
	return c.CmdLine
}
