package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
)

// statusTable is the one place where an error class becomes an HTTP status
// code (after moby's daemon/server/httpstatus). Order matters only for errors
// carrying several classes; errdefs.Resolve already picks the outermost one.
// Do not add type checks elsewhere: classify errors instead.
var statusTable = []struct {
	is   func(error) bool
	code int
}{
	{errdefs.IsNotFound, http.StatusNotFound},
	{errdefs.IsInvalidArgument, http.StatusBadRequest},
	{errdefs.IsConflict, http.StatusConflict},
	{errdefs.IsAlreadyExists, http.StatusConflict},
	{errdefs.IsFailedPrecondition, http.StatusBadRequest},
	{errdefs.IsOutOfRange, http.StatusBadRequest},
	{errdefs.IsUnauthorized, http.StatusUnauthorized},
	{errdefs.IsPermissionDenied, http.StatusForbidden},
	{errdefs.IsNotModified, http.StatusNotModified},
	{errdefs.IsNotImplemented, http.StatusNotImplemented},
	{errdefs.IsUnavailable, http.StatusServiceUnavailable},
	{errdefs.IsResourceExhausted, http.StatusServiceUnavailable},
}

// StatusCode returns the HTTP status code for err's class: NotFound 404,
// InvalidArgument/FailedPrecondition/OutOfRange 400, Conflict and
// AlreadyExists 409, Unauthenticated 401, PermissionDenied 403, NotModified
// 304, NotImplemented 501, Unavailable/ResourceExhausted 503, anything else
// (Internal, Unknown, unclassified) 500.
func StatusCode(err error) int {
	if err == nil {
		return http.StatusInternalServerError
	}
	class := errdefs.Resolve(err)
	for _, row := range statusTable {
		if row.is(class) {
			return row.code
		}
	}
	return http.StatusInternalServerError
}

// errorResponse is Docker's error body, {"message": "..."}; no moby type
// exists for it in api v1.57 outside the daemon.
type errorResponse struct {
	Message string `json:"message"`
}

// writeError answers with err's status code and Docker's JSON error body,
// and logs unclassified (500) errors once, with their type.
func (s *Server) writeError(ctx context.Context, w http.ResponseWriter, r *http.Request, err error) {
	code := StatusCode(err)
	if code == http.StatusInternalServerError {
		var cause error = err
		if u := errors.Unwrap(err); u != nil {
			cause = u
		}
		s.log.ErrorContext(ctx, "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("error", err.Error()), slog.String("error_type", fmt.Sprintf("%T", cause)))
	}
	if code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	_ = httputils.WriteJSON(w, code, errorResponse{Message: httputils.Message(err)})
}
