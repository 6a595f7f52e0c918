package httputils

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// HostPlatform is the platform every container VM runs: linux/amd64.
var HostPlatform = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// ParsePlatform parses an Engine API platform parameter ("linux/amd64",
// "linux", "arm64", "linux/arm/v7") with containerd's rules, normalised
// ("x86_64" is amd64). InvalidArgument with containerd's text otherwise
// ("\"foobar\": unknown operating system or architecture: invalid
// argument"), as dockerd answers.
func ParsePlatform(s string) (ocispec.Platform, error) {
	p, err := platforms.Parse(s)
	if err != nil {
		return ocispec.Platform{}, Classify(errdefs.ErrInvalidArgument, err, err.Error())
	}
	return platforms.Normalize(p), nil
}

// RunsOnHost reports whether an image of platform p runs in a container
// VM: linux/amd64, any variant (v1–v3; the guest CPU is QEMU's).
func RunsOnHost(p ocispec.Platform) bool {
	p = platforms.Normalize(p)
	return p.OS == HostPlatform.OS && p.Architecture == HostPlatform.Architecture
}

// PlatformMatches reports whether an image of platform img satisfies a
// requested platform want, as dockerd matches them on create
// (platforms.Only(want): an armv6 image satisfies armv7).
func PlatformMatches(want, img ocispec.Platform) bool {
	return platforms.Only(want).Match(platforms.Normalize(img))
}

// FormatPlatform is p as dockerd prints it ("linux/amd64", with a
// variant "linux/arm/v7").
func FormatPlatform(p ocispec.Platform) string { return platforms.FormatAll(p) }

// DecodePlatform reads a JSON-encoded OCI platform, the form the image
// save, load and inspect routes take their platform parameters in (API
// 1.48+), with dockerd's checks and texts (api/server/httputils
// DecodePlatform), all InvalidArgument: "failed to parse platform: …",
// "optional platform fields provided, but OS and Architecture are
// missing", "both OS and Architecture must be provided".
func DecodePlatform(s string) (ocispec.Platform, error) {
	var p ocispec.Platform
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return p, Classify(errdefs.ErrInvalidArgument, err, "failed to parse platform: "+err.Error())
	}
	optional := p.Variant != "" || p.OSVersion != "" || len(p.OSFeatures) > 0
	switch {
	case p.OS == "" && p.Architecture == "" && optional:
		return p, InvalidArgument("optional platform fields provided, but OS and Architecture are missing")
	case p.OS == "" || p.Architecture == "":
		return p, InvalidArgument("both OS and Architecture must be provided")
	}
	return p, nil
}

// PlatformMismatch is dockerd's NotFound for an image that exists but not
// for the platform asked (daemon/images GetImage): "image with reference
// REF was found but its platform (HAVE) does not match the specified
// platform (WANT)".
//
// REF is as the client gave it, familiar only when it was canonical
// ("docker.io/library/busybox:latest" is "busybox:latest"), as dockerd
// prints it.
func PlatformMismatch(ref string, have, want ocispec.Platform) error {
	if named, err := reference.ParseNamed(ref); err == nil {
		ref = reference.FamiliarString(named)
	}
	return Classify(errdefs.ErrNotFound, nil, fmt.Sprintf("image with reference %s was found but its platform (%s) does not match the specified platform (%s)",
		ref, FormatPlatform(have), FormatPlatform(want)))
}
