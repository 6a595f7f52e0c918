package portlayer_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// TestErrorClass: a typed error matches its class's errdefs sentinel
// through wrapping, errdefs.Resolve finds the class (not the cause's),
// and the JSON form carries the fields, not the cause.
func TestErrorClass(t *testing.T) {
	cause := fmt.Errorf("guest gone: %w", errdefs.ErrUnavailable)
	err := fmt.Errorf("op: %w", &portlayer.Error{Class: portlayer.ClassConflict, Kind: portlayer.KindContainer, ID: "abc", Reason: portlayer.ReasonPaused, Message: "container abc is paused", Err: cause})
	if !errdefs.IsConflict(err) || !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("%v is not a Conflict", err)
	}
	if got := errdefs.Resolve(err); got != errdefs.ErrConflict {
		t.Errorf("Resolve = %v, want conflict", got)
	}
	if !errors.Is(err, cause) {
		t.Error("the cause is not wrapped")
	}
	if portlayer.ClassOf(err) != portlayer.ClassConflict || portlayer.ClassOf(cause) != portlayer.ClassUnavailable || portlayer.ClassOf(errors.New("x")) != portlayer.ClassInternal {
		t.Error("ClassOf")
	}
	b, _ := json.Marshal(portlayer.AsError(err))
	if string(b) != `{"class":"conflict","kind":"container","id":"abc","reason":"paused","message":"container abc is paused"}` {
		t.Errorf("JSON = %s", b)
	}
	for _, tt := range []struct {
		err error
		is  func(error) bool
	}{
		{portlayer.NoSuchContainer("x"), errdefs.IsNotFound},
		{portlayer.NoSuchExec("x"), errdefs.IsNotFound},
		{portlayer.NoSuchImage("x:latest"), errdefs.IsNotFound},
		{portlayer.ContainerState("kill", "x", portlayer.ReasonNotRunning), errdefs.IsConflict},
		{portlayer.ExecState("x", portlayer.ReasonRunning), errdefs.IsConflict},
		{portlayer.Unchanged("stop", "x", portlayer.ReasonNotRunning), errdefs.IsNotModified},
		{portlayer.Unchanged("start", "x", portlayer.ReasonRunning), errdefs.IsNotModified},
	} {
		if !tt.is(tt.err) || errdefs.Resolve(tt.err) == errdefs.ErrUnknown {
			t.Errorf("%v: wrong class", tt.err)
		}
	}
	if c := portlayer.ClassOf(fmt.Errorf("x: %w", errdefs.ErrNotModified)); c != portlayer.ClassNotModified {
		t.Errorf("ClassOf(NotModified) = %s", c)
	}
}

// TestErrorf: the message is the formatted text; a trailing ": %w" makes
// the last argument the cause, so Error() reads as fmt.Errorf's would,
// and the error matches its class and its cause.
func TestErrorf(t *testing.T) {
	cause := errors.New("not absolute")
	e := portlayer.Errorf(portlayer.ClassInvalidArgument, "bind mount root %q: %w", "rel", cause).WithOp("create")
	if e.Message != `bind mount root "rel"` || e.Err != cause || e.Op != "create" || e.Error() != `bind mount root "rel": not absolute` {
		t.Errorf("Errorf = %+v, Error() %q", e, e.Error())
	}
	if !errors.Is(e, errdefs.ErrInvalidArgument) || !errors.Is(e, cause) || portlayer.ClassOf(fmt.Errorf("x: %w", e)) != portlayer.ClassInvalidArgument {
		t.Errorf("Errorf %v: class or cause lost", e)
	}
	e = portlayer.Errorf(portlayer.ClassUnavailable, "%d of %d: %w here", 1, 2, cause)
	if e.Message != "1 of 2: not absolute here" || e.Err != nil {
		t.Errorf("Errorf with an inner %%w = %+v", e)
	}
	if e := portlayer.Errorf(portlayer.ClassConflict, "plain"); e.Error() != "plain" || !errdefs.IsConflict(e) {
		t.Errorf("Errorf plain = %+v", e)
	}
}
