package storage

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
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
		return nil, fmt.Errorf("storage: invalid reference format %q: %w", ref, errdefs.ErrInvalidArgument)
	}
	if _, ok := named.(reference.Digested); ok {
		return nil, fmt.Errorf("storage: refusing to create a tag with a digest reference %q: %w", ref, errdefs.ErrInvalidArgument)
	}
	tagged, ok := reference.TagNameOnly(named).(reference.NamedTagged)
	if !ok {
		return nil, fmt.Errorf("storage: invalid reference format %q: %w", ref, errdefs.ErrInvalidArgument)
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
