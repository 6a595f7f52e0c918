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
