package storage

import "errors"

// dockerError carries a text that Docker users know verbatim, plus the
// error class (an errdefs sentinel) and optionally the cause.
type dockerError struct {
	msg  string
	errs []error
}

func (e *dockerError) Error() string   { return e.msg }
func (e *dockerError) Unwrap() []error { return e.errs }

// newDockerError returns an error whose text is msg and which matches class
// (and cause, if not nil) with errors.Is.
func newDockerError(class error, msg string, cause error) error {
	errs := []error{class}
	if cause != nil {
		errs = append(errs, cause)
	}
	return &dockerError{msg: msg, errs: errs}
}

var _ interface{ Unwrap() []error } = (*dockerError)(nil)

var errClosed = errors.New("storage: store is closed")
