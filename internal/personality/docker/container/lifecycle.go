package container

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

var errNotModified = errdefs.ErrNotModified.WithMessage("not modified")

// postStart serves POST /containers/{id}/start: 204, or 304 if the
// container already runs (or waits for its restart), 409 for a paused one.
// The port layer decides both in one step with the start. A process that
// cannot be executed is a 400 whose text the CLI maps to exit status
// 127/126.
func (rt *Router) postStart(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	if r.ContentLength > 7 || r.ContentLength == -1 {
		return httputils.InvalidArgument("starting container with non-empty request body was deprecated since API v1.22 and removed in v1.24")
	}
	ctx := r.Context()
	name := vars["name"]
	// The inspect is for the --pid container: rule alone (the HostConfig
	// is the personality's, in an annotation); the start's own state
	// checks are the port layer's, in one step with the start.
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	if c.State.Status == portlayer.StatusCreated || c.State.Status == portlayer.StatusExited {
		// dockerd looks for the PID namespace's container only when it
		// builds the start's spec, after its own running check: a
		// container that runs already answers 304, whatever that one's
		// state.
		if err := rt.pidContainerRuns(ctx, c); err != nil {
			return err
		}
	}
	if err := rt.compute.Start(ctx, c.ID); err != nil {
		switch pe := portlayer.AsError(err); {
		case errdefs.IsNotModified(err):
			return errNotModified
		case errdefs.IsConflict(err) && pe != nil && pe.Reason == portlayer.ReasonPaused:
			return httputils.Classify(errdefs.ErrConflict, err, "cannot start a paused container, try unpause instead")
		}
		return rt.startErr(ctx, name, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// pidContainerRuns checks, as dockerd does when it builds the start's
// spec (daemon getPIDContainer), that the container whose PID namespace
// c's `--pid container:X` names runs: else 500 "failed to join PID
// namespace: container X is not running" (or "…: No such container: X"
// if it is gone). Each container has its own VM and kernel, so nothing
// is joined; the rule is kept so that scripts see dockerd's failure.
func (rt *Router) pidContainerRuns(ctx context.Context, c portlayer.Container) error {
	hc := &container.HostConfig{}
	if b, ok := c.Spec.Annotations[AnnotationHostConfig]; !ok || json.Unmarshal(b, hc) != nil {
		return nil
	}
	other := hc.PidMode.Container()
	if !hc.PidMode.IsContainer() || other == "" {
		return nil
	}
	oc, err := rt.compute.Inspect(ctx, other)
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("failed to join PID namespace: No such container: %s", other)
	case err != nil:
		return err
	case oc.State.Status != portlayer.StatusRunning && oc.State.Status != portlayer.StatusPaused:
		return fmt.Errorf("failed to join PID namespace: container %s is not running", other)
	}
	return nil
}

// stopTimeout parses ?t= (seconds; -1 waits forever); nil if absent.
func stopTimeout(r *http.Request) (*time.Duration, error) {
	s := r.Form.Get("t")
	if s == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, httputils.Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("invalid value for t: %q", s))
	}
	d := time.Duration(n) * time.Second
	return &d, nil
}

