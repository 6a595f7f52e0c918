package httputils

import (
	"fmt"
	"strings"

	"github.com/vchproject/vch/internal/portlayer"
)

// DockerText writes dockerd's text for a typed port-layer error (the
// first *portlayer.Error in err's chain) from its kind, reason, operation
// and object, as dockerd words the same failure (moby daemon/errors.go
// and the handlers that return them). ok is false for an error that is
// not typed, or whose fields have no dockerd text here.
func DockerText(err error) (msg string, ok bool) {
	pe := portlayer.AsError(err)
	if pe == nil {
		return "", false
	}
	switch pe.Kind {
	case portlayer.KindContainer:
		return containerText(pe)
	case portlayer.KindExec:
		switch {
		case pe.Class == portlayer.ClassNotFound:
			return "No such exec instance: " + pe.ID, true
		case pe.Reason == portlayer.ReasonRunning:
			return fmt.Sprintf("Error: Exec command %s is already running", pe.ID), true
		case pe.Reason == portlayer.ReasonNotRunning:
			return fmt.Sprintf("exec %s is not running", pe.ID), true
		}
	case portlayer.KindImage:
		return imageText(pe)
	case portlayer.KindNetwork:
		if pe.Reason == portlayer.ReasonGone {
			return "network " + pe.ID + " not found", true
		}
	case portlayer.KindEndpoint:
		switch pe.Reason {
		case portlayer.ReasonAttached:
			return fmt.Sprintf("endpoint with name %s already exists in network %s", pe.Name, pe.ID), true
		case portlayer.ReasonNotAttached:
			return fmt.Sprintf("container %s is not connected to network %s", pe.Name, pe.ID), true
		case portlayer.ReasonNoneNetwork:
			return "container cannot be connected to multiple networks with one of the networks in private (none) mode", true
		}
	case portlayer.KindVolume:
		switch {
		case pe.Class == portlayer.ClassNotFound:
			return "get " + pe.ID + ": no such volume", true
		case pe.Reason == portlayer.ReasonInUse:
			return "remove " + pe.ID + ": volume is in use - [" + strings.Join(pe.Containers, " ") + "]", true
		}
	}
	return "", false
}

// containerText is DockerText for a container's error.
func containerText(pe *portlayer.Error) (string, bool) {
	switch {
	case pe.Class == portlayer.ClassNotFound:
		return "No such container: " + pe.ID, true
	case pe.Reason == portlayer.ReasonAmbiguous:
		return "multiple IDs found with provided prefix: " + pe.ID, true
	case pe.Reason == portlayer.ReasonNotPaused:
		return fmt.Sprintf("Container %s is not paused", pe.ID), true
	case pe.Reason == portlayer.ReasonNotRunning:
		if pe.Op == "exec" {
			// dockerd's exec create and start (errNotRunning).
			return fmt.Sprintf("container %s is not running", pe.ID), true
		}
		return fmt.Sprintf("Container %s is not running", pe.ID), true
	case pe.Reason == portlayer.ReasonPaused:
		switch pe.Op {
		case "exec":
			return fmt.Sprintf("Container %s is paused, unpause the container before exec", pe.ID), true
		case "copy":
			return fmt.Sprintf("Container %s is paused, unpause the container before copying", pe.ID), true
		case "kill":
			return fmt.Sprintf("Container %s is paused. Unpause the container before stopping or killing", pe.ID), true
		case "connect":
			return fmt.Sprintf("Container %s is paused, unpause the container before connecting it to a network", pe.ID), true
		case "disconnect":
			return fmt.Sprintf("Container %s is paused, unpause the container before disconnecting it from a network", pe.ID), true
		case "pause":
			return fmt.Sprintf("Container %s is already paused", pe.ID), true
		}
		return fmt.Sprintf("Container %s is paused", pe.ID), true
	}
	return "", false
}

// imageText is DockerText for an image's error (moby daemon/images
// image_delete.go's conflicts).
func imageText(pe *portlayer.Error) (string, bool) {
	switch pe.Reason {
	case portlayer.ReasonNoManifest:
		return "manifest for " + pe.ID + " not found: manifest unknown: manifest unknown", true
	case portlayer.ReasonNoPlatform:
		return "no matching manifest for linux/amd64 in the manifest list entries", true
	case portlayer.ReasonDenied:
		return fmt.Sprintf("pull access denied for %s, repository does not exist or may require 'docker login': %s", pe.Name, pe.CauseText()), true
	}
	if pe.Class == portlayer.ClassNotFound {
		return "No such image: " + pe.ID, true
	}
	force := "must be forced"
	if pe.Op == "remove_forced" || pe.Reason == portlayer.ReasonHasChildren {
		force = "cannot be forced"
	}
	switch pe.Reason {
	case portlayer.ReasonInUse:
		if pe.Name != "" {
			return fmt.Sprintf("conflict: unable to remove repository reference %q (must force) - container %s is using its referenced image %s", pe.Name, first(pe.Containers), pe.ID), true
		}
		state := "stopped container"
		if pe.Op == "remove_forced" {
			state = "container"
		}
		return fmt.Sprintf("conflict: unable to delete %s (%s) - image is being used by %s %s", pe.ID, force, state, first(pe.Containers)), true
	case portlayer.ReasonReferenced:
		return fmt.Sprintf("conflict: unable to delete %s (%s) - image is referenced in multiple repositories", pe.ID, force), true
	case portlayer.ReasonHasChildren:
		return fmt.Sprintf("conflict: unable to delete %s (%s) - image has dependent child images", pe.ID, force), true
	}
	return "", false
}

// first is ids[0], or "" for none.
func first(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}
