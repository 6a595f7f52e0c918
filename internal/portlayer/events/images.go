package events

import (
	"context"
	"io"

	"github.com/vchproject/vch/internal/portlayer"
)

// Images wraps an image store so that its successful changes are
// published as image events (Type "image"): pull, import, load, tag, untag
// and delete (the names of Engine API v1.50 "System events"). Reads pass
// through unchanged.
func Images(inner portlayer.Images, log *Log) portlayer.Images {
	return &images{Images: inner, log: log}
}

type images struct {
	portlayer.Images
	log *Log
}

func (i *images) publish(action, id, name string) {
	i.log.Publish(portlayer.Event{Type: "image", Action: action, ID: id, Attributes: map[string]string{"name": name}})
}

func (i *images) Pull(ctx context.Context, ref string, auth portlayer.RegistryAuth, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	img, err := i.Images.Pull(ctx, ref, auth, progress)
	if err == nil {
		i.publish("pull", ref, ref)
	}
	return img, err
}

func (i *images) Import(ctx context.Context, r io.Reader, ref string, opts portlayer.ImportOptions, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	img, err := i.Images.Import(ctx, r, ref, opts, progress)
	if err == nil {
		i.publish("import", img.ID, ref)
	}
	return img, err
}

func (i *images) Load(ctx context.Context, r io.Reader, progress portlayer.ProgressFunc) ([]portlayer.Image, error) {
	imgs, err := i.Images.Load(ctx, r, progress)
	for _, img := range imgs {
		name := img.ID
		if len(img.RepoTags) > 0 {
			name = img.RepoTags[0]
		}
		i.publish("load", img.ID, name)
	}
	return imgs, err
}

func (i *images) Tag(ctx context.Context, src, target string) error {
	err := i.Images.Tag(ctx, src, target)
	if err == nil {
		id := src
		if img, gerr := i.Images.Get(ctx, target); gerr == nil {
			id = img.ID
		}
		i.publish("tag", id, target)
	}
	return err
}

func (i *images) Remove(ctx context.Context, ref string, force bool) ([]portlayer.ImageDelete, error) {
	id := ref
	if img, err := i.Images.Get(ctx, ref); err == nil {
		id = img.ID
	}
	dels, err := i.Images.Remove(ctx, ref, force)
	for _, d := range dels {
		if d.Untagged != "" {
			i.publish("untag", id, d.Untagged)
		}
		if d.Deleted != "" {
			i.publish("delete", d.Deleted, d.Deleted)
		}
	}
	return dels, err
}
