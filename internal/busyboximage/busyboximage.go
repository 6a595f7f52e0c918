// Package busyboximage builds a small, deterministic busybox container image
// from Debian's busybox-static binary, for tests and demos on machines with
// no registry access.
//
// It owns the image's content (one layer: /bin/busybox, a hard link per
// applet, /etc/passwd and /etc/group, the usual empty directories) and its
// config (Cmd ["sh"], Docker's default PATH, linux/amd64). It does not store
// or push images: [WriteArchive] writes a `docker save` archive, and callers
// that want a registry push the returned image themselves.
package busyboximage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultBusybox is where Debian's busybox-static package installs the binary.
const DefaultBusybox = "/bin/busybox"

// DebianPackage is the Debian package that provides [DefaultBusybox].
const DebianPackage = "busybox-static"

// DefaultPath is the PATH Docker sets for images that have none (moby's
// oci.DefaultPathEnv for Linux).
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// epoch is every file's and the image's creation time, so the image ID
// depends only on the busybox binary.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// passwd and group are the accounts of Docker Hub's busybox image (its
// buildroot skeleton), so that programs and tests written against that
// image find the users and groups they name (daemon, www-data, staff…).
const passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`

const group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nobody:x:65534:
`

// Build returns a one-layer linux/amd64 image holding the static busybox at
// busyboxPath as /bin/busybox, with a hard link for every applet that
// `busybox --list-full` names. The result is deterministic: the same binary
// always gives the same image ID (config digest).
//
// Errors: NotFound (naming the Debian package) if busyboxPath does not
// exist; InvalidArgument if it is not a runnable busybox.
func Build(busyboxPath string) (v1.Image, error) {
	bin, err := os.ReadFile(busyboxPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("busyboximage: %s not found (install the Debian package %s): %w", busyboxPath, DebianPackage, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("busyboximage: read busybox: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, busyboxPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busyboximage: %s --list-full: %w: %w", busyboxPath, errdefs.ErrInvalidArgument, err)
	}
	applets := strings.Fields(string(out))
	if len(applets) == 0 || !slices.Contains(applets, "bin/sh") {
		return nil, fmt.Errorf("busyboximage: %s lists no sh applet: %w", busyboxPath, errdefs.ErrInvalidArgument)
	}

	layerTar, err := layerContent(bin, applets)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("busyboximage: layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "busybox-image: " + path.Base(busyboxPath) + " from " + DebianPackage,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("busyboximage: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("busyboximage: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{DefaultPath}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("busyboximage: config: %w", err)
	}
	return img, nil
}

// layerContent is the uncompressed layer tar, entries in a fixed order.
func layerContent(bin []byte, applets []string) ([]byte, error) {
	dirs := map[string]fs.FileMode{
		"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555,
		"root": 0o700, "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755,
		"usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755, "var/spool": 0o755,
		"var/spool/mail": 0o755, "var/www": 0o755,
	}
	for _, a := range applets {
		for d := path.Dir(a); d != "."; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
	}
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	slices.Sort(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	write := func(h *tar.Header, body []byte) error {
		h.ModTime = epoch
		h.Uname, h.Gname = "root", "root"
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	for _, d := range names {
		m := dirs[d]
		mode := int64(m.Perm())
		if m&fs.ModeSticky != 0 || m == 0o1777 {
			mode = int64(m & 0o7777)
		}
		if err := write(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode}, nil); err != nil {
			return nil, fmt.Errorf("busyboximage: tar: %w", err)
		}
	}
	files := []struct {
		name string
		mode int64
		body []byte
	}{
		{"bin/busybox", 0o755, bin},
		{"etc/group", 0o644, []byte(group)},
		{"etc/passwd", 0o644, []byte(passwd)},
	}
	for _, f := range files {
		if err := write(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.body))}, f.body); err != nil {
			return nil, fmt.Errorf("busyboximage: tar: %w", err)
		}
	}
	links := slices.Clone(applets)
	slices.Sort(links)
	links = slices.Compact(links)
	for _, a := range links {
		if a == "bin/busybox" {
			continue
		}
		if err := write(&tar.Header{Typeflag: tar.TypeLink, Name: a, Linkname: "bin/busybox", Mode: 0o755}, nil); err != nil {
			return nil, fmt.Errorf("busyboximage: tar: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("busyboximage: tar: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteArchive writes img to w as a `docker save` archive (docker-archive
// format: manifest.json, the config blob and one tar per layer) with RepoTags
// [tag]. tag is a Docker reference such as "busybox:latest"; InvalidArgument
// if it does not parse.
func WriteArchive(w io.Writer, img v1.Image, tag string) error {
	t, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("busyboximage: tag %q: %w: %w", tag, errdefs.ErrInvalidArgument, err)
	}
	if err := tarball.Write(t, img, w); err != nil {
		return fmt.Errorf("busyboximage: write archive: %w", err)
	}
	return nil
}
