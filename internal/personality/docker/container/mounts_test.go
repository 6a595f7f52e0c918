package container

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"

	"github.com/vchproject/vch/internal/portlayer"
)

func vol(src, dst string) portlayer.MountSpec {
	return portlayer.MountSpec{Type: portlayer.MountVolume, Source: src, Target: dst}
}

func noLookup(context.Context, string) (portlayer.Container, error) {
	return portlayer.Container{}, errdefs.ErrNotFound
}

func TestParseMounts(t *testing.T) {
	ro := func(m portlayer.MountSpec) portlayer.MountSpec { m.ReadOnly = true; return m }
	noCopy := func(m portlayer.MountSpec) portlayer.MountSpec { m.NoCopy = true; return m }
	tmpfs := func(dst, opts string) portlayer.MountSpec {
		return portlayer.MountSpec{Type: portlayer.MountTmpfs, Target: dst, Options: opts}
	}
	tests := []struct {
		name    string
		volumes []string
		hc      container.HostConfig
		want    []portlayer.MountSpec
	}{
		{name: "none", want: []portlayer.MountSpec{}},
		{name: "named, read-only and nocopy", hc: container.HostConfig{Binds: []string{"data:/data", "cfg:/etc/app/:ro", "n3:/c:nocopy", "n4:/d:rw,z"}},
			want: []portlayer.MountSpec{noCopy(vol("n3", "/c")), vol("n4", "/d"), vol("data", "/data"), ro(vol("cfg", "/etc/app"))}},
		{name: "anonymous from -v and image VOLUME", volumes: []string{"/anon", "/img/vol/"},
			want: []portlayer.MountSpec{vol("", "/anon"), vol("", "/img/vol")}},
		{name: "a bind replaces a VOLUME at its destination", volumes: []string{"/data"}, hc: container.HostConfig{Binds: []string{"named:/data"}},
			want: []portlayer.MountSpec{vol("named", "/data")}},
		{name: "tmpfs replaces a VOLUME", volumes: []string{"/x"}, hc: container.HostConfig{Tmpfs: map[string]string{"/x": "size=1m"}},
			want: []portlayer.MountSpec{tmpfs("/x", "noexec,nosuid,nodev,size=1m")}},
		{name: "host binds", hc: container.HostConfig{
			Binds:  []string{"/srv/data/:/data", "/etc/app:/cfg:ro,rprivate"},
			Mounts: []mount.Mount{{Type: mount.TypeBind, Source: "/srv/m", Target: "/m", ReadOnly: true, BindOptions: &mount.BindOptions{CreateMountpoint: true}}, {Type: mount.TypeBind, Source: "/srv/n", Target: "/n"}},
		}, want: []portlayer.MountSpec{
			{Type: portlayer.MountBind, Source: "/etc/app", Target: "/cfg", ReadOnly: true, CreateHostDir: true},
			{Type: portlayer.MountBind, Source: "/srv/data", Target: "/data", CreateHostDir: true},
			{Type: portlayer.MountBind, Source: "/srv/m", Target: "/m", ReadOnly: true, CreateHostDir: true},
			{Type: portlayer.MountBind, Source: "/srv/n", Target: "/n"},
		}},
		{name: "--mount volume and tmpfs", hc: container.HostConfig{Mounts: []mount.Mount{
			{Type: mount.TypeVolume, Source: "mv", Target: "/m", ReadOnly: true, VolumeOptions: &mount.VolumeOptions{NoCopy: true, Labels: map[string]string{"a": "b"}, DriverConfig: &mount.Driver{Name: "local", Options: map[string]string{"size": "10m"}}}},
			{Type: mount.TypeVolume, Target: "/anon", ReadOnly: true},
			{Type: mount.TypeTmpfs, Target: "/t", TmpfsOptions: &mount.TmpfsOptions{SizeBytes: 2 << 20, Mode: 0o1770, Options: [][]string{{"exec"}}}},
			{Type: mount.TypeTmpfs, Target: "/t2", ReadOnly: true, TmpfsOptions: &mount.TmpfsOptions{SizeBytes: 1000}},
		}},
			want: []portlayer.MountSpec{
				ro(vol("", "/anon")),
				{Type: portlayer.MountVolume, Source: "mv", Target: "/m", ReadOnly: true, NoCopy: true, VolumeLabels: map[string]string{"a": "b"}, VolumeOptions: map[string]string{"size": "10m"}},
				tmpfs("/t", "noexec,nosuid,nodev,mode=1770,size=2m,exec"),
				ro(tmpfs("/t2", "noexec,nosuid,nodev,ro,size=1000")),
			}},
		{name: "--mount image", hc: container.HostConfig{Mounts: []mount.Mount{
			{Type: mount.TypeImage, Source: "busybox", Target: "/img/"},
			{Type: mount.TypeImage, Source: "app:1", Target: "/etc/app", ImageOptions: &mount.ImageOptions{Subpath: "srv/app"}},
		}},
			// Always read-only, never copied up; the create resolves
			// Source to the image's ID.
			want: []portlayer.MountSpec{
				{Type: portlayer.MountImage, Source: "app:1", Target: "/etc/app", ReadOnly: true, NoCopy: true, Subpath: "srv/app"},
				{Type: portlayer.MountImage, Source: "busybox", Target: "/img", ReadOnly: true, NoCopy: true},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &container.Config{}
			if tt.volumes != nil {
				cfg.Volumes = map[string]struct{}{}
				for _, v := range tt.volumes {
					cfg.Volumes[v] = struct{}{}
				}
			}
			got, err := parseMounts(t.Context(), cfg, &tt.hc, noLookup)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseMounts\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseMountsErrors(t *testing.T) {
	tests := []struct {
		name    string
		volumes []string
		hc      container.HostConfig
		code    int
		msg     string
	}{
		{name: "relative destination", hc: container.HostConfig{Binds: []string{"lv:rel"}}, code: 400,
			msg: `invalid volume specification: 'lv:rel': invalid mount config for type "volume": invalid mount path: 'rel' mount path must be absolute`},
		{name: "root destination", hc: container.HostConfig{Binds: []string{"lv:/"}}, code: 400,
			msg: `invalid volume specification: 'lv:/': invalid mount config for type "volume": invalid specification: destination can't be '/'`},
		{name: "bad mode", hc: container.HostConfig{Binds: []string{"lv:/x:bogus"}}, code: 400, msg: "invalid mode: bogus"},
		{name: "two rw modes", hc: container.HostConfig{Binds: []string{"lv:/x:ro,rw"}}, code: 400, msg: "invalid mode: ro,rw"},
		{name: "destination and mode only", hc: container.HostConfig{Binds: []string{"/x:ro"}}, code: 400, msg: "invalid volume specification: '/x:ro'"},
		{name: "too many parts", hc: container.HostConfig{Binds: []string{"a:/b:ro:d"}}, code: 400, msg: "invalid volume specification: 'a:/b:ro:d'"},
		{name: "empty source", hc: container.HostConfig{Binds: []string{":/x"}}, code: 400, msg: "invalid volume specification: ':/x'"},
		{name: "bad volume name", hc: container.HostConfig{Binds: []string{"b/c:/x"}}, code: 400,
			msg: `create b/c: "b/c" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`},
		{name: "one-letter volume name", hc: container.HostConfig{Binds: []string{"a:/x"}}, code: 400,
			msg: "create a: volume name is too short, names should be at least two alphanumeric characters"},
		{name: "bind nocopy", hc: container.HostConfig{Binds: []string{"/host/dir:/x:nocopy"}}, code: 400, msg: `invalid mount config for type "bind": field VolumeOptions must not be specified`},
		{name: "bind to root", hc: container.HostConfig{Binds: []string{"/host/dir:/"}}, code: 400, msg: `invalid volume specification: '/host/dir:/': invalid mount config for type "bind": invalid specification: destination can't be '/'`},
		{name: "--mount bind relative", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeBind, Source: "rel", Target: "/x"}}}, code: 400, msg: `invalid mount config for type "bind": invalid mount path: 'rel' mount path must be absolute`},
		{name: "--mount bind without source", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeBind, Target: "/x"}}}, code: 400, msg: `invalid mount config for type "bind": field Source must not be empty`},
		{name: "--mount bind propagation", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeBind, Source: "/h", Target: "/x", BindOptions: &mount.BindOptions{Propagation: "sideways"}}}}, code: 400, msg: "invalid propagation mode: sideways"},
		{name: "duplicate -v", hc: container.HostConfig{Binds: []string{"a1:/x", "a2:/x/"}}, code: 400, msg: "Duplicate mount point: /x"},
		{name: "-v and --mount", hc: container.HostConfig{Binds: []string{"a1:/x"}, Mounts: []mount.Mount{{Type: mount.TypeVolume, Target: "/x"}}}, code: 400, msg: "Duplicate mount point: /x"},
		{name: "-v and --tmpfs", hc: container.HostConfig{Binds: []string{"a1:/x"}, Tmpfs: map[string]string{"/x": ""}}, code: 400, msg: "Duplicate mount point: /x"},
		{name: "tmpfs relative", hc: container.HostConfig{Tmpfs: map[string]string{"rel": ""}}, code: 400, msg: "invalid mount path: 'rel' mount path must be absolute"},
		{name: "--mount tmpfs with source", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeTmpfs, Source: "foo", Target: "/x"}}}, code: 400,
			msg: `invalid mount config for type "tmpfs": field Source must not be specified`},
		{name: "--mount tmpfs relative", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeTmpfs, Target: "rel"}}}, code: 400,
			msg: `invalid mount config for type "tmpfs": invalid mount path: 'rel' mount path must be absolute`},
		{name: "--mount without target", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: "v1"}}}, code: 400,
			msg: `invalid mount config for type "volume": field Target must not be empty`},
		{name: "--mount tmpfs bad option", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeTmpfs, Target: "/x", TmpfsOptions: &mount.TmpfsOptions{Options: [][]string{{"suid"}}}}}}, code: 400,
			msg: `invalid mount config for type "tmpfs": invalid option: suid`},
		{name: "volume driver", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: "v1", Target: "/x", VolumeOptions: &mount.VolumeOptions{DriverConfig: &mount.Driver{Name: "foo"}}}}}, code: 404,
			msg: `create v1: error looking up volume plugin foo: plugin "foo" not found`},
		{name: "--volume-driver", hc: container.HostConfig{Binds: []string{"v1:/x"}, VolumeDriver: "foo"}, code: 404, msg: `plugin "foo" not found`},
		{name: "VOLUME relative", volumes: []string{"rel"}, code: 400, msg: "invalid mount path: 'rel' mount path must be absolute"},
		{name: "--mount image without source", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeImage, Target: "/x"}}}, code: 400,
			msg: `invalid mount config for type "image": field Source must not be empty`},
		{name: "--mount image with volume options", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeImage, Source: "busybox", Target: "/x", VolumeOptions: &mount.VolumeOptions{}}}}, code: 400,
			msg: `invalid mount config for type "image": field VolumeOptions must not be specified`},
		{name: "--mount image with bind options", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeImage, Source: "busybox", Target: "/x", BindOptions: &mount.BindOptions{}}}}, code: 400,
			msg: `invalid mount config for type "image": field BindOptions must not be specified`},
		{name: "--mount image subpath escapes", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeImage, Source: "busybox", Target: "/x", ImageOptions: &mount.ImageOptions{Subpath: "../etc"}}}}, code: 400,
			msg: `invalid mount config for type "image": subpath must be a relative path within the volume`},
		{name: "--mount volume with image options", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: "v1", Target: "/x", ImageOptions: &mount.ImageOptions{}}}}, code: 400,
			msg: `invalid mount config for type "volume": field ImageOptions must not be specified`},
		{name: "volumes-from missing", hc: container.HostConfig{VolumesFrom: []string{"nosuch"}}, code: 400, msg: "No such container: nosuch"},
		{name: "volumes-from bad mode", hc: container.HostConfig{VolumesFrom: []string{"c:nocopy"}}, code: 400, msg: "invalid mode: nocopy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &container.Config{Volumes: map[string]struct{}{}}
			for _, v := range tt.volumes {
				cfg.Volumes[v] = struct{}{}
			}
			_, err := parseMounts(t.Context(), cfg, &tt.hc, noLookup)
			if err == nil {
				t.Fatal("parseMounts succeeded")
			}
			if code := statusOf(err); code != tt.code || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %d %q, want %d containing %q", code, err, tt.code, tt.msg)
			}
		})
	}
}

