package vsphere

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// secretWords are strings no error text of the driver may hold.
type secretWords []string

// redact is s with every secret word replaced by "***".
func (w secretWords) redact(s string) string {
	for _, x := range w {
		if x != "" {
			s = strings.ReplaceAll(s, x, "***")
		}
	}
	return s
}

// fail turns an error of govmomi into the driver's: "vsphere: op: text"
// with the credentials redacted from text, wrapping the errdefs class of
// the fault. The govmomi error itself is not wrapped, so no caller can
// reach its text unredacted.
func (d *Driver) fail(op string, err error) error {
	return fmt.Errorf("vsphere: %s: %s: %w", op, d.creds.redact(err.Error()), classify(err))
}

// classify maps a govmomi error to an errdefs class.
func classify(err error) error {
	var nf *find.NotFoundError
	var dnf *find.DefaultNotFoundError
	var dsnf object.DatastoreNoSuchFileError
	var dsnd object.DatastoreNoSuchDirectoryError
	// The driver's own errors keep their class.
	for _, c := range []error{errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrAlreadyExists,
		errdefs.ErrFailedPrecondition, errdefs.ErrUnavailable, errdefs.ErrNotImplemented, errdefs.ErrUnauthenticated} {
		if errors.Is(err, c) {
			return c
		}
	}
	switch {
	case fault.Is(err, &types.InvalidLogin{}), fault.Is(err, &types.NotAuthenticated{}):
		return errdefs.ErrUnauthenticated
	case soap.IsCertificateUntrusted(err):
		return errdefs.ErrUnauthenticated
	case fault.Is(err, &types.NoPermission{}):
		return errdefs.ErrPermissionDenied
	case errors.As(err, &nf), errors.As(err, &dnf), errors.As(err, &dsnf), errors.As(err, &dsnd),
		fault.Is(err, &types.ManagedObjectNotFound{}), fault.Is(err, &types.FileNotFound{}),
		fault.Is(err, &types.NotFound{}):
		return errdefs.ErrNotFound
	case fault.Is(err, &types.DuplicateName{}), fault.Is(err, &types.FileAlreadyExists{}),
		fault.Is(err, &types.AlreadyExists{}):
		return errdefs.ErrAlreadyExists
	}
	return errdefs.ErrUnavailable
}

// isNotFound reports whether err says an object or file does not exist.
func isNotFound(err error) bool { return err != nil && errors.Is(classify(err), errdefs.ErrNotFound) }
