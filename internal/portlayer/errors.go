package portlayer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// ErrorClass is the machine-readable class of a port-layer error. The
// values are the Port Layer API's error classes; each matches one of
// containerd's errdefs classes (errors.Is(err, errdefs.ErrNotFound) and
// errdefs.IsNotFound hold for ClassNotFound), so callers test classes as
// they test any classified error.
type ErrorClass string

// The error classes.
const (
	ClassNotFound           ErrorClass = "not_found"
	ClassAlreadyExists      ErrorClass = "already_exists"
	ClassConflict           ErrorClass = "conflict"
	ClassInvalidArgument    ErrorClass = "invalid_argument"
	ClassFailedPrecondition ErrorClass = "failed_precondition"
	ClassUnavailable        ErrorClass = "unavailable"
	ClassResourceExhausted  ErrorClass = "resource_exhausted"
	ClassNotImplemented     ErrorClass = "not_implemented"
	ClassPermissionDenied   ErrorClass = "permission_denied"
	ClassUnauthenticated    ErrorClass = "unauthenticated"
	ClassInternal           ErrorClass = "internal"
	// ClassNotModified: the operation had nothing to do, the object
	// being in the state it would bring about already (a start of a
	// running container, a stop of a stopped one). Nothing changed; a
	// front end may take it for success.
	ClassNotModified ErrorClass = "not_modified"
)

// sentinel is the errdefs class c matches.
func (c ErrorClass) sentinel() error {
	switch c {
	case ClassNotFound:
		return errdefs.ErrNotFound
	case ClassAlreadyExists:
		return errdefs.ErrAlreadyExists
	case ClassConflict:
		return errdefs.ErrConflict
	case ClassInvalidArgument:
		return errdefs.ErrInvalidArgument
	case ClassFailedPrecondition:
		return errdefs.ErrFailedPrecondition
	case ClassUnavailable:
		return errdefs.ErrUnavailable
	case ClassResourceExhausted:
		return errdefs.ErrResourceExhausted
	case ClassNotImplemented:
		return errdefs.ErrNotImplemented
	case ClassPermissionDenied:
		return errdefs.ErrPermissionDenied
	case ClassUnauthenticated:
		return errdefs.ErrUnauthenticated
	case ClassInternal:
		return errdefs.ErrInternal
	case ClassNotModified:
		return errdefs.ErrNotModified
	}
	return errdefs.ErrUnknown
}

// Object kinds an Error may concern (Error.Kind).
const (
	KindContainer = "container"
	KindExec      = "exec"
	KindImage     = "image"
	KindVolume    = "volume"
	KindNetwork   = "network"
	// KindEndpoint is a container's attachment to a network: Error.ID is
	// the network, Error.Name the container.
	KindEndpoint = "endpoint"
	// KindMount is one of a container's mounts: Error.Field says which of
	// its fields ("Target", "Source"), Error.Value gives the path.
	KindMount = "mount"
	// KindAddress is an IP address on a network: Error.Value is the
	// address (or the range searched), Error.Name the subnet it must be
	// in.
	KindAddress = "address"
	// KindPort is a published host port: Error.Value is "IP:PORT".
	KindPort = "port"
	// KindRegistry is an image registry: Error.ID is the URL of its API
	// root ("https://HOST/v2/"), Error.Value the HTTP status it answered.
	KindRegistry = "registry"
)

