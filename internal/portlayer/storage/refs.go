package storage

import (
	"regexp"
	"strings"

	"github.com/distribution/reference"

	"github.com/vchproject/vch/internal/portlayer"
)

var (
	fullHex   = regexp.MustCompile(`^[a-f0-9]{64}$`)
	prefixHex = regexp.MustCompile(`^[a-f0-9]{1,64}$`)
)

// parseTag parses a user's reference for tagging: normalised as
// distribution/reference does (ParseNormalizedNamed), ":latest" added
// when there is no tag. Digest references are refused.
func parseTag(ref string) (reference.NamedTagged, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid reference format %q", ref)
	}
	if _, ok := named.(reference.Digested); ok {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "refusing to create a tag with a digest reference %q", ref)
	}
	tagged, ok := reference.TagNameOnly(named).(reference.NamedTagged)
	if !ok {
		return nil, portlayer.Errorf(portlayer.ClassInvalidArgument, "invalid reference format %q", ref)
	}
	return tagged, nil
}

// familiar shows a normalised reference in familiar form ("busybox:latest").
func familiar(normalised string) string {
	named, err := reference.ParseNormalizedNamed(normalised)
	if err != nil {
		return normalised
	}
	return reference.FamiliarString(named)
}

// familiarAll maps familiar over refs.
func familiarAll(refs []string) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, familiar(r))
	}
	return out
}

// repoOf returns the repository name of a normalised tag or digest reference.
func repoOf(normalised string) string {
	named, err := reference.ParseNormalizedNamed(normalised)
	if err != nil {
		return normalised
	}
	return named.Name()
}

// shortID is an ID's short form: its first 12 hex digits, no "sha256:".
func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
