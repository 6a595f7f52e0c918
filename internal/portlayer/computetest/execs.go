package computetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// ExecTarget is the port layer under the exec contract: containers to
// run execs in (and pause), the execs, and the removal of their records.
type ExecTarget interface {
	portlayer.Compute
	portlayer.Pauser
	portlayer.Execs
	portlayer.ExecForgetter
}

// RunExecs runs the exec contract (portlayer.Execs and
// portlayer.ExecForgetter) on a fresh target from newTarget for each
// case; image is an image ID its containers can use. The execs run the
// fake guest's programs (echo, printerr, exit, cat, sleep).
func RunExecs(t *testing.T, image string, newTarget func(t *testing.T) ExecTarget) {
	cases := []struct {
		name string
		fn   func(t *testing.T, c ExecTarget, image string)
	}{
		{"RunOutputExitCode", execRun},
		{"WhileRunning", execWhileRunning},
		{"Detached", execDetached},
		{"Timeout", execTimeout},
		{"StartFailed", execStartFailed},
		{"ContainerStates", execContainerStates},
		{"Missing", execMissing},
		{"Forget", execForget},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newTarget(t), image) })
	}
}

// wantField checks the request field and value a typed error names
// (Error.Field, Error.Value).
func wantField(t *testing.T, what string, err error, field, value string) {
	t.Helper()
	if pe := portlayer.AsError(err); pe == nil || pe.Field != field || pe.Value != value {
		t.Errorf("%s: err = %v (%+v); want field %q value %q", what, err, pe, field, value)
	}
}

// wantOp checks the operation a typed error names (Error.Op).
func wantOp(t *testing.T, what string, err error, op string) {
	t.Helper()
	if pe := portlayer.AsError(err); pe == nil || pe.Op != op {
		t.Errorf("%s: err = %v (%+v); want op %q", what, err, pe, op)
	}
}

// startSleeper creates and starts a container named name that sleeps a
// minute.
func startSleeper(t *testing.T, c portlayer.Compute, image, name string) portlayer.Container {
	t.Helper()
	ctr, err := c.Create(t.Context(), portlayer.ContainerSpec{Name: name, Image: image, Args: []string{"sleep", "60s"}})
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	if err := c.Start(t.Context(), ctr.ID); err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	return ctr
}

// createExec records an exec in container ref and returns its ID.
func createExec(t *testing.T, c portlayer.Execs, ref string, spec portlayer.ExecSpec) string {
	t.Helper()
	id, err := c.CreateExec(t.Context(), ref, spec)
	if err != nil {
		t.Fatalf("CreateExec(%s, %v): %v", ref, spec.Args, err)
	}
	return id
}

// exitCode is an exec's recorded exit code, -1 for none.
func exitCode(info portlayer.ExecInfo) int {
	if info.ExitCode == nil {
		return -1
	}
	return *info.ExitCode
}

// waitKilled kills container ref with SIGKILL and waits for its exit.
func waitKilled(t *testing.T, c portlayer.Compute, ref string) {
	t.Helper()
	ch, err := c.Wait(t.Context(), ref, portlayer.WaitNotRunning)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(t.Context(), ref, 9); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not exit after SIGKILL", ref)
	}
}