// Reasons (Error.Reason): what about the object caused the error.
const (
	// ReasonNotRunning: the container (or exec) does not run.
	ReasonNotRunning = "not_running"
	// ReasonPaused: the container is paused.
	ReasonPaused = "paused"
	// ReasonNotPaused: the container is not paused (an unpause).
	ReasonNotPaused = "not_paused"
	// ReasonRunning: the exec or container already runs (a second
	// start).
	ReasonRunning = "running"
	// ReasonAmbiguous: the ID prefix given matches several objects.
	ReasonAmbiguous = "ambiguous"
	// ReasonNameInUse: another object has the name (Error.Name); Error.ID
	// is that object's.
	ReasonNameInUse = "name_in_use"
	// ReasonInUse: containers (Error.Containers) use the image or volume.
	ReasonInUse = "in_use"
	// ReasonReferenced: the image has several references and none was
	// named.
	ReasonReferenced = "referenced"
	// ReasonHasChildren: other images are built on the image.
	ReasonHasChildren = "has_children"
	// ReasonNoManifest: the registry has no such tag or manifest (Cause:
	// the registry's own message, when it gave one).
	ReasonNoManifest = "no_manifest"
	// ReasonNoRepository: the registry has no such repository (its
	// NAME_UNKNOWN; Name the repository, Cause the registry's message).
	ReasonNoRepository = "no_repository"
	// ReasonNoPlatform: the image has no manifest for this platform.
	ReasonNoPlatform = "no_platform"
	// ReasonDenied: the registry refused access (Error.Name is the
	// repository).
	ReasonDenied = "denied"
	// ReasonGone: a network a stopped container was attached to has been
	// removed since.
	ReasonGone = "gone"
	// ReasonAttached: the container is already on the network.
	ReasonAttached = "attached"
	// ReasonNotAttached: the container is not on the network.
	ReasonNotAttached = "not_attached"
	// ReasonNoneNetwork: the container is on the "none" network, which
	// excludes every other.
	ReasonNoneNetwork = "none_network"

	// Reasons for a request's field (Error.Field) and its value
	// (Error.Value), mostly InvalidArgument.

	// ReasonInvalid: the value is malformed.
	ReasonInvalid = "invalid"
	// ReasonInvalidName: a name has characters outside
	// [a-zA-Z0-9][a-zA-Z0-9_.-] (Error.Name is the name).
	ReasonInvalidName = "invalid_name"
	// ReasonTooShort: a name has fewer characters than its kind needs.
	ReasonTooShort = "too_short"
	// ReasonRequired: the field is empty and must not be.
	ReasonRequired = "required"
	// ReasonNotAbsolute: a path that must be absolute is not.
	ReasonNotAbsolute = "not_absolute"
	// ReasonRootTarget: a mount's target is "/".
	ReasonRootTarget = "root_target"
	// ReasonDuplicate: two mounts have the same target.
	ReasonDuplicate = "duplicate"
	// ReasonMissing: the host path a bind mount names does not exist, or
	// nothing is at a volume mount's Subpath (NotFound).
	ReasonMissing = "missing"
	// ReasonEscapes: a volume mount's Subpath leads out of the volume
	// through a symlink.
	ReasonEscapes = "escapes"
	// ReasonUnresolvable: a lookup on the way to a volume mount's
	// Subpath failed otherwise than with a missing part (Internal;
	// Error.Cause is the system error's text: "not a directory").
	ReasonUnresolvable = "unresolvable"
	// ReasonTypeMismatch: a mount's source (a volume's or image's root,
	// or its Subpath) is a directory and its Target a file in the
	// container, or the reverse (InvalidArgument, KindMount; ID the
	// mount's Target, Name the volume or image ID, Field "Subpath" and
	// Value the subpath, empty for the root; Cause "not a directory").
	ReasonTypeMismatch = "type_mismatch"
	// ReasonUnknown: the value is none of those the field takes (an
	// option, a restart policy, a network driver).
	ReasonUnknown = "unknown"
	// ReasonNegative: a count is below zero.
	ReasonNegative = "negative"
	// ReasonOnlyOnFailure: a retry count with a restart policy other than
	// on-failure (Error.Value is the count).
	ReasonOnlyOnFailure = "only_on_failure"
	// ReasonExclusive: the field cannot be combined with another setting
	// of the request (auto-removal with a restart policy).
	ReasonExclusive = "exclusive"
	// ReasonAlreadyRan: the exec has run and ended; it cannot run again.
	ReasonAlreadyRan = "already_ran"
	// ReasonRestarting: the container waits for its restart policy's
	// next start (Conflict).
	ReasonRestarting = "restarting"
	// ReasonStarting: the container is starting (Conflict).
	ReasonStarting = "starting"
	// ReasonVMSize: a change the running VM's size cannot hold
	// (Conflict).
	ReasonVMSize = "vm_size"
	// ReasonOverlaps: a network's subnet overlaps another network's
	// (Conflict).
	ReasonOverlaps = "overlaps"
	// ReasonExhausted: no free subnet, address or port is left.
	ReasonExhausted = "exhausted"
	// ReasonPredefined: the network is one the VCH defines (bridge,
	// none), which cannot be removed.
	ReasonPredefined = "predefined"
	// ReasonDefaultBridge: a setting (Error.Field: "IPv4", "Aliases")
	// that only user-defined networks take was given on the default
	// bridge.
	ReasonDefaultBridge = "default_bridge"
	// ReasonUnsupported: the network's driver takes no endpoints.
	ReasonUnsupported = "unsupported"
	// ReasonAllocated: the host port is already published by another
	// container (Conflict; Error.Value "IP:PORT").
	ReasonAllocated = "allocated"
	// ReasonLinkNotRunning and ReasonLinkOffBridge: a legacy link's
	// target (Error.Value, its name) does not run, or is not on the
	// default bridge; Error.Name is the link's alias, Error.ID the
	// linking container's name (FailedPrecondition).
	ReasonLinkNotRunning = "link_not_running"
	ReasonLinkOffBridge  = "link_off_bridge"
	// ReasonStartFailed: the guest could not start the container's or
	// the exec's process (InvalidArgument, made by StartFailed):
	// Error.Message is the guest's text, Error.Value the exit code the
	// start left ("127" not found, "126" not executable).
	ReasonStartFailed = "start_failed"
	// ReasonNoLog: the container keeps no log of its output
	// (ContainerSpec.NoLog), so there is none to read (FailedPrecondition,
	// from Logs and from Attach with Logs).
	ReasonNoLog = "no_log"
)

