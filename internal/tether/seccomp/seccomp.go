// Package seccomp turns an OCI runtime-spec linux.seccomp profile (the
// form dockerd hands runc, JSON) into a BPF filter and installs it in the
// calling process, in pure Go (github.com/elastic/go-seccomp-bpf), for
// tether's spawn helper: the container's process inherits the filter
// across its exec.
//
// What it takes: defaultAction and per-rule actions SCMP_ACT_ALLOW,
// SCMP_ACT_ERRNO (always EPERM: errnoRet is not honoured), SCMP_ACT_KILL
// (the thread), SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS,
// SCMP_ACT_TRAP, SCMP_ACT_TRACE and SCMP_ACT_LOG; argument comparisons
// SCMP_CMP_EQ, NE, LT, LE, GT, GE, and SCMP_CMP_MASKED_EQ where the mask
// is one bit and the value 0 or that bit; the x86_64 syscall table (names
// it lacks are skipped, as libseccomp skips names of other
// architectures). Architectures and flags are ignored: container VMs are
// x86_64. Anything else is an error naming it.
package seccomp

import (
	"encoding/json"
	"fmt"
	"math/bits"

	bpf "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Policy builds the filter policy of an OCI linux.seccomp profile (raw
// JSON). An error names what the profile asks that this package cannot
// express.
func Policy(raw []byte) (*bpf.Policy, error) {
	var prof specs.LinuxSeccomp
	if err := json.Unmarshal(raw, &prof); err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	table := arch.X86_64.SyscallNames
	def, err := action(prof.DefaultAction)
	if err != nil {
		return nil, err
	}
	p := &bpf.Policy{DefaultAction: def}
	for _, rule := range prof.Syscalls {
		act, err := action(rule.Action)
		if err != nil {
			return nil, err
		}
		if act == def && len(rule.Args) == 0 {
			continue // the default already says so
		}
		conds, err := conditions(rule.Args)
		if err != nil {
			return nil, err
		}
		g := bpf.SyscallGroup{Action: act}
		for _, n := range rule.Names {
			if _, ok := table[n]; !ok {
				continue
			}
			if conds == nil {
				g.Names = append(g.Names, n)
			} else {
				g.NamesWithCondtions = append(g.NamesWithCondtions, bpf.NameWithConditions{Name: n, Conditions: conds})
			}
		}
		if len(g.Names) > 0 || len(g.NamesWithCondtions) > 0 {
			p.Syscalls = append(p.Syscalls, g)
		}
	}
	if len(p.Syscalls) == 0 {
		// go-seccomp-bpf wants one group; a rule the default covers
		// changes nothing.
		p.Syscalls = []bpf.SyscallGroup{{Names: []string{"getpid"}, Action: def}}
	}
	if _, err := p.Assemble(); err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	return p, nil
}

// Load installs the policy for the calling process, every thread of it
// (TSYNC). The caller needs CAP_SYS_ADMIN, or must have set no_new_privs.
func Load(p *bpf.Policy) error {
	return bpf.LoadFilter(bpf.Filter{Flag: bpf.FilterFlagTSync, Policy: *p})
}

func action(a specs.LinuxSeccompAction) (bpf.Action, error) {
	switch a {
	case specs.ActAllow:
		return bpf.ActionAllow, nil
	case specs.ActErrno:
		return bpf.ActionErrno, nil
	case specs.ActKill, specs.ActKillThread:
		return bpf.ActionKillThread, nil
	case specs.ActKillProcess:
		return bpf.ActionKillProcess, nil
	case specs.ActTrap:
		return bpf.ActionTrap, nil
	case specs.ActTrace:
		return bpf.ActionTrace, nil
	case specs.ActLog:
		return bpf.ActionLog, nil
	}
	return 0, fmt.Errorf("seccomp profile: action %q is not supported by vch", a)
}

func conditions(args []specs.LinuxSeccompArg) (bpf.ArgumentConditions, error) {
	if len(args) == 0 {
		return nil, nil
	}
	var out bpf.ArgumentConditions
	for _, a := range args {
		if a.Index > 5 {
			return nil, fmt.Errorf("seccomp profile: argument index %d: a syscall has 6", a.Index)
		}
		c := bpf.Condition{Argument: uint32(a.Index), Value: a.Value}
		switch a.Op {
		case specs.OpEqualTo:
			c.Operation = bpf.Equal
		case specs.OpNotEqual:
			c.Operation = bpf.NotEqual
		case specs.OpLessThan:
			c.Operation = bpf.LessThan
		case specs.OpLessEqual:
			c.Operation = bpf.LessOrEqual
		case specs.OpGreaterThan:
			c.Operation = bpf.GreaterThan
		case specs.OpGreaterEqual:
			c.Operation = bpf.GreaterOrEqual
		case specs.OpMaskedEqual:
			// (arg & Value) == ValueTwo, expressible for a one-bit mask.
			switch {
			case bits.OnesCount64(a.Value) == 1 && a.ValueTwo == a.Value:
				c.Operation = bpf.BitsSet
			case bits.OnesCount64(a.Value) == 1 && a.ValueTwo == 0:
				c.Operation = bpf.BitsNotSet
			default:
				return nil, fmt.Errorf("seccomp profile: SCMP_CMP_MASKED_EQ of mask %#x to %#x is not supported by vch", a.Value, a.ValueTwo)
			}
		default:
			return nil, fmt.Errorf("seccomp profile: comparison %q is not supported by vch", a.Op)
		}
		out = append(out, c)
	}
	return out, nil
}
