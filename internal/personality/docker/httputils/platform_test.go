package httputils

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPlatforms(t *testing.T) {
	for _, s := range []string{"linux", "linux/amd64", "linux/x86_64", "amd64", "linux/amd64/v2"} {
		p, err := ParsePlatform(s)
		if err != nil || !RunsOnHost(p) {
			t.Errorf("%q: %+v, %v; want a platform that runs here", s, p, err)
		}
	}
	if p, err := ParsePlatform("linux/arm64"); err != nil || RunsOnHost(p) {
		t.Errorf("linux/arm64: %+v, %v; want parsed, not runnable here", p, err)
	}
	if _, err := ParsePlatform("foobar"); err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "unknown operating system or architecture") {
		t.Errorf("foobar: %v", err)
	}
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	if !PlatformMatches(amd64, amd64) || PlatformMatches(ocispec.Platform{OS: "linuxDifferentOS", Architecture: "amd64"}, amd64) ||
		PlatformMatches(ocispec.Platform{OS: "linux", Architecture: "amd64DifferentArch"}, amd64) {
		t.Error("PlatformMatches: want only linux/amd64 to match linux/amd64")
	}
	if got := FormatPlatform(ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}); got != "linux/arm/v7" {
		t.Errorf("FormatPlatform = %q", got)
	}
}