// Error is a port-layer error with its class and the object it concerns,
// so a front end can write its own text from the fields instead of
// reading this one's. The JSON form is the Port Layer API's error body.
//
// Error matches its class's errdefs sentinel (errors.Is, errdefs.IsX,
// errdefs.Resolve) and wraps Err.
type Error struct {
	// Class is the error's class; never empty.
	Class ErrorClass `json:"class"`
	// Op is the operation that failed ("exec", "kill", "pause", …), when
	// the same state fails several operations differently.
	Op string `json:"op,omitempty"`
	// Kind is the kind of object concerned (KindContainer, …).
	Kind string `json:"kind,omitempty"`
	// ID is the object's ID; for ClassNotFound (and ReasonAmbiguous) the
	// ID, name or prefix the caller gave.
	ID string `json:"id,omitempty"`
	// Name is the name concerned, for ReasonNameInUse.
	Name string `json:"name,omitempty"`
	// Reason says what about the object caused the error (ReasonPaused,
	// …); empty when the class says it all.
	Reason string `json:"reason,omitempty"`
	// Containers are the IDs of other containers the error concerns (the
	// ones using an image or a volume, for ReasonInUse).
	Containers []string `json:"containers,omitempty"`
	// Field is the request field concerned ("Name", "Target",
	// "WorkingDir", "RestartPolicy.Name", …), for the field reasons.
	Field string `json:"field,omitempty"`
	// Value is the value concerned: the one given for Field, a path, an
	// address or "IP:PORT".
	Value string `json:"value,omitempty"`
	// Message is a human-readable text, in the port layer's words.
	Message string `json:"message"`
	// Cause is the cause's text, as the error crosses the API (where Err
	// cannot); empty when there is none.
	Cause string `json:"cause,omitempty"`
	// Err is the cause, if any.
	Err error `json:"-"`
}

// Error returns the message, then the cause's text.
func (e *Error) Error() string {
	if c := e.CauseText(); c != "" {
		return e.Message + ": " + c
	}
	return e.Message
}

// CauseText is the cause's text: Err's, else Cause.
func (e *Error) CauseText() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return e.Cause
}

// Unwrap returns the class's errdefs sentinel first (so errdefs.Resolve
// finds the class), then the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Class.sentinel(), e.Err}
	}
	return []error{e.Class.sentinel()}
}

// AsError returns the first *Error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// ClassOf is err's class: its *Error's, else that of the errdefs class it
// carries (ClassInternal for none; context errors are ClassUnavailable).
func ClassOf(err error) ErrorClass {
	if e := AsError(err); e != nil {
		return e.Class
	}
	switch {
	case errdefs.IsNotFound(err):
		return ClassNotFound
	case errdefs.IsAlreadyExists(err):
		return ClassAlreadyExists
	case errdefs.IsConflict(err):
		return ClassConflict
	case errdefs.IsInvalidArgument(err), errdefs.IsOutOfRange(err):
		return ClassInvalidArgument
	case errdefs.IsFailedPrecondition(err):
		return ClassFailedPrecondition
	case errdefs.IsUnavailable(err), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return ClassUnavailable
	case errdefs.IsResourceExhausted(err):
		return ClassResourceExhausted
	case errdefs.IsNotImplemented(err):
		return ClassNotImplemented
	case errdefs.IsPermissionDenied(err):
		return ClassPermissionDenied
	case errdefs.IsUnauthorized(err):
		return ClassUnauthenticated
	case errdefs.IsNotModified(err):
		return ClassNotModified
	}
	return ClassInternal
}

