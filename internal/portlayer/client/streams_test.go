package client_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/client"
)

// TestStreamsOverAPI: exec and attach through upgraded streams: output
// on its stream, stdin to the process with its EOF, exit codes, typed
// errors before the upgrade.
func TestStreamsOverAPI(t *testing.T) {
	svc := newCompute(t)
	c, err := client.New("unix://"+serve(t, api.Backend{Compute: svc, Interaction: svc, Execs: svc.Execs()}), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ctr, err := c.Create(ctx, portlayer.ContainerSpec{Name: "streams", Image: testImage, Args: []string{"sleep", "60s"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateExec(ctx, "streams", portlayer.ExecSpec{Args: []string{"echo"}}); !errdefs.IsConflict(err) {
		t.Errorf("CreateExec in a created container: %v", err)
	}
	if err := c.Start(ctx, ctr.ID); err != nil {
		t.Fatal(err)
	}
	run := func(spec portlayer.ExecSpec, stdin string) (string, string, *int) {
		t.Helper()
		spec.AttachStdout, spec.AttachStderr = true, true
		id, err := c.CreateExec(ctx, "streams", spec)
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		opts := portlayer.ExecStartOptions{Stdout: &out, Stderr: &errb}
		if stdin != "" {
			opts.Stdin = strings.NewReader(stdin)
		}
		if err := c.StartExec(ctx, id, opts); err != nil {
			t.Fatalf("StartExec(%v): %v", spec.Args, err)
		}
		info, err := c.InspectExec(ctx, id)
		if err != nil || info.Running || info.ContainerID != ctr.ID {
			t.Errorf("InspectExec = %+v, %v", info, err)
		}
		return out.String(), errb.String(), info.ExitCode
	}
	if out, errOut, code := run(portlayer.ExecSpec{Args: []string{"echo", "to", "stdout"}}, ""); out != "to stdout\n" || errOut != "" || code == nil || *code != 0 {
		t.Errorf("exec echo: %q %q %v", out, errOut, code)
	}
	if _, errOut, _ := run(portlayer.ExecSpec{Args: []string{"printerr", "oops"}}, ""); errOut != "oops\n" {
		t.Errorf("exec printerr: stderr %q", errOut)
	}
	if out, _, _ := run(portlayer.ExecSpec{Args: []string{"cat"}, AttachStdin: true}, "piped in\n"); out != "piped in\n" {
		t.Errorf("exec cat with stdin: %q", out)
	}
	if _, _, code := run(portlayer.ExecSpec{Args: []string{"exit", "3"}}, ""); code == nil || *code != 3 {
		t.Errorf("exec exit 3: code %v", code)
	}
	if err := c.StartExec(ctx, "nosuch", portlayer.ExecStartOptions{}); !errdefs.IsNotFound(err) || portlayer.AsError(err).Kind != portlayer.KindExec {
		t.Errorf("StartExec(nosuch): %v", err)
	}
	if err := c.ResizeExec(ctx, "nosuch", 10, 10); !errdefs.IsNotFound(err) {
		t.Errorf("ResizeExec(nosuch): %v", err)
	}

	// Attach before the start: all the output arrives, stdin reaches the
	// process, and its EOF ends it.
	talk, err := c.Create(ctx, portlayer.ContainerSpec{Name: "talk", Image: testImage, Args: []string{"cat"}, OpenStdin: true, StdinOnce: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	att, err := c.Attach(ctx, talk.ID, portlayer.AttachOptions{Stdin: strings.NewReader("hello attach\n"), Stdout: &out, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, talk.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-att.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("the attach did not end; output so far %q", out.String())
	}
	if out.String() != "hello attach\n" {
		t.Errorf("attached output %q", out.String())
	}
	if _, err := c.Attach(ctx, "nosuch", portlayer.AttachOptions{Stream: true}); !errdefs.IsNotFound(err) {
		t.Errorf("Attach(nosuch): %v", err)
	}
}
