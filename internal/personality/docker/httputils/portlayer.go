package httputils

import (
	"cmp"
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
		case pe.Reason == portlayer.ReasonAlreadyRan:
			return fmt.Sprintf("Error: Exec command %s has already run", pe.ID), true
		case pe.Reason == portlayer.ReasonRequired:
			return "No exec command specified", true
		case pe.Reason == portlayer.ReasonNotAbsolute:
			return fmt.Sprintf("the working directory '%s' is invalid, it needs to be an absolute path", pe.Value), true
		}
	case portlayer.KindImage:
		if pe.Op == "push" {
			switch {
			case pe.Class == portlayer.ClassNotFound:
				return "An image does not exist locally with the tag: " + pe.ID, true
			case pe.Reason == portlayer.ReasonDenied:
				return "denied: requested access to the resource is denied: " + pe.CauseText(), true
			}
		}
		return imageText(pe)
	case portlayer.KindRegistry:
		// docker/cli and moby registry's login errors.
		if pe.Reason == portlayer.ReasonDenied {
			return fmt.Sprintf("Get %q: unauthorized: incorrect username or password", pe.ID), true
		}
		if pe.Value != "" {
			return fmt.Sprintf("login attempt to %s failed with status: %s", pe.ID, pe.Value), true
		}
	case portlayer.KindNetwork:
		return networkText(pe)
	case portlayer.KindMount:
		return mountText(pe)
	case portlayer.KindAddress:
		switch pe.Reason {
		case portlayer.ReasonInvalid:
			return fmt.Sprintf("no available IPv4 addresses on this network's address pools: invalid address %s for subnet %s", pe.Value, pe.Name), true
		case portlayer.ReasonInUse:
			return "Address already in use: " + pe.Value, true
		case portlayer.ReasonExhausted:
			return "no available IPv4 addresses on this network's address pools: " + pe.Value, true
		}
	case portlayer.KindPort:
		// moby libnetwork's portallocator and bridge driver
		// (port_mapping_linux.go, bindTCPOrUDP).
		switch {
		case pe.Reason == portlayer.ReasonAllocated:
			return "Bind for " + pe.Value + " failed: port is already allocated", true
		case pe.Reason == portlayer.ReasonExhausted:
			return "all ports are allocated", true
		case pe.Name != "":
			return fmt.Sprintf("failed to bind host port %s for %s: %s", pe.Name, pe.Value, pe.CauseText()), true
		case pe.Value != "":
			return fmt.Sprintf("failed to bind host port for %s: %s", pe.Value, pe.CauseText()), true
		}
	case portlayer.KindEndpoint:
		switch pe.Reason {
		case portlayer.ReasonUnsupported:
			return "container cannot be connected to network " + pe.ID, true
		case portlayer.ReasonDefaultBridge:
			if pe.Field == "Aliases" {
				return "network-scoped alias is supported only for containers in user defined networks", true
			}
			return "user specified IP address is supported on user defined networks only", true
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
		// moby volume/local's validateName and option check.
		case pe.Reason == portlayer.ReasonTooShort:
			return "create " + pe.ID + ": volume name is too short, names should be at least two alphanumeric characters", true
		case pe.Reason == portlayer.ReasonInvalidName:
			return fmt.Sprintf("create %s: %q includes invalid characters for a local volume name, only %q are allowed. If you intended to pass a host directory, use absolute path", pe.ID, pe.ID, "[a-zA-Z0-9][a-zA-Z0-9_.-]"), true
		case pe.Reason == portlayer.ReasonUnknown && pe.Field == "Options":
			return fmt.Sprintf("create %s: invalid option: %q", pe.ID, pe.Value), true
		case pe.Reason == portlayer.ReasonInUse:
			return "remove " + pe.ID + ": volume is in use - [" + strings.Join(pe.Containers, " ") + "]", true
		}
	}
	return "", false
}

// containerText is DockerText for a container's error.
func containerText(pe *portlayer.Error) (string, bool) {
	switch {
	case pe.Reason == portlayer.ReasonInvalidName:
		return "Invalid container name (" + pe.Name + "), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", true
	case pe.Reason == portlayer.ReasonRequired && pe.Field == "Args":
		return "No command specified", true
	case pe.Field == "RestartPolicy.MaximumRetryCount" || pe.Field == "RestartPolicy.Name" || pe.Field == "AutoRemove":
		return restartPolicyText(pe)
	case pe.Reason == portlayer.ReasonLinkNotRunning:
		return fmt.Sprintf("Cannot link to a non running container: /%s AS /%s/%s", pe.Value, pe.ID, pe.Name), true
	case pe.Reason == portlayer.ReasonLinkOffBridge:
		return fmt.Sprintf("Cannot link to /%s, as it does not belong to the default network", pe.Value), true
	case pe.Op == "update" && pe.Reason == portlayer.ReasonVMSize:
		return fmt.Sprintf("Cannot update container %s: its VM runs with %s, which a running VM cannot change: stop the container, update it, then start it", pe.ID, pe.Value), true
	case pe.Op == "remove" && (pe.Reason == portlayer.ReasonRunning || pe.Reason == portlayer.ReasonRestarting):
		// The front end prefixes "cannot remove container NAME: ".
		return "container is " + pe.Reason + ": stop the container before removing or force remove", true
	case pe.Op == "remove" && pe.Reason == portlayer.ReasonPaused:
		return "container is paused and must be unpaused first", true
	case pe.Op == "update" && pe.Reason == portlayer.ReasonStarting:
		return fmt.Sprintf("Cannot update container %s: it is starting", pe.ID), true
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
		case "start":
			return "cannot start a paused container, try unpause instead", true
		}
		return fmt.Sprintf("Container %s is paused", pe.ID), true
	}
	return "", false
}

