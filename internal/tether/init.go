package tether

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// runInit is `docker run --init` inside the container: the spawn helper
// stays PID 1 of the container's PID namespace, runs the program as its
// child in its own process group (the terminal's foreground group with a
// TTY), forwards every signal it receives to that group, reaps every
// zombie re-parented to it, and exits with the program's exit code (128+N
// when signal N killed it), as tini does. It never returns.
func runInit(spec spawnSpec) {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	attr := &os.ProcAttr{Dir: spec.Dir, Env: spec.Env, Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{Setpgid: true, Foreground: spec.Tty, Ctty: 0}}
	child, err := os.StartProcess(spec.Path, spec.Args, attr)
	if err != nil {
		code := 126
		if os.IsNotExist(err) {
			code = 127
		}
		f := os.NewFile(statusFD, "status")
		fmt.Fprintf(f, `{"message":%q,"exit_code":%d}`, fmt.Sprintf("exec: %q: %v", spec.Args[0], err), code)
		os.Exit(code)
	}
	// The program started: close the status pipe so tether reads EOF.
	_ = unix.Close(statusFD)
	pid := child.Pid
	for sig := range sigs {
		switch sig {
		case unix.SIGCHLD:
		case unix.SIGURG: // the Go runtime's own preemption signal
			continue
		default:
			_ = unix.Kill(-pid, sig.(syscall.Signal))
			continue
		}
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if got <= 0 || err != nil {
				break
			}
			if got == pid {
				os.Exit(exitCode(ws))
			}
		}
	}
}