// execRun: an exec's record before and after its run, its output on the
// stream it was written to, its exit code, and a second start refused.
func execRun(t *testing.T, c ExecTarget, image string) {
	ctx := t.Context()
	ctr := startSleeper(t, c, image, "ex")
	spec := portlayer.ExecSpec{Args: []string{"echo", "to", "out", ";", "printerr", "to", "err", ";", "exit", "3"},
		Env: []string{"K=V"}, AttachStdout: true, AttachStderr: true}
	id := createExec(t, c, "ex", spec)
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("exec ID %q, want 64 hex digits", id)
	}
	info, err := c.InspectExec(ctx, id)
	if err != nil || info.ID != id || info.ContainerID != ctr.ID || info.Running || info.ExitCode != nil ||
		len(info.Spec.Args) != len(spec.Args) || info.Spec.Args[0] != "echo" || len(info.Spec.Env) != 1 || info.Spec.Env[0] != "K=V" ||
		!info.Spec.AttachStdout || !info.Spec.AttachStderr || info.Spec.AttachStdin {
		t.Errorf("InspectExec before the start = %+v, %v", info, err)
	}
	var out, errOut bytes.Buffer
	if err := c.StartExec(ctx, id, portlayer.ExecStartOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		t.Fatalf("StartExec: %v", err)
	}
	if out.String() != "to out\n" || errOut.String() != "to err\n" {
		t.Errorf("exec output: stdout %q stderr %q; want \"to out\\n\" and \"to err\\n\"", out.String(), errOut.String())
	}
	info, err = c.InspectExec(ctx, id)
	if err != nil || info.Running || exitCode(info) != 3 {
		t.Errorf("InspectExec after the exit = %+v (exit code %d), %v; want exit code 3", info, exitCode(info), err)
	}
	err = c.StartExec(ctx, id, portlayer.ExecStartOptions{})
	wantError(t, "StartExec of an exec that ran", err, errdefs.IsConflict, portlayer.KindExec, id, portlayer.ReasonAlreadyRan)
	err = c.ResizeExec(ctx, id, 30, 100)
	wantError(t, "ResizeExec of an exec that ended", err, errdefs.IsConflict, portlayer.KindExec, id, portlayer.ReasonNotRunning)
	// The container runs on: its main process is not the exec.
	if got, err := c.Inspect(ctx, ctr.ID); err != nil || got.State.Status != portlayer.StatusRunning {
		t.Errorf("the container after its exec: %+v, %v", got.State, err)
	}
}