// Invalid is the InvalidArgument error for field of a request about an
// object of kind, given value, refused for reason; msg is the port
// layer's text.
func Invalid(kind, field, value, reason, msg string) *Error {
	return &Error{Class: ClassInvalidArgument, Kind: kind, Field: field, Value: value, Reason: reason, Message: msg}
}

// Refused is an error of class about object id of kind, for reason; msg
// is the port layer's text.
func Refused(class ErrorClass, kind, id, reason, msg string) *Error {
	return &Error{Class: class, Kind: kind, ID: id, Reason: reason, Message: msg}
}

// NoSuchNetwork is the NotFound error for a network looked up by ref (an
// ID, a name or an ID prefix).
func NoSuchNetwork(ref string) error {
	return &Error{Class: ClassNotFound, Kind: KindNetwork, ID: ref, Message: "no such network: " + ref}
}

// NoSuchContainer is the NotFound error for a container looked up by
// ref (an ID, a name or an ID prefix).
func NoSuchContainer(ref string) error {
	return &Error{Class: ClassNotFound, Kind: KindContainer, ID: ref, Message: "no such container: " + ref}
}

// NoSuchExec is the NotFound error for an exec looked up by ID.
func NoSuchExec(id string) error {
	return &Error{Class: ClassNotFound, Kind: KindExec, ID: id, Message: "no such exec: " + id}
}

// NoSuchImage is the NotFound error for an image looked up by ref.
func NoSuchImage(ref string) error {
	return &Error{Class: ClassNotFound, Kind: KindImage, ID: ref, Message: "no such image: " + ref}
}

// ContainerState is the Conflict error for an operation op that the
// state of container id (reason: ReasonNotRunning, ReasonPaused,
// ReasonNotPaused) does not allow.
func ContainerState(op, id, reason string) error {
	msg := "container " + id
	switch reason {
	case ReasonNotRunning:
		msg += " is not running"
	case ReasonPaused:
		msg += " is paused"
	case ReasonNotPaused:
		msg += " is not paused"
	case ReasonRunning:
		msg += " is running"
	case ReasonRestarting:
		msg += " is restarting"
	default:
		msg += ": " + reason
	}
	if op != "" {
		msg = op + ": " + msg
	}
	return &Error{Class: ClassConflict, Op: op, Kind: KindContainer, ID: id, Reason: reason, Message: msg}
}

// Unchanged is the NotModified error for an operation op on container
// id that had nothing to do: reason ReasonRunning for a start of a
// running container (or one waiting for its restart policy's restart),
// ReasonNotRunning for a stop of one that does not run. The state was
// checked in the same step as the operation, so a front end can answer
// from it without looking first.
func Unchanged(op, id, reason string) error {
	msg := "container " + id
	switch reason {
	case ReasonRunning:
		msg += " is already running"
	case ReasonNotRunning:
		msg += " is not running"
	default:
		msg += ": " + reason
	}
	if op != "" {
		msg = op + ": " + msg
	}
	return &Error{Class: ClassNotModified, Op: op, Kind: KindContainer, ID: id, Reason: reason, Message: msg}
}

// ExecState is the Conflict error for exec id that runs (ReasonRunning,
// a second start) or does not (ReasonNotRunning, a resize).
func ExecState(id, reason string) error {
	msg := "exec " + id + " is running"
	if reason == ReasonNotRunning {
		msg = "exec " + id + " is not running"
	}
	return &Error{Class: ClassConflict, Kind: KindExec, ID: id, Reason: reason, Message: msg}
}

// ImageConflict is the Conflict error for removing image id (its short
// ID): reason ReasonInUse (container uses it; ref is the reference
// asked, "" when the image was named by ID), ReasonReferenced or
// ReasonHasChildren. op is "remove", or "remove_forced" for a forced
// removal that is refused even so.
func ImageConflict(op, id, ref, reason, container string) error {
	msg := "image " + id
	switch reason {
	case ReasonInUse:
		msg += " is used by container " + container
	case ReasonReferenced:
		msg += " has several references"
	case ReasonHasChildren:
		msg += " has child images"
	}
	e := &Error{Class: ClassConflict, Op: op, Kind: KindImage, ID: id, Name: ref, Reason: reason, Message: msg}
	if container != "" {
		e.Containers = []string{container}
	}
	return e
}