// postStop serves POST /containers/{id}/stop?t=&signal=: 204, 304 if the
// container is not running, as the port layer finds in one step with the
// stop (the inspect before it is for the stop signal and timeout only). A
// signal other than the container's StopSignal is sent with Kill, then
// the VM is killed after the timeout.
func (rt *Router) postStop(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	timeout, err := stopTimeout(r)
	if err != nil {
		return err
	}
	sig := 0
	if s := r.Form.Get("signal"); s != "" && httputils.VersionAtLeast(ctx, "1.42") {
		if sig, err = ParseSignal(s); err != nil {
			return err
		}
	}
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	if err := rt.stop(r, c, sig, timeout); err != nil {
		if errdefs.IsNotModified(err) {
			return errNotModified
		}
		return containerErr("stop", name, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// stop stops c with signal sig (0: its StopSignal) and timeout.
// NotModified if c does not run.
func (rt *Router) stop(r *http.Request, c portlayer.Container, sig int, timeout *time.Duration) error {
	ctx := r.Context()
	stopSig := c.Spec.StopSignal
	if stopSig == 0 {
		stopSig = 15
	}
	if sig == 0 || sig == stopSig {
		return rt.compute.Stop(ctx, c.ID, timeout)
	}
	// Custom signal: deliver it, wait up to the timeout, then kill.
	waitC, err := rt.compute.Wait(ctx, c.ID, portlayer.WaitNotRunning)
	if err != nil {
		return err
	}
	if err := rt.compute.Kill(ctx, c.ID, sig); err != nil {
		if pe := portlayer.AsError(err); pe != nil && pe.Class == portlayer.ClassConflict && pe.Reason == portlayer.ReasonNotRunning {
			// Not running as the kill found it: a stop with nothing to do.
			return portlayer.Unchanged("stop", c.ID, portlayer.ReasonNotRunning)
		}
		return err
	}
	d := 10 * time.Second
	if timeout != nil {
		d = *timeout
	} else if c.Spec.StopTimeout != nil {
		d = *c.Spec.StopTimeout
	}
	var tc <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-waitC:
		return nil
	case <-tc:
		zero := time.Duration(0)
		return rt.compute.Stop(ctx, c.ID, &zero)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// postRestart serves POST /containers/{id}/restart?t=&signal=: stop (if
// running or paused) then start; 204.
func (rt *Router) postRestart(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	timeout, err := stopTimeout(r)
	if err != nil {
		return err
	}
	sig := 0
	if s := r.Form.Get("signal"); s != "" {
		if sig, err = ParseSignal(s); err != nil {
			return err
		}
	}
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	if rs, ok := rt.compute.(portlayer.Restarter); ok {
		// One operation in the port layer: an --rm container survives
		// its restart, as on dockerd.
		if err := rs.Restart(ctx, c.ID, sig, timeout); err != nil {
			return rt.startErr(ctx, name, err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	// As dockerd, a paused container counts as running: it is stopped
	// (the port layer resumes it for the signal), then started again.
	// What does not run is just started: the stop's NotModified, and the
	// start's (started meanwhile by another), are no failures.
	if c.State.Status == portlayer.StatusPaused {
		sig = 0 // a paused VM takes no signal; Stop resumes it first
	}
	if err := rt.stop(r, c, sig, timeout); err != nil && !errdefs.IsNotModified(err) {
		return containerErr("restart", name, err)
	}
	if err := rt.compute.Start(ctx, c.ID); err != nil && !errdefs.IsNotModified(err) {
		return rt.startErr(ctx, name, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// postKill serves POST /containers/{id}/kill?signal= (default SIGKILL):
// 204; 409 "cannot kill container: <name>: container <id> is not running".
func (rt *Router) postKill(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	sig := 9
	if s := r.Form.Get("signal"); s != "" {
		var err error
		if sig, err = ParseSignal(s); err != nil {
			return err
		}
	}
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	notRunning := func(cause error) error {
		return httputils.Classify(errdefs.ErrConflict, cause, fmt.Sprintf("cannot kill container: %s: container %s is not running", name, c.ID))
	}
	// The port layer checks the state as one step with the kill.
	if err := rt.compute.Kill(ctx, c.ID, sig); err != nil {
		if errdefs.IsConflict(err) {
			if pe := portlayer.AsError(err); pe != nil && pe.Reason == portlayer.ReasonPaused {
				return httputils.Classify(errdefs.ErrConflict, err, fmt.Sprintf("cannot kill container: %s: container %s is paused. Unpause the container before stopping or killing", name, c.ID))
			}
			return notRunning(err)
		}
		return containerErr("kill", name, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// postWait serves POST /containers/{id}/wait?condition= (not-running
// default, next-exit, removed). Like dockerd (API >= 1.30) it writes the 200
// header at once and the body {"StatusCode":N} when the condition is met.
func (rt *Router) postWait(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	cond := portlayer.WaitNotRunning
	if v := r.Form.Get("condition"); v != "" {
		switch container.WaitCondition(v) {
		case container.WaitConditionNotRunning:
		case container.WaitConditionNextExit:
			cond = portlayer.WaitNextExit
		case container.WaitConditionRemoved:
			cond = portlayer.WaitRemoved
		default:
			return httputils.InvalidArgument("invalid condition: %q", v)
		}
	}
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	waitC, err := rt.compute.Wait(ctx, c.ID, cond)
	if err != nil {
		return containerErr("wait", name, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	httputils.Flush(w)
	var resp container.WaitResponse
	select {
	case res, ok := <-waitC:
		if !ok {
			resp.Error = &container.WaitExitError{Message: "wait ended without a result"}
			break
		}
		resp.StatusCode = int64(res.ExitCode)
		if res.Error != "" {
			resp.Error = &container.WaitExitError{Message: res.Error}
		}
	case <-ctx.Done():
		return nil // the client went away; nothing left to say
	}
	_ = json.NewEncoder(w).Encode(resp) // header sent: a write error means the client left
	return nil
}

// deleteContainer serves DELETE /containers/{id}?force=&v=: 204; 409
// "cannot remove container "<name>": container is running: stop the
// container before removing or force remove".
func (rt *Router) deleteContainer(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	force := httputils.BoolValue(r, "force")
	if httputils.BoolValue(r, "link") {
		return errdefs.ErrNotImplemented.WithMessage("container links are not supported by vch")
	}
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	// The port layer refuses a running, paused or restarting container
	// (unless forced) as one step with the removal.
	if err := rt.compute.Remove(ctx, c.ID, force); err != nil {
		if errdefs.IsConflict(err) {
			return httputils.Classify(errdefs.ErrConflict, err, fmt.Sprintf("cannot remove container %q: %s", name, httputils.PortLayerText(err)))
		}
		return containerErr("remove", name, err)
	}
	if httputils.BoolValue(r, "v") {
		if err := rt.removeAnonymousVolumes(ctx, c); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeAnonymousVolumes deletes a removed container's anonymous volumes
// (docker rm -v), as dockerd's removeMountPoints: named volumes stay, and
// a volume another container uses is skipped silently; other failures are
// reported together ("Error removing volumes: …").
func (rt *Router) removeAnonymousVolumes(ctx context.Context, c portlayer.Container) error {
	if rt.volumes == nil {
		return nil
	}
	var errs []string
	for _, m := range c.Spec.Mounts {
		if m.Type != portlayer.MountVolume || !m.Anonymous {
			continue
		}
		err := rt.volumes.RemoveVolume(ctx, m.Source, true)
		if err != nil && !errdefs.IsConflict(err) {
			errs = append(errs, httputils.PortLayerText(err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("Error removing volumes:\n%s", strings.Join(errs, "\n"))
	}
	return nil
}

// postRename serves POST /containers/{id}/rename?name=: 204; 400 for an
// invalid or unchanged name, 409 if the name is taken.
func (rt *Router) postRename(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	name := vars["name"]
	newName := r.Form.Get("name")
	if newName == "" || strings.Trim(newName, "/") == "" {
		return httputils.InvalidArgument("Neither old nor new names may be empty")
	}
	if err := ValidateName(newName); err != nil {
		return err
	}
	newName = strings.TrimPrefix(newName, "/")
	c, err := rt.inspect(ctx, name)
	if err != nil {
		return err
	}
	if c.Spec.Name == newName {
		return httputils.InvalidArgument("Renaming a container with the same name as its current name")
	}
	if err := rt.compute.Rename(ctx, c.ID, newName); err != nil {
		if errdefs.IsAlreadyExists(err) {
			cerr := rt.nameConflict(r, newName, err)
			return httputils.Classify(errdefs.ErrConflict, err, "Error when allocating new name: "+cerr.Error())
		}
		return containerErr("rename", name, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// postResize serves POST /containers/{id}/resize?h=&w=. The port layer has
// no resize call yet, so this checks the container exists and answers 200
// without resizing (the CLI retries failed resizes for seconds).
func (rt *Router) postResize(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	if _, _, err := httputils.ResizeSize(r); err != nil {
		return err
	}
	if _, err := rt.inspect(r.Context(), vars["name"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
