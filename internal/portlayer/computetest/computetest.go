// Package computetest is the contract suite of the port layer's compute
// interfaces (portlayer.Compute and portlayer.Pauser): the same cases run
// against the in-process implementation and against the network API's
// client talking to a real server, and must give the same results,
// typed errors included. Containers run on the fake hypervisor (package
// hvfake), whose guest knows "sleep DURATION", "echo …" and "exit N".
package computetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// Target is the port layer under test.
type Target interface {
	portlayer.Compute
	portlayer.Pauser
}

// Run runs the contract on a fresh target from newTarget for each case;
// image is an image ID its containers can use.
func Run(t *testing.T, image string, newTarget func(t *testing.T) Target) {
	cases := []struct {
		name string
		fn   func(t *testing.T, c Target, image string)
	}{
		{"CreateInspectList", createInspectList},
		{"NameInUse", nameInUse},
		{"Lifecycle", lifecycle},
		{"PauseStates", pauseStates},
		{"RenameRemove", renameRemove},
		{"WaitMissing", waitMissing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newTarget(t), image) })
	}
}

// wantError checks err's class and typed fields.
func wantError(t *testing.T, what string, err error, is func(error) bool, kind, id, reason string) {
	t.Helper()
	pe := portlayer.AsError(err)
	if err == nil || !is(err) || pe == nil || pe.Kind != kind || (id != "" && pe.ID != id) || pe.Reason != reason {
		t.Errorf("%s: err = %v (%+v); want kind %q id %q reason %q", what, err, pe, kind, id, reason)
	}
}

func create(t *testing.T, c Target, spec portlayer.ContainerSpec) portlayer.Container {
	t.Helper()
	ctr, err := c.Create(t.Context(), spec)
	if err != nil {
		t.Fatalf("Create(%s): %v", spec.Name, err)
	}
	return ctr
}

func createInspectList(t *testing.T, c Target, image string) {
	ctx := t.Context()
	a := create(t, c, portlayer.ContainerSpec{Name: "ca", Image: image, Args: []string{"sleep", "60s"}, Env: []string{"K=V"}})
	if len(a.ID) != 64 || a.State.Status != portlayer.StatusCreated || a.Spec.Name != "ca" || a.Spec.Env[0] != "K=V" {
		t.Errorf("created %+v", a)
	}
	b := create(t, c, portlayer.ContainerSpec{Image: image, Args: []string{"echo", "hi"}})
	if b.Spec.Name != b.ID[:12] {
		t.Errorf("an unnamed container is named %q, want its short ID %s", b.Spec.Name, b.ID[:12])
	}
	for _, ref := range []string{"ca", "/ca", a.ID, a.ID[:10]} {
		got, err := c.Inspect(ctx, ref)
		if err != nil || got.ID != a.ID || got.Spec.Args[1] != "60s" {
			t.Errorf("Inspect(%q) = %s, %v", ref, got.ID, err)
		}
	}
	_, err := c.Inspect(ctx, "nosuch")
	wantError(t, "Inspect(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")
	all, err := c.List(ctx)
	if err != nil || len(all) != 2 || all[0].ID != b.ID || all[1].ID != a.ID {
		t.Errorf("List = %d containers, %v; want b then a", len(all), err)
	}
}

func nameInUse(t *testing.T, c Target, image string) {
	a := create(t, c, portlayer.ContainerSpec{Name: "web", Image: image, Args: []string{"sleep"}})
	_, err := c.Create(t.Context(), portlayer.ContainerSpec{Name: "web", Image: image, Args: []string{"sleep"}})
	wantError(t, "Create(web) twice", err, errdefs.IsAlreadyExists, portlayer.KindContainer, a.ID, portlayer.ReasonNameInUse)
	if pe := portlayer.AsError(err); pe != nil && pe.Name != "web" {
		t.Errorf("name_in_use names %q, want web", pe.Name)
	}
}