// statusOf maps an error class as the server's table does, for these tests.
func statusOf(err error) int {
	switch {
	case errdefs.IsNotFound(err):
		return http.StatusNotFound
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	case errdefs.IsNotImplemented(err):
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

func TestVolumesFrom(t *testing.T) {
	src := portlayer.Container{ID: "c1", Spec: portlayer.ContainerSpec{Mounts: []portlayer.MountSpec{
		{Type: portlayer.MountVolume, Source: "aaa", Target: "/a", Anonymous: true},
		{Type: portlayer.MountVolume, Source: "named", Target: "/n", ReadOnly: true},
		{Type: portlayer.MountTmpfs, Target: "/t"},
	}}}
	img := portlayer.MountSpec{Type: portlayer.MountImage, Source: "sha256:" + strings.Repeat("ab", 32), Target: "/img", ReadOnly: true, NoCopy: true, Subpath: "etc"}
	withImage := portlayer.Container{ID: "c2", Spec: portlayer.ContainerSpec{Mounts: []portlayer.MountSpec{img}}}
	lookup := func(_ context.Context, id string) (portlayer.Container, error) {
		switch id {
		case "data":
			return src, nil
		case "imgs":
			return withImage, nil
		}
		return portlayer.Container{}, errdefs.ErrNotFound
	}
	for _, tc := range []struct {
		from  string
		binds []string
		want  []portlayer.MountSpec
	}{
		{"data", nil, []portlayer.MountSpec{{Type: portlayer.MountVolume, Source: "aaa", Target: "/a", Anonymous: true}, {Type: portlayer.MountVolume, Source: "named", Target: "/n", ReadOnly: true}}},
		{"data:rw", nil, []portlayer.MountSpec{{Type: portlayer.MountVolume, Source: "aaa", Target: "/a", Anonymous: true}, {Type: portlayer.MountVolume, Source: "named", Target: "/n"}}},
		{"data:ro", []string{"other:/a"}, []portlayer.MountSpec{vol("other", "/a"), {Type: portlayer.MountVolume, Source: "named", Target: "/n", ReadOnly: true}}},
		// Image mounts come along too, as dockerd copies every mount
		// point of the source (daemon registerMountPoints).
		{"imgs", nil, []portlayer.MountSpec{img}},
	} {
		t.Run(tc.from, func(t *testing.T) {
			got, err := parseMounts(t.Context(), &container.Config{}, &container.HostConfig{VolumesFrom: []string{tc.from}, Binds: tc.binds}, lookup)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseMounts = %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

type fakeVolumes map[string]portlayer.Volume

func (f fakeVolumes) InspectVolume(_ context.Context, name string) (portlayer.Volume, error) {
	if v, ok := f[name]; ok {
		return v, nil
	}
	return portlayer.Volume{}, fmt.Errorf("get %s: no such volume: %w", name, errdefs.ErrNotFound)
}

func TestMountPoints(t *testing.T) {
	c := portlayer.Container{Spec: portlayer.ContainerSpec{Mounts: []portlayer.MountSpec{
		vol("n1", "/a"), {Type: portlayer.MountVolume, Source: "n2", Target: "/b", ReadOnly: true},
		{Type: portlayer.MountVolume, Source: "abc", Target: "/c", Anonymous: true},
		{Type: portlayer.MountTmpfs, Target: "/t1"}, {Type: portlayer.MountTmpfs, Target: "/t2"},
		{Type: portlayer.MountBind, Source: "/srv/h", Target: "/h", ReadOnly: true},
		{Type: portlayer.MountImage, Source: "sha256:" + strings.Repeat("ab", 32), Target: "/img", ReadOnly: true, NoCopy: true},
	}}}
	hc := &container.HostConfig{
		Binds:  []string{"n1:/a", "n2:/b:ro", "/srv/h:/h:ro"},
		Mounts: []mount.Mount{{Type: mount.TypeTmpfs, Target: "/t2/"}, {Type: mount.TypeImage, Source: "app:1", Target: "/img/"}},
		Tmpfs:  map[string]string{"/t1": ""},
	}
	vols := fakeVolumes{"n1": {Mountpoint: "/v/n1"}, "n2": {Mountpoint: "/v/n2"}, "abc": {Mountpoint: "/v/abc"}}
	got := mountPoints(t.Context(), c, hc, vols)
	want := []container.MountPoint{
		{Type: mount.TypeVolume, Name: "n1", Source: "/v/n1/_data", Destination: "/a", Driver: "local", Mode: "z", RW: true},
		{Type: mount.TypeVolume, Name: "n2", Source: "/v/n2/_data", Destination: "/b", Driver: "local", Mode: "ro", RW: false},
		{Type: mount.TypeVolume, Name: "abc", Source: "/v/abc/_data", Destination: "/c", Driver: "local", RW: true},
		{Type: mount.TypeBind, Source: "/srv/h", Destination: "/h", Mode: "ro", RW: false, Propagation: "rprivate"},
		// dockerd names an image mount by the reference given.
		{Type: mount.TypeImage, Name: "app:1", Destination: "/img", RW: false, Propagation: "rprivate"},
		{Type: mount.TypeTmpfs, Destination: "/t2", RW: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mountPoints\n got %+v\nwant %+v", got, want)
	}
}
