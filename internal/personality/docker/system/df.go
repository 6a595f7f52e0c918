package system

import (
	"context"
	"fmt"
	"net/http"

	"github.com/moby/moby/api/types/build"
	ctrtypes "github.com/moby/moby/api/types/container"
	imgtypes "github.com/moby/moby/api/types/image"
	voltypes "github.com/moby/moby/api/types/volume"

	"github.com/vchproject/vch/internal/personality/docker/container"
	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/personality/docker/image"
	"github.com/vchproject/vch/internal/personality/docker/volume"
	"github.com/vchproject/vch/internal/portlayer"
)

// volumeLister is the part of portlayer.Volumes that /system/df uses.
type volumeLister interface {
	ListVolumes(ctx context.Context) ([]portlayer.Volume, error)
}

// WithVolumes lets GET /system/df report volumes; without it the list is
// empty.
func (s *Router) WithVolumes(v volumeLister) *Router {
	s.volumes = v
	return s
}

// diskUsage is GET /system/df's answer in the shape of API ≤ 1.51 (the
// docker CLI 28 reads these fields; moby's newer *Usage fields came later).
type diskUsage struct {
	LayersSize int64
	Images     []*imgtypes.Summary
	Containers []*ctrtypes.Summary
	Volumes    []*voltypes.Volume
	BuildCache []*build.CacheRecord
}

// df serves GET /system/df?type= (Engine API v1.50 "Get data usage
// information"). Images carry Size, SharedSize (bytes of layers another
// image shares, layers being stored once by diff ID) and Containers (how
// many containers use them); LayersSize is the distinct layers' total.
// Containers carry SizeRw 0: a container's writable layer is a qcow2
// overlay whose use is not measured yet. Volumes carry UsageData: Size is
// the space the sparse volume disk takes on the host, RefCount the
// containers that mount it. type= (image, container, volume, build-cache)
// limits the answer, as dockerd does.
func (s *Router) df(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	want := map[string]bool{}
	for _, t := range r.Form["type"] {
		switch t {
		case "image", "container", "volume", "build-cache":
			want[t] = true
		default:
			return httputils.InvalidArgument("unknown object type: %s", t)
		}
	}
	all := len(want) == 0
	out := diskUsage{}
	cs, err := s.containers.List(ctx)
	if err != nil {
		return fmt.Errorf("df: containers: %w", err)
	}
	if all || want["image"] {
		imgs, err := s.images.List(ctx)
		if err != nil {
			return fmt.Errorf("df: images: %w", err)
		}
		shared, layers := image.SharedSizes(imgs)
		counts := image.ContainerCounts(cs)
		out.LayersSize = layers
		out.Images = []*imgtypes.Summary{}
		for _, img := range imgs {
			sum := image.Summary(img)
			sum.SharedSize = shared[img.ID]
			sum.Containers = counts[img.ID]
			out.Images = append(out.Images, &sum)
		}
	}
	if all || want["container"] {
		out.Containers = []*ctrtypes.Summary{}
		now := s.now()
		for _, c := range cs {
			sum := container.SummaryOf(c, now)
			out.Containers = append(out.Containers, &sum)
		}
	}
	if all || want["volume"] {
		out.Volumes = []*voltypes.Volume{}
		if s.volumes != nil {
			vs, err := s.volumes.ListVolumes(ctx)
			if err != nil {
				return fmt.Errorf("df: volumes: %w", err)
			}
			refs := map[string]int64{}
			for _, c := range cs {
				for _, m := range c.Spec.Mounts {
					if m.Type == portlayer.MountVolume {
						refs[m.Source]++
					}
				}
			}
			for _, v := range vs {
				rv := volume.Render(v)
				rv.UsageData = &voltypes.UsageData{Size: v.DiskUsageBytes, RefCount: refs[v.Name]}
				out.Volumes = append(out.Volumes, &rv)
			}
		}
	}
	if all || want["build-cache"] {
		out.BuildCache = []*build.CacheRecord{}
	}
	return httputils.WriteJSON(w, http.StatusOK, out)
}
