package httputils

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vchproject/vch/internal/portlayer"
)

// TestDockerText: dockerd's texts written from a typed port-layer
// error's fields, through wrapping; untyped errors are not matched.
func TestDockerText(t *testing.T) {
	const id = "0123abcd"
	for _, tt := range []struct {
		err  error
		want string
	}{
		{portlayer.NoSuchContainer("web"), "No such container: web"},
		{portlayer.NoSuchExec(id), "No such exec instance: " + id},
		{portlayer.NoSuchImage("busybox:latest"), "No such image: busybox:latest"},
		{&portlayer.Error{Class: portlayer.ClassInvalidArgument, Kind: portlayer.KindContainer, ID: "ab", Reason: portlayer.ReasonAmbiguous}, "multiple IDs found with provided prefix: ab"},
		{portlayer.ContainerState("exec", id, portlayer.ReasonNotRunning), "container " + id + " is not running"},
		{portlayer.ContainerState("", id, portlayer.ReasonNotRunning), "Container " + id + " is not running"},
		{portlayer.ContainerState("exec", id, portlayer.ReasonPaused), "Container " + id + " is paused, unpause the container before exec"},
		{portlayer.ContainerState("kill", id, portlayer.ReasonPaused), "Container " + id + " is paused. Unpause the container before stopping or killing"},
		{portlayer.ContainerState("pause", id, portlayer.ReasonPaused), "Container " + id + " is already paused"},
		{portlayer.ContainerState("unpause", id, portlayer.ReasonNotPaused), "Container " + id + " is not paused"},
		{fmt.Errorf("wrapped: %w", portlayer.ExecState(id, portlayer.ReasonRunning)), "Error: Exec command " + id + " is already running"},
		{portlayer.ExecState(id, portlayer.ReasonNotRunning), "exec " + id + " is not running"},
		{&portlayer.Error{Class: portlayer.ClassNotFound, Kind: portlayer.KindImage, ID: "h:5000/x:1", Reason: portlayer.ReasonNoManifest}, "manifest for h:5000/x:1 not found: manifest unknown: manifest unknown"},
		{&portlayer.Error{Class: portlayer.ClassNotFound, Kind: portlayer.KindImage, ID: "h:5000/x:1", Reason: portlayer.ReasonNoManifest, Cause: "Unknown manifest"}, "manifest for h:5000/x:1 not found: manifest unknown: Unknown manifest"},
		{&portlayer.Error{Class: portlayer.ClassNotFound, Kind: portlayer.KindImage, ID: "h:5000/x:latest", Name: "h:5000/x", Reason: portlayer.ReasonNoRepository, Cause: "Unknown name"}, "repository h:5000/x not found: name unknown: Unknown name"},
		{&portlayer.Error{Class: portlayer.ClassPermissionDenied, Kind: portlayer.KindImage, Name: "h:5000/x", Reason: portlayer.ReasonDenied, Cause: "401 Unauthorized"}, "pull access denied for h:5000/x, repository does not exist or may require 'docker login': 401 Unauthorized"},
		{portlayer.NoSuchVolume("data"), "get data: no such volume"},
		{portlayer.EndpointError(portlayer.ReasonAttached, "web", "net1"), "endpoint with name web already exists in network net1"},
		{portlayer.EndpointError(portlayer.ReasonNotAttached, id, "net1"), "container " + id + " is not connected to network net1"},
		{portlayer.EndpointError(portlayer.ReasonNoneNetwork, "web", "net1"), "container cannot be connected to multiple networks with one of the networks in private (none) mode"},
		{portlayer.VolumeInUse("data", []string{"aaa", "bbb"}), "remove data: volume is in use - [aaa bbb]"},
		{portlayer.ImageConflict("remove", "fe1b87aa5073", "busybox", portlayer.ReasonInUse, "abc123def456"), `conflict: unable to remove repository reference "busybox" (must force) - container abc123def456 is using its referenced image fe1b87aa5073`},
		{portlayer.ImageConflict("remove", "fe1b87aa5073", "", portlayer.ReasonInUse, "abc123def456"), "conflict: unable to delete fe1b87aa5073 (must be forced) - image is being used by stopped container abc123def456"},
		{portlayer.ImageConflict("remove_forced", "fe1b87aa5073", "", portlayer.ReasonInUse, "abc123def456"), "conflict: unable to delete fe1b87aa5073 (cannot be forced) - image is being used by container abc123def456"},
		{portlayer.ImageConflict("remove", "fe1b87aa5073", "", portlayer.ReasonReferenced, ""), "conflict: unable to delete fe1b87aa5073 (must be forced) - image is referenced in multiple repositories"},
		{portlayer.ImageConflict("remove_forced", "fe1b87aa5073", "", portlayer.ReasonHasChildren, ""), "conflict: unable to delete fe1b87aa5073 (cannot be forced) - image has dependent child images"},
		{withName(portlayer.Invalid(portlayer.KindContainer, "Name", "a b", portlayer.ReasonInvalidName, ""), "a b"), "Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"},
		{portlayer.ContainerState("start", id, portlayer.ReasonPaused), "cannot start a paused container, try unpause instead"},
		{portlayer.Invalid(portlayer.KindContainer, "RestartPolicy.MaximumRetryCount", "-1", portlayer.ReasonOnlyOnFailure, ""), "invalid restart policy: maximum retry count can only be used with 'on-failure' and cannot be negative"},
		{portlayer.Invalid(portlayer.KindContainer, "RestartPolicy.Name", "sometimes", portlayer.ReasonUnknown, ""), "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"},
		{portlayer.Invalid(portlayer.KindContainer, "AutoRemove", "true", portlayer.ReasonExclusive, ""), "can't create 'AutoRemove' container with restart policy"},
		{&portlayer.Error{Class: portlayer.ClassFailedPrecondition, Kind: portlayer.KindContainer, ID: "web", Name: "x", Value: "db", Reason: portlayer.ReasonLinkNotRunning}, "Cannot link to a non running container: /db AS /web/x"},
		{&portlayer.Error{Class: portlayer.ClassFailedPrecondition, Kind: portlayer.KindContainer, ID: "web", Name: "db", Value: "db", Reason: portlayer.ReasonLinkOffBridge}, "Cannot link to /db, as it does not belong to the default network"},
		{portlayer.Invalid(portlayer.KindExec, "Args", "", portlayer.ReasonRequired, ""), "No exec command specified"},
		{portlayer.Invalid(portlayer.KindExec, "WorkingDir", "tmp", portlayer.ReasonNotAbsolute, ""), "the working directory 'tmp' is invalid, it needs to be an absolute path"},
		{portlayer.Refused(portlayer.ClassConflict, portlayer.KindExec, id, portlayer.ReasonAlreadyRan, ""), "Error: Exec command " + id + " has already run"},
		{portlayer.Invalid(portlayer.KindMount, "Target", "rel", portlayer.ReasonNotAbsolute, ""), "invalid mount path: 'rel' mount path must be absolute"},
		{portlayer.Invalid(portlayer.KindMount, "Source", "rel", portlayer.ReasonNotAbsolute, ""), `invalid mount config for type "bind": invalid mount path: 'rel' mount path must be absolute`},
		{portlayer.Invalid(portlayer.KindMount, "Target", "/", portlayer.ReasonRootTarget, ""), "invalid specification: destination can't be '/'"},
		{portlayer.Invalid(portlayer.KindMount, "Target", "/x", portlayer.ReasonDuplicate, ""), "Duplicate mount point: /x"},
		{portlayer.Invalid(portlayer.KindMount, "Source", "/nosuch", portlayer.ReasonMissing, ""), `invalid mount config for type "bind": bind source path does not exist: /nosuch`},
		{withID(portlayer.Invalid(portlayer.KindVolume, "Name", "a", portlayer.ReasonTooShort, ""), "a"), "create a: volume name is too short, names should be at least two alphanumeric characters"},
		{withID(portlayer.Invalid(portlayer.KindVolume, "Name", "b/c", portlayer.ReasonInvalidName, ""), "b/c"), `create b/c: "b/c" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`},
		{withID(portlayer.Invalid(portlayer.KindVolume, "Options", "foo", portlayer.ReasonUnknown, ""), "x1"), `create x1: invalid option: "foo"`},
		{portlayer.NoSuchNetwork("n1"), "network n1 not found"},
		{portlayer.Refused(portlayer.ClassInvalidArgument, portlayer.KindNetwork, "ab", portlayer.ReasonAmbiguous, ""), "network ab is ambiguous (2 matches found)"},
		{portlayer.Invalid(portlayer.KindNetwork, "Driver", "overlay", portlayer.ReasonUnknown, ""), "could not find plugin overlay in v1 plugin registry: plugin not found"},
		{withName(portlayer.Refused(portlayer.ClassAlreadyExists, portlayer.KindNetwork, "abc", portlayer.ReasonNameInUse, ""), "n1"), "network with name n1 already exists"},
		{portlayer.Refused(portlayer.ClassConflict, portlayer.KindNetwork, "abc", portlayer.ReasonOverlaps, ""), "invalid pool request: Pool overlaps with other one on this address space"},
		{portlayer.Refused(portlayer.ClassResourceExhausted, portlayer.KindNetwork, "", portlayer.ReasonExhausted, ""), "all predefined address pools have been fully subnetted"},
		{withName(portlayer.Refused(portlayer.ClassPermissionDenied, portlayer.KindNetwork, "abc", portlayer.ReasonPredefined, ""), "bridge"), "bridge is a pre-defined network and cannot be removed"},
		{withName(portlayer.Refused(portlayer.ClassPermissionDenied, portlayer.KindNetwork, "abc", portlayer.ReasonInUse, ""), "n1"), "network n1 id abc has active endpoints"},
		{&portlayer.Error{Class: portlayer.ClassInvalidArgument, Kind: portlayer.KindEndpoint, ID: "none", Reason: portlayer.ReasonUnsupported}, "container cannot be connected to network none"},
		{portlayer.Invalid(portlayer.KindEndpoint, "IPv4", "172.17.0.9", portlayer.ReasonDefaultBridge, ""), "user specified IP address is supported on user defined networks only"},
		{portlayer.Invalid(portlayer.KindEndpoint, "Aliases", "a", portlayer.ReasonDefaultBridge, ""), "network-scoped alias is supported only for containers in user defined networks"},
		{&portlayer.Error{Class: portlayer.ClassConflict, Kind: portlayer.KindAddress, Field: "IPv4", Value: "10.0.0.1", Reason: portlayer.ReasonInUse}, "Address already in use: 10.0.0.1"},
		{&portlayer.Error{Class: portlayer.ClassConflict, Kind: portlayer.KindAddress, Value: "10.0.0.0/30", Reason: portlayer.ReasonExhausted}, "no available IPv4 addresses on this network's address pools: 10.0.0.0/30"},
		{&portlayer.Error{Class: portlayer.ClassInvalidArgument, Kind: portlayer.KindAddress, Value: "10.0.1.2", Name: "10.0.0.0/24", Reason: portlayer.ReasonInvalid}, "no available IPv4 addresses on this network's address pools: invalid address 10.0.1.2 for subnet 10.0.0.0/24"},
		{&portlayer.Error{Class: portlayer.ClassConflict, Kind: portlayer.KindPort, Value: "0.0.0.0:8080", Reason: portlayer.ReasonAllocated}, "Bind for 0.0.0.0:8080 failed: port is already allocated"},
		{&portlayer.Error{Class: portlayer.ClassConflict, Kind: portlayer.KindPort, Value: "0.0.0.0:8000-8001:172.17.0.2:80/tcp", Reason: portlayer.ReasonExhausted}, "all ports are allocated"},
		{&portlayer.Error{Class: portlayer.ClassConflict, Kind: portlayer.KindPort, Value: "0.0.0.0:8080:172.17.0.2:80/tcp", Reason: portlayer.ReasonInUse, Cause: "address already in use"}, "failed to bind host port for 0.0.0.0:8080:172.17.0.2:80/tcp: address already in use"},
		{&portlayer.Error{Class: portlayer.ClassConflict, Kind: portlayer.KindPort, Name: "8001", Value: "0.0.0.0:8000-8001:172.17.0.2:80/tcp", Reason: portlayer.ReasonInUse, Cause: "address already in use"}, "failed to bind host port 8001 for 0.0.0.0:8000-8001:172.17.0.2:80/tcp: address already in use"},
		{&portlayer.Error{Class: portlayer.ClassNotFound, Op: "push", Kind: portlayer.KindImage, ID: "h:5000/x"}, "An image does not exist locally with the tag: h:5000/x"},
		{&portlayer.Error{Class: portlayer.ClassPermissionDenied, Op: "push", Kind: portlayer.KindImage, Reason: portlayer.ReasonDenied, Cause: "401"}, "denied: requested access to the resource is denied: 401"},
		{&portlayer.Error{Class: portlayer.ClassUnauthenticated, Op: "login", Kind: portlayer.KindRegistry, ID: "https://h/v2/", Reason: portlayer.ReasonDenied}, `Get "https://h/v2/": unauthorized: incorrect username or password`},
		{&portlayer.Error{Class: portlayer.ClassUnauthenticated, Op: "login", Kind: portlayer.KindRegistry, ID: "https://h/v2/", Value: "403 Forbidden"}, "login attempt to https://h/v2/ failed with status: 403 Forbidden"},
		{portlayer.ContainerState("remove", id, portlayer.ReasonRunning), "container is running: stop the container before removing or force remove"},
		{portlayer.ContainerState("remove", id, portlayer.ReasonRestarting), "container is restarting: stop the container before removing or force remove"},
		{portlayer.ContainerState("remove", id, portlayer.ReasonPaused), "container is paused and must be unpaused first"},
	} {
		got, ok := DockerText(tt.err)
		if !ok || got != tt.want {
			t.Errorf("DockerText(%v) = %q, %v; want %q", tt.err, got, ok, tt.want)
		}
		if PortLayerText(tt.err) != tt.want {
			t.Errorf("PortLayerText(%v) = %q", tt.err, PortLayerText(tt.err))
		}
	}
	if _, ok := DockerText(errors.New("compute: something")); ok {
		t.Error("an untyped error matched")
	}
}

func withName(e *portlayer.Error, name string) *portlayer.Error { e.Name = name; return e }

func withID(e *portlayer.Error, id string) *portlayer.Error { e.ID = id; return e }

// TestMessage: a handler's own text wins; a typed port-layer error
// returned as is gets dockerd's text; anything else its own.
func TestMessage(t *testing.T) {
	typed := portlayer.ContainerState("start", "abc", portlayer.ReasonPaused)
	for err, want := range map[error]string{
		typed:                              "cannot start a paused container, try unpause instead",
		fmt.Errorf("start: %w", typed):     "cannot start a paused container, try unpause instead",
		Classify(typed, typed, "own text"): "own text",
		errors.New("plain"):                "plain",
	} {
		if got := Message(err); got != want {
			t.Errorf("Message(%v) = %q, want %q", err, got, want)
		}
	}
}