// execWhileRunning: a running exec is seen running, cannot start again,
// takes a resize and reads its stdin until the caller's EOF.
func execWhileRunning(t *testing.T, c ExecTarget, image string) {
	ctx := t.Context()
	startSleeper(t, c, image, "er")
	id := createExec(t, c, "er", portlayer.ExecSpec{Args: []string{"cat"}, AttachStdin: true, AttachStdout: true})
	err := c.ResizeExec(ctx, id, 30, 100)
	wantError(t, "ResizeExec before the start", err, errdefs.IsConflict, portlayer.KindExec, id, portlayer.ReasonNotRunning)
	stdin, feed := io.Pipe()
	defer feed.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- c.StartExec(ctx, id, portlayer.ExecStartOptions{Stdin: stdin, Stdout: &out}) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.InspectExec(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.Running {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("StartExec returned before the exec was seen running: %v (%+v)", err, info)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exec is not running after 20 s: %+v", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	err = c.StartExec(ctx, id, portlayer.ExecStartOptions{})
	wantError(t, "StartExec of a running exec", err, errdefs.IsConflict, portlayer.KindExec, id, portlayer.ReasonRunning)
	if err := c.ResizeExec(ctx, id, 30, 100); err != nil {
		t.Errorf("ResizeExec of a running exec: %v", err)
	}
	if _, err := io.WriteString(feed, "ping\n"); err != nil {
		t.Fatal(err)
	}
	_ = feed.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("StartExec: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the exec did not end at its stdin's EOF")
	}
	if out.String() != "ping\n" {
		t.Errorf("cat's output %q, want \"ping\\n\"", out.String())
	}
	if info, err := c.InspectExec(ctx, id); err != nil || info.Running || exitCode(info) != 0 {
		t.Errorf("InspectExec after the EOF = %+v, %v; want exit code 0", info, err)
	}
}

// waitExecEnd polls exec id's record until it has an exit code.
func waitExecEnd(t *testing.T, c portlayer.Execs, id string) portlayer.ExecInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.InspectExec(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if info.ExitCode != nil {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("exec %s has no exit code after 20 s: %+v", id, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// execDetached: a detached start returns once the process runs; it ends
// on its own, its output dropped.
func execDetached(t *testing.T, c ExecTarget, image string) {
	ctx := t.Context()
	startSleeper(t, c, image, "ed")
	id := createExec(t, c, "ed", portlayer.ExecSpec{Args: []string{"echo", "dropped", ";", "sleep", "1s", ";", "exit", "4"}, AttachStdout: true})
	var out bytes.Buffer
	if err := c.StartExec(ctx, id, portlayer.ExecStartOptions{Stdout: &out, Detach: true}); err != nil {
		t.Fatalf("StartExec detached: %v", err)
	}
	if info, err := c.InspectExec(ctx, id); err != nil || !info.Running || info.ExitCode != nil {
		t.Errorf("InspectExec right after a detached start = %+v, %v; want running", info, err)
	}
	if info := waitExecEnd(t, c, id); info.Running || exitCode(info) != 4 {
		t.Errorf("the detached exec ended as %+v; want exit code 4", info)
	}
	if out.Len() != 0 {
		t.Errorf("a detached exec wrote %q to the caller", out.String())
	}
	err := c.StartExec(ctx, id, portlayer.ExecStartOptions{Detach: true})
	wantError(t, "StartExec detached of an exec that ran", err, errdefs.IsConflict, portlayer.KindExec, id, portlayer.ReasonAlreadyRan)
}

// execTimeout: a run past its timeout is killed; the start returns an
// error matching context.DeadlineExceeded after the output written
// before.
func execTimeout(t *testing.T, c ExecTarget, image string) {
	ctx := t.Context()
	startSleeper(t, c, image, "et")
	id := createExec(t, c, "et", portlayer.ExecSpec{Args: []string{"echo", "before", ";", "sleep", "60s"}, AttachStdout: true})
	var out bytes.Buffer
	start := time.Now()
	err := c.StartExec(ctx, id, portlayer.ExecStartOptions{Stdout: &out, Timeout: 300 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) || portlayer.ClassOf(err) != portlayer.ClassUnavailable {
		t.Errorf("StartExec past its timeout: %v; want context.DeadlineExceeded, class unavailable", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 20*time.Second {
		t.Errorf("StartExec with a 300 ms timeout returned after %v", d)
	}
	if out.String() != "before\n" {
		t.Errorf("output before the timeout %q, want \"before\\n\"", out.String())
	}
	if info := waitExecEnd(t, c, id); info.Running || exitCode(info) != 137 {
		t.Errorf("the exec cut off by its timeout ended as %+v; want exit code 137 (SIGKILL)", info)
	}
	// A timeout the run keeps within changes nothing.
	quick := createExec(t, c, "et", portlayer.ExecSpec{Args: []string{"exit", "5"}})
	if err := c.StartExec(ctx, quick, portlayer.ExecStartOptions{Timeout: 20 * time.Second}); err != nil {
		t.Errorf("StartExec within its timeout: %v", err)
	}
	if info, err := c.InspectExec(ctx, quick); err != nil || exitCode(info) != 5 {
		t.Errorf("the exec within its timeout: %+v, %v; want exit code 5", info, err)
	}
}

// execStartFailed: a program the guest cannot start fails the start
// (InvalidArgument, the guest's words) and records exit code 127.
func execStartFailed(t *testing.T, c ExecTarget, image string) {
	ctx := t.Context()
	startSleeper(t, c, image, "ef")
	id := createExec(t, c, "ef", portlayer.ExecSpec{Args: []string{"nosuchprogram"}, AttachStdout: true})
	err := c.StartExec(ctx, id, portlayer.ExecStartOptions{Stdout: io.Discard})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(errString(err), "executable file not found") {
		t.Errorf("StartExec of a missing program: %v; want invalid_argument with the guest's text", err)
	}
	if pe, code, ok := portlayer.StartFailure(err); !ok || code != 127 || pe.Kind != portlayer.KindExec || pe.ID != id || !strings.Contains(pe.Message, "executable file not found") {
		t.Errorf("StartExec of a missing program: %v (%+v); want a start_failed error of exec %s, exit code 127, the guest's text", err, pe, id)
	}
	if info, err := c.InspectExec(ctx, id); err != nil || info.Running || exitCode(info) != 127 {
		t.Errorf("InspectExec after the failed start = %+v, %v; want exit code 127", info, err)
	}
}

// execContainerStates: execs and TTY resizes refused by their
// container's state (created, paused, exited), a bad working directory,
// and an exec created in a running container but started after it
// stopped.
func execContainerStates(t *testing.T, c ExecTarget, image string) {
	ctx := t.Context()
	echo := portlayer.ExecSpec{Args: []string{"echo", "hi"}, AttachStdout: true}
	a := create(t, c, portlayer.ContainerSpec{Name: "cs", Image: image, Args: []string{"sleep", "60s"}})
	_, err := c.CreateExec(ctx, "cs", echo)
	wantError(t, "CreateExec in a created container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonNotRunning)
	wantOp(t, "CreateExec in a created container", err, "exec")
	err = c.Resize(ctx, "cs", 30, 100)
	wantError(t, "Resize of a created container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonNotRunning)
	_, err = c.CreateExec(ctx, "nosuch", echo)
	wantError(t, "CreateExec(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")
	err = c.Resize(ctx, "nosuch", 30, 100)
	wantError(t, "Resize(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")

	if err := c.Start(ctx, "cs"); err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(ctx, "cs", 30, 100); err != nil {
		t.Errorf("Resize of a running container: %v", err)
	}
	_, err = c.CreateExec(ctx, "cs", portlayer.ExecSpec{Args: []string{"echo"}, WorkingDir: "tmp"})
	wantError(t, "CreateExec with a relative working directory", err, errdefs.IsInvalidArgument, portlayer.KindExec, "", portlayer.ReasonNotAbsolute)
	wantField(t, "CreateExec with a relative working directory", err, "WorkingDir", "tmp")
	late := createExec(t, c, "cs", echo)
	if err := c.Pause(ctx, "cs"); err != nil && !errdefs.IsNotImplemented(err) {
		t.Fatal(err)
	} else if err == nil {
		_, err = c.CreateExec(ctx, "cs", echo)
		wantError(t, "CreateExec in a paused container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonPaused)
		wantOp(t, "CreateExec in a paused container", err, "exec")
		if err := c.Unpause(ctx, "cs"); err != nil {
			t.Fatal(err)
		}
	}
	waitKilled(t, c, "cs")
	_, err = c.CreateExec(ctx, "cs", echo)
	wantError(t, "CreateExec in an exited container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonNotRunning)
	err = c.StartExec(ctx, late, portlayer.ExecStartOptions{Stdout: io.Discard})
	wantError(t, "StartExec after the container exited", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonNotRunning)
	wantOp(t, "StartExec after the container exited", err, "exec")
	if info, err := c.InspectExec(ctx, late); err != nil || info.Running || exitCode(info) != 126 {
		t.Errorf("InspectExec of the exec refused a start = %+v, %v; want exit code 126", info, err)
	}
}

// execMissing: every exec operation on an unknown ID is NotFound with
// the ID asked for.
func execMissing(t *testing.T, c ExecTarget, _ string) {
	ctx := t.Context()
	_, err := c.InspectExec(ctx, "nosuch")
	wantError(t, "InspectExec(nosuch)", err, errdefs.IsNotFound, portlayer.KindExec, "nosuch", "")
	err = c.StartExec(ctx, "nosuch", portlayer.ExecStartOptions{})
	wantError(t, "StartExec(nosuch)", err, errdefs.IsNotFound, portlayer.KindExec, "nosuch", "")
	err = c.ResizeExec(ctx, "nosuch", 30, 100)
	wantError(t, "ResizeExec(nosuch)", err, errdefs.IsNotFound, portlayer.KindExec, "nosuch", "")
	err = c.ForgetExec(ctx, "nosuch")
	wantError(t, "ForgetExec(nosuch)", err, errdefs.IsNotFound, portlayer.KindExec, "nosuch", "")
}

// execForget: a forgotten exec's record is gone, and so are the records
// of a removed container's execs.
func execForget(t *testing.T, c ExecTarget, image string) {
	ctx := t.Context()
	startSleeper(t, c, image, "fg")
	id := createExec(t, c, "fg", portlayer.ExecSpec{Args: []string{"exit", "0"}})
	if err := c.StartExec(ctx, id, portlayer.ExecStartOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.ForgetExec(ctx, id); err != nil {
		t.Fatalf("ForgetExec: %v", err)
	}
	_, err := c.InspectExec(ctx, id)
	wantError(t, "InspectExec of a forgotten exec", err, errdefs.IsNotFound, portlayer.KindExec, id, "")
	err = c.ForgetExec(ctx, id)
	wantError(t, "ForgetExec twice", err, errdefs.IsNotFound, portlayer.KindExec, id, "")
	kept := createExec(t, c, "fg", portlayer.ExecSpec{Args: []string{"echo"}})
	if _, err := c.InspectExec(ctx, kept); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, "fg", true); err != nil {
		t.Fatal(err)
	}
	_, err = c.InspectExec(ctx, kept)
	wantError(t, "InspectExec after its container's removal", err, errdefs.IsNotFound, portlayer.KindExec, kept, "")
}
