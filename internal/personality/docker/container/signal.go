package container

import (
	"strconv"
	"strings"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"golang.org/x/sys/unix"
)

// ParseSignal converts a Docker signal argument to a Linux signal number, as
// dockerd's signal.ParseSignal does: a number ("9"), or a name with or
// without the SIG prefix in any case ("KILL", "sigterm"). InvalidArgument
// "Invalid signal: <s>" otherwise.
func ParseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, httputils.InvalidArgument("Invalid signal: %s", s)
		}
		return n, nil
	}
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := int(unix.SignalNum(name)); n != 0 {
		return n, nil
	}
	if base, off, ok := strings.Cut(name, "+"); ok && base == "SIGRTMIN" {
		if k, err := strconv.Atoi(off); err == nil && 34+k <= 64 {
			return 34 + k, nil
		}
	}
	if base, off, ok := strings.Cut(name, "-"); ok && base == "SIGRTMAX" {
		if k, err := strconv.Atoi(off); err == nil && 64-k >= 34 {
			return 64 - k, nil
		}
	}
	switch name {
	case "SIGRTMIN":
		return 34, nil
	case "SIGRTMAX":
		return 64, nil
	}
	return 0, httputils.InvalidArgument("Invalid signal: %s", s)
}
