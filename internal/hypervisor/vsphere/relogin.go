package vsphere

import (
	"context"
	"reflect"
	"sync"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// relogin is the driver's SOAP round tripper: a call that vSphere answers
// NotAuthenticated (the session is gone: vCenter restarted, the session
// timed out or an administrator terminated it) makes the driver log in
// again with its credentials, once for every caller that saw the same
// session go, and is then sent again. vSphere did not run a call it
// refused as NotAuthenticated, so the second send runs it once. The
// property collectors and views of the old session are gone with it;
// the watcher's stream then fails and is made again (watch.go).
type relogin struct {
	rt    soap.RoundTripper
	login func(ctx context.Context) error

	mu  sync.Mutex
	gen uint64 // logins so far; a caller renews only the session it saw fail
}

// reloginKey marks the context of the login itself, which passes through.
type reloginKey struct{}

// RoundTrip sends the call; it logs in again and sends it once more if
// vSphere refused it as NotAuthenticated or, for a property retrieval,
// answered with properties missing for that reason
// (missingNotAuthenticated).
func (r *relogin) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	if ctx.Value(reloginKey{}) != nil {
		return r.rt.RoundTrip(ctx, req, res)
	}
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	err := r.rt.RoundTrip(ctx, req, res)
	if !(err != nil && fault.Is(err, &types.NotAuthenticated{}) || err == nil && missingNotAuthenticated(res)) {
		return err
	}
	if lerr := r.renew(ctx, gen); lerr != nil {
		return err // the caller sees why its call failed; the login's error is logged
	}
	// The body still holds the fault's answer: a fresh one for the retry.
	v := reflect.ValueOf(res)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v.Elem().Set(reflect.Zero(v.Elem().Type()))
	}
	return r.rt.RoundTrip(ctx, req, res)
}

// missingNotAuthenticated reports whether res is a property retrieval
// whose properties came back missing for want of a session: vCenter (and
// vcsim) answer RetrievePropertiesEx without a session, each property in
// the MissingSet with a NotAuthenticated fault, not with a fault of the
// call.
func missingNotAuthenticated(res soap.HasFault) bool {
	var objs []types.ObjectContent
	switch b := res.(type) {
	case *methods.RetrievePropertiesExBody:
		if b.Res != nil && b.Res.Returnval != nil {
			objs = b.Res.Returnval.Objects
		}
	case *methods.ContinueRetrievePropertiesExBody:
		if b.Res != nil {
			objs = b.Res.Returnval.Objects
		}
	case *methods.RetrievePropertiesBody:
		if b.Res != nil {
			objs = b.Res.Returnval
		}
	}
	for _, o := range objs {
		for _, m := range o.MissingSet {
			if _, ok := m.Fault.Fault.(*types.NotAuthenticated); ok {
				return true
			}
		}
	}
	return false
}

// renew logs in again unless another caller already did since gen.
func (r *relogin) renew(ctx context.Context, gen uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen {
		return nil
	}
	if err := r.login(context.WithValue(ctx, reloginKey{}, true)); err != nil {
		return err
	}
	r.gen++
	return nil
}
