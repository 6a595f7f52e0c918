// Package storage is the image store of the port layer: it implements
// [portlayer.Images] and turns images into the read-only ext4 disks that
// container VMs boot from.
//
// # What it owns
//
// Everything under [Config.Root], and nothing outside it:
//
//	Root/
//	  oci/              OCI image layout (image-spec image-layout.md):
//	    oci-layout        layout version marker
//	    index.json        one descriptor per stored image manifest
//	    blobs/sha256/     manifests, configs and layers, once each by digest;
//	                      layers are shared between images
//	  images.json       the store's index: image records (ID, manifest
//	                    digest, tags, repo digests, size) and per-layer facts
//	                    (diff ID, uncompressed size); rewritten atomically
//	  rootfs/<hex>.ext4 one flattened, sparse ext4 disk per image, built on
//	                    first use by [Store.Rootfs]
//	  blank.ext4        an empty ext4 disk (16 MiB, sparse), made on first
//	                    use by [Store.BlankRootfs]
//	  tmp/              work files (downloads, unpacked trees); emptied by New
//
// Image IDs are config digests (OCI image-spec config.md "ImageID"),
// "sha256:" plus 64 hex digits. References are kept normalised
// ("docker.io/library/busybox:latest") and shown in familiar form, Docker
// Hub's domain and "library/" left out ("busybox:latest").
//
// # Verbs
//
// Pull (registry, through go-containerregistry), Import (one-layer tar),
// Load (`docker save` archives), Get, List, Tag, Remove (untag and delete
// rules, see [Store.Remove], with garbage collection of unreferenced
// blobs) and Rootfs.
//
// # What it does not own
//
// Container writable disks (compute layers them over the rootfs disk),
// volumes and copies into containers; tar extraction itself is in the
// archive sub-package. It never deletes an image that [Config.InUse]
// reports as used by a container.
//
// Errors are classified with github.com/containerd/errdefs. Lookups, the
// refusals of a removal and a pull's not-found, denied and platform errors
// are *portlayer.Error values (Kind image, and a Reason but for lookups)
// that front ends word themselves; others, push's and login's among them,
// carry their class and a text.
package storage
