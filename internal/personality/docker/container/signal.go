package container

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
)

// Linux real-time signal bounds as the guest's C library sees them.
const (
	sigRTMin = 34
	sigRTMax = 64
)

// signalNames is dockerd's Linux signal table (moby/sys/signal SignalMap):
// the names without "SIG", aliases (CLD, IOT, POLL) included, and
// RTMIN+1..15 and RTMAX-14..1 (RTMIN+15 = RTMAX-15) for the real-time signals.
var signalNames = func() map[string]int {
	m := map[string]int{
		"ABRT": int(unix.SIGABRT), "ALRM": int(unix.SIGALRM), "BUS": int(unix.SIGBUS),
		"CHLD": int(unix.SIGCHLD), "CLD": int(unix.SIGCLD), "CONT": int(unix.SIGCONT),
		"FPE": int(unix.SIGFPE), "HUP": int(unix.SIGHUP), "ILL": int(unix.SIGILL),
		"INT": int(unix.SIGINT), "IO": int(unix.SIGIO), "IOT": int(unix.SIGIOT),
		"KILL": int(unix.SIGKILL), "PIPE": int(unix.SIGPIPE), "POLL": int(unix.SIGPOLL),
		"PROF": int(unix.SIGPROF), "PWR": int(unix.SIGPWR), "QUIT": int(unix.SIGQUIT),
		"SEGV": int(unix.SIGSEGV), "STKFLT": int(unix.SIGSTKFLT), "STOP": int(unix.SIGSTOP),
		"SYS": int(unix.SIGSYS), "TERM": int(unix.SIGTERM), "TRAP": int(unix.SIGTRAP),
		"TSTP": int(unix.SIGTSTP), "TTIN": int(unix.SIGTTIN), "TTOU": int(unix.SIGTTOU),
		"URG": int(unix.SIGURG), "USR1": int(unix.SIGUSR1), "USR2": int(unix.SIGUSR2),
		"VTALRM": int(unix.SIGVTALRM), "WINCH": int(unix.SIGWINCH), "XCPU": int(unix.SIGXCPU),
		"XFSZ":  int(unix.SIGXFSZ),
		"RTMIN": sigRTMin, "RTMAX": sigRTMax,
	}
	for k := 1; k <= 15; k++ {
		m["RTMIN+"+strconv.Itoa(k)] = sigRTMin + k
	}
	for k := 1; k <= 14; k++ {
		m["RTMAX-"+strconv.Itoa(k)] = sigRTMax - k
	}
	return m
}()

// ParseSignal converts a Docker signal argument to a Linux signal number, as
// dockerd's signal.ParseSignal does: a number ("9"), or a name from
// dockerd's table with or without the SIG prefix in any case ("KILL",
// "sigterm", "IOT", "RTMIN+3"). Numbers must be 1..64, the signals a guest
// kernel has. InvalidArgument "Invalid signal: <s>" otherwise.
func ParseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > sigRTMax {
			return 0, httputils.InvalidArgument("Invalid signal: %s", s)
		}
		return n, nil
	}
	if n, ok := signalNames[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; ok {
		return n, nil
	}
	return 0, httputils.InvalidArgument("Invalid signal: %s", s)
}