// restartPolicyText is DockerText for a refused restart policy (moby
// daemon/container.go validateRestartPolicy, v25+).
func restartPolicyText(pe *portlayer.Error) (string, bool) {
	switch pe.Reason {
	case portlayer.ReasonOnlyOnFailure:
		msg := "invalid restart policy: maximum retry count can only be used with 'on-failure'"
		if strings.HasPrefix(pe.Value, "-") {
			msg += " and cannot be negative"
		}
		return msg, true
	case portlayer.ReasonNegative:
		return "invalid restart policy: maximum retry count cannot be negative", true
	case portlayer.ReasonUnknown:
		return fmt.Sprintf("invalid restart policy: unknown policy '%s'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'", pe.Value), true
	case portlayer.ReasonExclusive:
		return "can't create 'AutoRemove' container with restart policy", true
	}
	return "", false
}

// mountText is DockerText for a refused mount (moby volume/mounts's
// parser and validation errors).
func mountText(pe *portlayer.Error) (string, bool) {
	switch {
	case pe.Reason == portlayer.ReasonNotAbsolute && pe.Field == "Source":
		return fmt.Sprintf("invalid mount config for type \"bind\": invalid mount path: '%s' mount path must be absolute", pe.Value), true
	case pe.Reason == portlayer.ReasonNotAbsolute:
		return fmt.Sprintf("invalid mount path: '%s' mount path must be absolute", pe.Value), true
	case pe.Reason == portlayer.ReasonRootTarget:
		return "invalid specification: destination can't be '/'", true
	case pe.Reason == portlayer.ReasonDuplicate:
		return "Duplicate mount point: " + pe.Value, true
	case pe.Reason == portlayer.ReasonMissing:
		return "invalid mount config for type \"bind\": bind source path does not exist: " + pe.Value, true
	}
	return "", false
}

// networkText is DockerText for a network's error (moby libnetwork and
// daemon/network.go).
func networkText(pe *portlayer.Error) (string, bool) {
	switch {
	case pe.Reason == portlayer.ReasonGone, pe.Class == portlayer.ClassNotFound && pe.Reason == "":
		return "network " + pe.ID + " not found", true
	case pe.Reason == portlayer.ReasonAmbiguous:
		return "network " + pe.ID + " is ambiguous (2 matches found)", true
	case pe.Reason == portlayer.ReasonRequired:
		return "network name is empty", true
	case pe.Reason == portlayer.ReasonUnknown && pe.Field == "Driver":
		return "could not find plugin " + pe.Value + " in v1 plugin registry: plugin not found", true
	case pe.Reason == portlayer.ReasonNameInUse:
		return "network with name " + pe.Name + " already exists", true
	case pe.Reason == portlayer.ReasonOverlaps:
		return "invalid pool request: Pool overlaps with other one on this address space", true
	case pe.Reason == portlayer.ReasonExhausted:
		return "all predefined address pools have been fully subnetted", true
	case pe.Reason == portlayer.ReasonPredefined:
		return pe.Name + " is a pre-defined network and cannot be removed", true
	case pe.Reason == portlayer.ReasonInUse:
		// The front end prefixes "error while removing network: ".
		return "network " + pe.Name + " id " + pe.ID + " has active endpoints", true
	}
	return "", false
}

// imageText is DockerText for an image's error (moby daemon/images
// image_delete.go's conflicts).
func imageText(pe *portlayer.Error) (string, bool) {
	switch pe.Reason {
	case portlayer.ReasonNoManifest:
		// dockerd's notFoundError around the registry's error
		// (distribution errors.go): its code's text, then its message.
		return "manifest for " + pe.ID + " not found: manifest unknown: " + cmp.Or(pe.Cause, "manifest unknown"), true
	case portlayer.ReasonNoRepository:
		return "repository " + pe.Name + " not found: name unknown: " + cmp.Or(pe.Cause, "repository name not known to registry"), true
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