func lifecycle(t *testing.T, c Target, image string) {
	ctx := t.Context()
	a := create(t, c, portlayer.ContainerSpec{Name: "life", Image: image, Args: []string{"sleep", "60s"}})
	if err := c.Start(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Inspect(ctx, "life"); got.State.Status != portlayer.StatusRunning || got.State.StartedAt.IsZero() {
		t.Errorf("after Start: %+v", got.State)
	}
	// A start with nothing to do says so, from the state as of the start.
	err := c.Start(ctx, "life")
	wantError(t, "Start of a running container", err, errdefs.IsNotModified, portlayer.KindContainer, a.ID, portlayer.ReasonRunning)
	if pe := portlayer.AsError(err); pe != nil && (pe.Class != portlayer.ClassNotModified || pe.Op != "start") {
		t.Errorf("Start of a running container: class %q op %q, want not_modified start", pe.Class, pe.Op)
	}
	ch, err := c.Wait(ctx, a.ID, portlayer.WaitNotRunning)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(ctx, "life", 9); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-ch:
		if res.ExitCode != 137 || res.Error != "" {
			t.Errorf("Wait after SIGKILL = %+v, want exit 137", res)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not report the kill")
	}
	err = c.Kill(ctx, "life", 15)
	wantError(t, "Kill of an exited container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonNotRunning)
	// Stop with a zero timeout: the stop signal, then the VM ends.
	if err := c.Start(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	zero := time.Duration(0)
	if err := c.Stop(ctx, "life", &zero); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Inspect(ctx, "life"); got.State.Status != portlayer.StatusExited {
		t.Errorf("after Stop: %+v", got.State)
	}
	err = c.Stop(ctx, "life", nil)
	wantError(t, "Stop of a stopped container", err, errdefs.IsNotModified, portlayer.KindContainer, a.ID, portlayer.ReasonNotRunning)
	if pe := portlayer.AsError(err); pe != nil && (pe.Class != portlayer.ClassNotModified || pe.Op != "stop") {
		t.Errorf("Stop of a stopped container: class %q op %q, want not_modified stop", pe.Class, pe.Op)
	}
	// Never started: nothing to stop either.
	b := create(t, c, portlayer.ContainerSpec{Name: "never", Image: image, Args: []string{"sleep", "60s"}})
	err = c.Stop(ctx, "never", &zero)
	wantError(t, "Stop of a created container", err, errdefs.IsNotModified, portlayer.KindContainer, b.ID, portlayer.ReasonNotRunning)
}

func pauseStates(t *testing.T, c Target, image string) {
	ctx := t.Context()
	a := create(t, c, portlayer.ContainerSpec{Name: "pz", Image: image, Args: []string{"sleep", "60s"}})
	err := c.Pause(ctx, "pz")
	wantError(t, "Pause of a created container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonNotRunning)
	if err := c.Start(ctx, "pz"); err != nil {
		t.Fatal(err)
	}
	err = c.Unpause(ctx, "pz")
	wantError(t, "Unpause of a running container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonNotPaused)
	if err := c.Pause(ctx, "pz"); err != nil {
		if errdefs.IsNotImplemented(err) {
			t.Skip("this hypervisor cannot pause")
		}
		t.Fatal(err)
	}
	err = c.Pause(ctx, "pz")
	wantError(t, "Pause twice", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonPaused)
	if pe := portlayer.AsError(err); pe != nil && pe.Op != "pause" {
		t.Errorf("Pause twice: op %q, want pause", pe.Op)
	}
	err = c.Kill(ctx, "pz", 15)
	wantError(t, "Kill -TERM of a paused container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonPaused)
	if err := c.Unpause(ctx, "pz"); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, "pz", true); err != nil {
		t.Fatal(err)
	}
}

func renameRemove(t *testing.T, c Target, image string) {
	ctx := t.Context()
	a := create(t, c, portlayer.ContainerSpec{Name: "old", Image: image, Args: []string{"sleep", "60s"}})
	create(t, c, portlayer.ContainerSpec{Name: "other", Image: image, Args: []string{"sleep"}})
	if err := c.Rename(ctx, "old", "new"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspect(ctx, "old"); !errdefs.IsNotFound(err) {
		t.Errorf("Inspect(old) after the rename: %v", err)
	}
	err := c.Rename(ctx, "new", "other")
	wantError(t, "Rename onto a taken name", err, errdefs.IsAlreadyExists, portlayer.KindContainer, "", portlayer.ReasonNameInUse)
	if err := c.Start(ctx, "new"); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, "new", false); !errdefs.IsConflict(err) {
		t.Errorf("Remove of a running container without force: %v", err)
	}
	if err := c.Remove(ctx, "new", true); err != nil {
		t.Fatal(err)
	}
	_, err = c.Inspect(ctx, a.ID)
	wantError(t, "Inspect after Remove", err, errdefs.IsNotFound, portlayer.KindContainer, a.ID, "")
	err = c.Remove(ctx, "nosuch", true)
	wantError(t, "Remove(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")
}

func waitMissing(t *testing.T, c Target, _ string) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := c.Wait(ctx, "nosuch", portlayer.WaitNotRunning)
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(errString(err), "deadline") {
		t.Fatalf("Wait(nosuch) blocked: %v", err)
	}
	wantError(t, "Wait(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