// NoSuchVolume is the NotFound error for a volume looked up by name.
func NoSuchVolume(name string) error {
	return &Error{Class: ClassNotFound, Kind: KindVolume, ID: name, Message: "no such volume: " + name}
}

// VolumeInUse is the Conflict error for removing volume name while
// containers (their IDs, sorted) use it.
func VolumeInUse(name string, containers []string) error {
	return &Error{Class: ClassConflict, Op: "remove", Kind: KindVolume, ID: name, Reason: ReasonInUse, Containers: containers,
		Message: fmt.Sprintf("volume %s is used by containers %v", name, containers)}
}

// EndpointError is the error about container's attachment to network
// (names as the caller knows them): reason ReasonAttached (Conflict),
// ReasonNotAttached (NotFound) or ReasonNoneNetwork (Conflict).
func EndpointError(reason, container, network string) error {
	e := &Error{Kind: KindEndpoint, ID: network, Name: container, Reason: reason}
	switch reason {
	case ReasonAttached:
		e.Class, e.Message = ClassConflict, "container "+container+" is already on network "+network
	case ReasonNotAttached:
		e.Class, e.Message = ClassNotFound, "container "+container+" is not on network "+network
	default:
		e.Class, e.Message = ClassConflict, "container "+container+" is on the none network, which excludes "+network
	}
	return e
}

// Errorf is the error of class whose Message is format written with
// args as fmt.Sprintf writes it, for the port layer's errors that no
// front end words itself (a limit, a malformed archive, a driver that
// cannot do something). A format ending in ": %w" makes its last
// argument, an error, the cause (Err) instead, so Error() reads as
// fmt.Errorf's text would and errors.Is and errors.As see the cause:
//
//	Errorf(ClassInvalidArgument, "bind mount root %q: %w", root, err)
//	// &Error{Class: ClassInvalidArgument, Message: `bind mount root "/x"`, Err: err}
//
// Other %w verbs are written as %v. The message is the port layer's text
// as a user may be shown it: no package prefix ("compute: ") and no
// class ("invalid argument"), which the class and Op carry; set Op,
// Kind, ID and the other fields on the result where they apply.
func Errorf(class ErrorClass, format string, args ...any) *Error {
	e := &Error{Class: class}
	if rest, ok := strings.CutSuffix(format, ": %w"); ok && len(args) > 0 {
		if cause, ok := args[len(args)-1].(error); ok {
			format, args, e.Err = rest, args[:len(args)-1], cause
		}
	}
	e.Message = fmt.Sprintf(strings.ReplaceAll(format, "%w", "%v"), args...)
	return e
}

// WithOp sets e's Op, the operation that failed ("save", "publish"), and
// returns e: portlayer.Errorf(…).WithOp("save").
func (e *Error) WithOp(op string) *Error {
	e.Op = op
	return e
}

// StartFailed is the InvalidArgument error for a process the guest could
// not start, of the container or exec (kind KindContainer or KindExec)
// id: msg is the guest's text (`exec: "x": executable file not found in
// $PATH`), exitCode the exit code the failed start leaves, 127 (not
// found) or 126 (not executable), carried in Value so that it crosses
// the API:
//
//	&Error{Class: invalid_argument, Kind: "container", ID: id, Reason: "start_failed", Value: "127", Message: msg}
func StartFailed(kind, id, msg string, exitCode int) *Error {
	return &Error{Class: ClassInvalidArgument, Kind: kind, ID: id, Reason: ReasonStartFailed, Value: strconv.Itoa(exitCode), Message: msg}
}

// StartFailure is err's StartFailed error and its exit code; ok is false
// if err is not one.
func StartFailure(err error) (pe *Error, exitCode int, ok bool) {
	pe = AsError(err)
	if pe == nil || pe.Reason != ReasonStartFailed {
		return nil, 0, false
	}
	exitCode, cerr := strconv.Atoi(pe.Value)
	if cerr != nil {
		exitCode = 126
	}
	return pe, exitCode, true
}
