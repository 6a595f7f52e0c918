package storage

import (
	"errors"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// textError carries a fixed text, shown to users as it is, plus the
// error class (an errdefs sentinel) and optionally the cause.
type textError struct {
	msg  string
	errs []error
}

func (e *textError) Error() string   { return e.msg }
func (e *textError) Unwrap() []error { return e.errs }

// newTextError returns an error whose text is msg and which matches class
// (and cause, if not nil) with errors.Is.
func newTextError(class error, msg string, cause error) error {
	errs := []error{class}
	if cause != nil {
		errs = append(errs, cause)
	}
	return &textError{msg: msg, errs: errs}
}

var _ interface{ Unwrap() []error } = (*textError)(nil)

// noSpace classifies a write that failed because the store's filesystem is
// full (ENOSPC) or the user's quota is spent (EDQUOT) as ResourceExhausted,
// with a text that says so first; other errors pass unchanged.
func noSpace(err error) error {
	if err == nil || errdefs.IsResourceExhausted(err) || !(errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return err
	}
	return portlayer.Errorf(portlayer.ClassResourceExhausted, "no space left on device for the image store: %w", err)
}
