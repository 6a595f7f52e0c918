//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vchproject/vch/internal/busyboximage"
	"github.com/vchproject/vch/internal/testenv"
)

// volumeImage loads an image "<name>:latest": busybox plus /srv/app owned
// by 1000:1001, mode 0750, holding config (0640, "from-image") and a
// symlink to it, declared as the image's VOLUME.
func volumeImage(t *testing.T, name string) string {
	t.Helper()
	need(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		hdr  tar.Header
		body string
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "srv/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "srv/app/", Mode: 0o750, Uid: 1000, Gid: 1001}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "srv/app/config", Mode: 0o640, Uid: 1000, Gid: 1001}, "from-image\n"},
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "srv/app/link", Linkname: "config"}, ""},
	}
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.body))
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	base, err := busyboximage.Build(busyboximage.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Volumes = map[string]struct{}{"/srv/app": {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	ref := name + ":latest"
	if err := busyboximage.WriteArchive(&archive, img, ref); err != nil {
		t.Fatal(err)
	}
	if r := dockerIn(t, archive.Bytes(), "load"); r.code != 0 {
		t.Fatalf("docker load: %s %s", r.stdout, r.stderr)
	}
	return ref
}

type mountJSON struct {
	Type, Name, Source, Destination, Driver, Mode string
	RW                                            bool
}

func inspectMounts(t *testing.T, ctr string) map[string]mountJSON {
	t.Helper()
	var ms []mountJSON
	if err := json.Unmarshal([]byte(ok(t, "inspect", "--format", "{{json .Mounts}}", ctr)), &ms); err != nil {
		t.Fatal(err)
	}
	out := map[string]mountJSON{}
	for _, m := range ms {
		out[m.Destination] = m
	}
	return out
}

func volumeNames(t *testing.T, args ...string) []string {
	t.Helper()
	return strings.Fields(ok(t, append([]string{"volume", "ls", "-q"}, args...)...))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestVolumeCommands: docker volume create/inspect/ls/rm/prune and their
// errors, without booting a VM.
func TestVolumeCommands(t *testing.T) {
	t.Parallel()
	u := uniqueName(t)
	name := "v-" + u
	ok(t, "volume", "create", "--label", "test="+u, "--label", "k=v", "-o", "size=64m", name)
	var v struct {
		Name, Driver, Mountpoint, Scope, CreatedAt string
		Labels, Options                            map[string]string
	}
	if err := json.Unmarshal([]byte(ok(t, "volume", "inspect", "--format", "{{json .}}", name)), &v); err != nil {
		t.Fatal(err)
	}
	if v.Name != name || v.Driver != "local" || v.Scope != "local" || v.Labels["k"] != "v" || v.Options["size"] != "64m" || !strings.HasSuffix(v.Mountpoint, "/volumes/"+name+"/_data") {
		t.Errorf("inspect = %+v", v)
	}
	if _, err := time.Parse(time.RFC3339, v.CreatedAt); err != nil {
		t.Errorf("CreatedAt %q: %v", v.CreatedAt, err)
	}
	// Creating it again is a no-op, as in Docker.
	ok(t, "volume", "create", name)
	if got := volumeNames(t, "--filter", "label=test="+u); len(got) != 1 || got[0] != name {
		t.Errorf("ls --filter label = %v", got)
	}
	if got := volumeNames(t, "--filter", "name="+u, "--filter", "dangling=true"); !contains(got, name) {
		t.Errorf("ls --filter dangling=true = %v, want %s", got, name)
	}
	// An anonymous-labelled volume, unused: pruned by default, the named
	// one only with --all (API 1.42 on; before it, as dockerd, prune took
	// named volumes too: the 20.10 CLI speaks 1.41 and has no --all).
	anon := "anon-" + u
	ok(t, "volume", "create", "--label", "test="+u, "--label", "com.docker.volume.anonymous=", anon)
	// A volume created without a name is anonymous, as dockerd makes it.
	unnamed := strings.TrimSpace(ok(t, "volume", "create", "--label", "test="+u))
	if l := ok(t, "volume", "inspect", "-f", "{{json .Labels}}", unnamed); !strings.Contains(l, `"com.docker.volume.anonymous":""`) {
		t.Errorf("labels of a volume created without a name: %s", l)
	}
	if cliMajor() >= 23 {
		out := ok(t, "volume", "prune", "-f", "--filter", "label=test="+u)
		if !strings.Contains(out, anon) || strings.Contains(out, name+"\n") {
			t.Errorf("prune without --all:\n%s", out)
		}
		out = ok(t, "volume", "prune", "-f", "--all", "--filter", "label=test="+u)
		if !strings.Contains(out, name) {
			t.Errorf("prune --all:\n%s", out)
		}
	} else {
		out := ok(t, "volume", "prune", "-f", "--filter", "label=test="+u)
		if !strings.Contains(out, anon) || !strings.Contains(out, name+"\n") {
			t.Errorf("prune over API 1.41 (named volumes too):\n%s", out)
		}
	}
	if got := volumeNames(t, "--filter", "label=test="+u); len(got) != 0 {
		t.Errorf("volumes left after prune: %v", got)
	}

	// The daemon's text; the 20.10 CLI words a missing volume itself.
	noVolume := "get nosuch-" + u + ": no such volume"
	if cliMajor() < 23 {
		noVolume = "No such volume: nosuch-" + u
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"volume", "create", "a"}, "create a: volume name is too short, names should be at least two alphanumeric characters"},
		{[]string{"volume", "create", "b/c"}, `create b/c: "b/c" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed`},
		{[]string{"volume", "create", "-o", "foo=1", "x-" + u}, `create x-` + u + `: invalid option: "foo"`},
		{[]string{"volume", "create", "-o", "size=1k", "x-" + u}, "a volume's size must be between"},
		{[]string{"volume", "create", "-d", "nfs", "x-" + u}, `error looking up volume plugin nfs: plugin "nfs" not found`},
		{[]string{"volume", "inspect", "nosuch-" + u}, noVolume},
		{[]string{"volume", "rm", "nosuch-" + u}, noVolume},
		{[]string{"run", "--rm", "-v", "lv:rel", "busybox", "true"}, "invalid mount path: 'rel' mount path must be absolute"},
		{[]string{"run", "--rm", "-v", "x1:/x", "-v", "x2:/x", "busybox", "true"}, "Duplicate mount point: /x"},
		{[]string{"run", "--rm", "-v", "lv:/x:bogus", "busybox", "true"}, "invalid mode: bogus"},
		{[]string{"run", "--rm", "--tmpfs", "rel", "busybox", "true"}, "invalid mount path: 'rel' mount path must be absolute"},
		{[]string{"run", "--rm", "-v", "/etc:/x", "busybox", "true"}, "bind mount of /etc refused: this VCH allows bind mounts under " + env.bindRoot + " only"},
		{[]string{"run", "--rm", "--mount", "type=bind,src=" + env.bindRoot + "/nosuch-" + u + ",dst=/x", "busybox", "true"}, `invalid mount config for type "bind": bind source path does not exist: ` + env.bindRoot + "/nosuch-" + u},
	} {
		r := docker(t, tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("docker %v: exit %d, stderr %q; want an error with %q", tc.args, r.code, r.stderr, tc.msg)
		}
	}
	if got := volumeNames(t, "--filter", "name=x-"+u); len(got) != 0 {
		t.Errorf("failed creates left volumes: %v", got)
	}
}

// TestVolumeData: data written in one container VM is read in the next;
// Docker's copy-up fills a new volume from the image (owner and mode of
// the directory, files, links); :ro is enforced by the guest; --tmpfs,
// --mount type=tmpfs and --read-only behave as in Docker; inspect shows
// Mounts; a volume in use cannot be removed or mounted by a second running
// container; rm -v and --rm remove anonymous volumes only.
func TestVolumeData(t *testing.T) {
	t.Parallel()
	u := uniqueName(t)
	img := volumeImage(t, "volimg-"+u)
	data := "data-" + u
	before := volumeNames(t)

	// VM 1: write to a named volume; the image VOLUME gets an anonymous
	// volume filled from the image.
	c1 := "c1-" + u
	out := ok(t, "run", "--name", c1, "-v", data+":/data", img, "sh", "-c",
		`echo hello > /data/f && stat -c '%u:%g %a' /srv/app /srv/app/config && cat /srv/app/link && ls -A /data`)
	want := "1000:1001 750\n1000:1001 640\nfrom-image\nf\n"
	if out != want {
		t.Errorf("first container printed %q, want %q", out, want)
	}
	ms := inspectMounts(t, c1)
	anon := ms["/srv/app"].Name
	if m := ms["/data"]; m.Type != "volume" || m.Name != data || m.Driver != "local" || !m.RW || m.Mode != "z" || !strings.Contains(m.Source, "/volumes/"+data) {
		t.Errorf("Mounts[/data] = %+v", m)
	}
	if m := ms["/srv/app"]; m.Type != "volume" || len(anon) != 64 || !m.RW {
		t.Errorf("Mounts[/srv/app] = %+v, want an anonymous volume", m)
	}
	if v := ok(t, "volume", "inspect", "--format", "{{json .Labels}}", anon); !strings.Contains(v, "com.docker.volume.anonymous") {
		t.Errorf("anonymous volume labels %s", v)
	}
	id := strings.TrimSpace(ok(t, "inspect", "--format", "{{.Id}}", c1))
	r := docker(t, "volume", "rm", data)
	if r.code == 0 || !strings.Contains(r.stderr, "remove "+data+": volume is in use - ["+id+"]") {
		t.Errorf("volume rm of a used volume: exit %d, %q", r.code, r.stderr)
	}

	// VM 2: the data is there; :ro is refused by the guest's kernel;
	// tmpfs mounts and a read-only root as in Docker; the anonymous
	// volume of --rm goes with the container.
	script := strings.Join([]string{
		`cat /data/f`,
		`echo x > /data/g || echo ro-refused`,
		`echo x > /rootfile || echo root-refused`,
		`echo x > /etc/hosts || echo hosts-refused`,
		`echo x > /t/f && echo tmpfs-ok`,
		`echo x > /dev/shm/f && echo shm-ok`,
		`echo x > /scratch/f && echo anon-ok`,
		`grep -E ' /t | /t2 ' /proc/mounts | cut -d' ' -f2-4`,
		`stat -c '%a' /t2`,
	}, "; ")
	r = docker(t, "run", "--rm", "-v", data+":/data:ro", "-v", "/scratch", "--read-only",
		"--tmpfs", "/t:size=1m", "--mount", "type=tmpfs,dst=/t2,tmpfs-mode=1770,tmpfs-size=2m", "busybox", "sh", "-c", script)
	want = "hello\nro-refused\nroot-refused\nhosts-refused\ntmpfs-ok\nshm-ok\nanon-ok\n" +
		"/t tmpfs rw,nosuid,nodev,noexec,relatime,size=1024k,inode64\n/t2 tmpfs rw,nosuid,nodev,noexec,relatime,size=2048k,mode=1770,inode64\n1770\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("second container: exit %d\nstdout %q\nwant   %q\nstderr %q", r.code, r.stdout, want, r.stderr)
	}
	if n := strings.Count(r.stderr, "Read-only file system"); n != 3 {
		t.Errorf("stderr %q: want three 'Read-only file system' errors", r.stderr)
	}

	// A volume is one running VM's disk: a second running user is refused.
	holder := "holder-" + u
	ok(t, "run", "-d", "--name", holder, "-v", data+":/data", "busybox", "sleep", "300")
	r = docker(t, "run", "--rm", "-v", data+":/data", "busybox", "true")
	if r.code != 125 || !strings.Contains(r.stderr, `volume "`+data+`" is in use by running container `+holder) {
		t.Errorf("second running user: exit %d, %q", r.code, r.stderr)
	}
	ok(t, "rm", "-f", holder)

	// rm -v removes the anonymous volume, never the named one.
	ok(t, "rm", "-v", c1)
	after := volumeNames(t)
	if contains(after, anon) || !contains(after, data) {
		t.Errorf("after rm -v: anonymous %s listed %v, named %s listed %v", anon, contains(after, anon), data, contains(after, data))
	}
	for _, v := range after {
		if contains(before, v) || v == data {
			continue
		}
		// TestVolumeCommands runs alongside and labels all its volumes.
		if r := docker(t, "volume", "inspect", "-f", `{{index .Labels "test"}}`, v); r.code != 0 || strings.TrimSpace(r.stdout) != "" {
			continue
		}
		t.Errorf("volume %s left behind (an anonymous volume of --rm?)", v)
	}
	ok(t, "volume", "rm", data)
}

// TestVolumeSubpath: --mount volume-subpath as dockerd (moby's
// TestRunMountVolumeSubdir cases): a directory, one reached through a
// link inside the volume, a file, an empty directory filled from the
// image; dockerd's texts for a subpath that is not relative (at create),
// that names nothing (404 at start) and whose links lead out (400).
func TestVolumeSubpath(t *testing.T) {
	needCLI(t, 26, "--mount volume-subpath")
	t.Parallel()
	v := "sub-" + uniqueName(t)
	ok(t, "volume", "create", "--label", "test=subpath", v) // labelled: TestVolumeData looks for strays
	defer docker(t, "volume", "rm", "-f", v)
	ok(t, "run", "--rm", "-v", v+":/volume", "busybox", "sh", "-c",
		"echo foo > /volume/bar.txt && mkdir /volume/bin /volume/subdir /volume/hack && echo world > /volume/subdir/hello.txt && "+
			"ln -s / /volume/hack/root && ln -s ../subdir /volume/hack/good && ln -s root /volume/hack/bad && ln -s /etc /volume/hack/abs")
	mp := strings.TrimSpace(ok(t, "volume", "inspect", "--format", "{{.Mountpoint}}", v))
	mount := func(sub, dst string) string {
		return "type=volume,src=" + v + ",dst=" + dst + ",volume-subpath=" + sub
	}
	for _, tt := range []struct {
		sub, dst string
		cmd      []string
		want     string // stdout; "" when the run must fail
		code     int
		stderr   string
	}{
		{sub: "subdir", dst: "/volume", cmd: []string{"ls", "/volume"}, want: "hello.txt\n"},
		{sub: "hack/good", dst: "/volume", cmd: []string{"ls", "/volume"}, want: "hello.txt\n"},
		{sub: "bin", dst: "/bin", cmd: []string{"ls", "/bin/busybox"}, want: "/bin/busybox\n"},
		{sub: "bar.txt", dst: "/volume", cmd: []string{"cat", "/volume"}, want: "foo\n"},
		{sub: "../../../../../../etc/passwd", dst: "/volume", cmd: []string{"true"}, code: 125,
			stderr: `invalid mount config for type "volume": subpath must be a relative path within the volume`},
		// The CLI exits 127 for a start error that says "no such file or
		// directory", as with dockerd.
		{sub: "not-existing-path", dst: "/volume", cmd: []string{"true"}, code: 127,
			stderr: "cannot access path " + mp + "/not-existing-path: lstat " + mp + "/not-existing-path: no such file or directory"},
		{sub: "hack/root", dst: "/volume", cmd: []string{"true"}, code: 125,
			stderr: "path concatenation escapes the base directory, base: " + mp + ", subpath: hack/root"},
		{sub: "hack/bad", dst: "/volume", cmd: []string{"true"}, code: 125,
			stderr: "path concatenation escapes the base directory, base: " + mp + ", subpath: hack/bad"},
		// dockerd resolves on the host, where /etc is outside the volume.
		{sub: "hack/abs", dst: "/volume", cmd: []string{"true"}, code: 125,
			stderr: "path concatenation escapes the base directory, base: " + mp + ", subpath: hack/abs"},
		{sub: "bar.txt/x", dst: "/volume", cmd: []string{"true"}, code: 125,
			stderr: `error while resolving symlinks in combined path "` + mp + `/bar.txt/x": lstat ` + mp + "/bar.txt/x: not a directory"},
		// A file onto a directory of the image, and the reverse:
		// runc's ENOTDIR with dockerd's hint.
		{sub: "bar.txt", dst: "/etc", cmd: []string{"true"}, code: 125,
			stderr: `error mounting "` + mp + `/bar.txt" to rootfs at "/etc": mount ` + mp + "/bar.txt:/etc (via /proc/self/fd/6), flags: 0x5000: not a directory: unknown: Are you trying to mount a directory onto a file (or vice-versa)?"},
		{sub: "subdir", dst: "/etc/passwd", cmd: []string{"true"}, code: 125,
			stderr: `error mounting "` + mp + `/subdir" to rootfs at "/etc/passwd"`},
	} {
		r := docker(t, append([]string{"run", "--rm", "--mount", mount(tt.sub, tt.dst), "busybox"}, tt.cmd...)...)
		if r.code != tt.code || r.stdout != tt.want || !strings.Contains(r.stderr, tt.stderr) {
			t.Errorf("subpath %q: exit %d stdout %q stderr %q; want %d %q and %q", tt.sub, r.code, r.stdout, r.stderr, tt.code, tt.want, tt.stderr)
		}
	}
	// A file subpath at one of the files the engine writes wins over it,
	// as with dockerd.
	if out := ok(t, "run", "--rm", "--mount", mount("bar.txt", "/etc/hostname"), "busybox", "cat", "/etc/hostname"); out != "foo\n" {
		t.Errorf("subpath at /etc/hostname: %q, want the volume's file", out)
	}
	// docker cp boots the container's mounts too, and says what a start says.
	cpName := uniqueName(t) + "-cp"
	ok(t, "create", "--name", cpName, "--mount", mount("nothere", "/m"), "busybox", "true")
	defer docker(t, "rm", "-f", cpName)
	if r := docker(t, "cp", cpName+":/etc/passwd", "-"); r.code == 0 || !strings.Contains(r.stderr, "cannot access path "+mp+"/nothere: lstat ") || strings.Contains(r.stderr, "/run/vch") {
		t.Errorf("cp with a missing subpath: exit %d %q", r.code, r.stderr)
	}
	if r := docker(t, "run", "--rm", "--mount", "type=volume,dst=/v,volume-subpath=x", "busybox", "true"); r.code != 125 ||
		!strings.Contains(r.stderr, `invalid mount config for type "volume": must not set Subpath when using anonymous volumes`) {
		t.Errorf("subpath of an anonymous volume: exit %d %q", r.code, r.stderr)
	}
	// The copy-up filled the empty directory, not the volume's root.
	if out := ok(t, "run", "--rm", "-v", v+":/volume", "busybox", "ls", "/volume/bin/busybox", "/volume"); out != "/volume/bin/busybox\n\n/volume:\nbar.txt\nbin\nhack\nsubdir\n" {
		t.Errorf("volume after the runs: %q", out)
	}
}

// TestVolumeAtSeveralTargets: one volume mounted at several targets of
// a container (whole, read-only, by subpath) is one filesystem: what is
// written through one target is read through the others, the read-only
// one refuses writes, and the volume is whole afterwards. (It was
// attached as one disk per target, and two mounts of one ext4 image
// corrupted it: "Structure needs cleaning".)
func TestVolumeAtSeveralTargets(t *testing.T) {
	t.Parallel()
	v := "multi-" + uniqueName(t)
	ok(t, "volume", "create", "--label", "test=targets", v)
	defer docker(t, "volume", "rm", "-f", v)
	ok(t, "run", "--rm", "-v", v+":/a", "busybox", "mkdir", "/a/sub")
	r := docker(t, "run", "--rm", "-v", v+":/a", "-v", v+":/b:ro", "--mount", "type=volume,src="+v+",dst=/c,volume-subpath=sub", "busybox", "sh", "-c",
		"echo one > /a/sub/f && sync && cat /b/sub/f && echo two > /c/g && cat /a/sub/g && (echo x > /b/h || echo ro-refused) && ls /a /b")
	if want := "one\ntwo\nro-refused\n/a:\nsub\n\n/b:\nsub\n"; r.code != 0 || r.stdout != want {
		t.Errorf("several targets: exit %d stdout %q stderr %q, want %q", r.code, r.stdout, r.stderr, want)
	}
	if out := ok(t, "run", "--rm", "-v", v+":/v", "busybox", "sh", "-c", "cat /v/sub/f /v/sub/g && ls -R /v"); out != "one\ntwo\n/v:\nsub\n\n/v/sub:\nf\ng\n" {
		t.Errorf("volume afterwards: %q", out)
	}
}

// TestVolumeSurvivesDaemonRestart: a volume's data outlives the daemon.
func TestVolumeSurvivesDaemonRestart(t *testing.T) {
	t.Parallel()
	need(t)
	dir := t.TempDir()
	d, err := testenv.StartDaemon(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.LoadBusybox(dir); err != nil {
		d.Stop(30 * time.Second)
		t.Fatal(err)
	}
	run := func(d *testenv.Daemon, args ...string) string {
		t.Helper()
		out, err := dockerCmd(t, d.Host, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %v: %s: %v\n%s", args, out, err, d.Log(4000))
		}
		return string(out)
	}
	run(d, "run", "--rm", "-v", "kept:/v", "busybox", "sh", "-c", "echo persisted > /v/f")
	if !d.Stop(60 * time.Second) {
		t.Fatalf("daemon did not stop\n%s", d.Log(4000))
	}
	d2, err := testenv.StartDaemon(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Stop(30 * time.Second)
	if out := run(d2, "volume", "ls", "-q"); out != "kept\n" {
		t.Errorf("volumes after restart: %q", out)
	}
	if out := run(d2, "run", "--rm", "-v", "kept:/v", "busybox", "cat", "/v/f"); out != "persisted\n" {
		t.Errorf("read after restart: %q", out)
	}
}

// TestBindMounts: a host directory bind-mounted into a container VM (over
// virtio-9p, with the generic guest kernel): the container reads the
// host's files and the host sees the container's; :ro is enforced in the
// guest; a missing -v source directory is created; inspect shows it.
func TestBindMounts(t *testing.T) {
	t.Parallel()
	need(t)
	if m, _ := filepath.Glob(filepath.Join(testenv.BinDir(), "guest", "kernel-generic", "boot", "vmlinu*")); len(m) == 0 {
		if os.Getenv("VCH_REQUIRE_E2E") == "1" {
			t.Fatal("generic guest kernel not unpacked (make guest)")
		}
		t.Skip("generic guest kernel not unpacked (make guest)")
	}
	u := uniqueName(t)
	dir := filepath.Join(env.bindRoot, u)
	if err := os.MkdirAll(filepath.Join(dir, "in"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "in", "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "bind-" + u
	script := `cat /in/hello; echo from-the-guest > /out/f; echo x > /in/g || echo ro-refused; cat /proc/mounts | grep -c ' 9p '`
	r := docker(t, "run", "--name", name, "-v", dir+"/in:/in:ro", "-v", dir+"/made:/out", "busybox", "sh", "-c", script)
	if r.code != 0 || r.stdout != "from the host\nro-refused\n2\n" || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("run: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "made", "f")); err != nil || string(b) != "from-the-guest\n" {
		t.Errorf("host sees %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "in", "g")); err == nil {
		t.Error("a read-only bind mount was written")
	}
	ms := inspectMounts(t, name)
	if m := ms["/in"]; m.Type != "bind" || m.Source != dir+"/in" || m.RW || m.Mode != "ro" {
		t.Errorf("Mounts[/in] = %+v", m)
	}
	ok(t, "rm", name)
}

// TestImageMount: `--mount type=image` (Engine API 1.48) mounts another
// image's root filesystem read-only, whole or a subpath of it, with
// dockerd's warning at create, its inspect shape and its texts; the
// image cannot be removed while a container mounts it.
func TestImageMount(t *testing.T) {
	needCLI(t, 28, "--mount type=image")
	t.Parallel()
	name := uniqueName(t)
	tag := name + ":latest"
	src := name + "-src"
	ok(t, "run", "--name", src, "busybox", "sh", "-c", "mkdir /data && echo from-image > /data/f")
	defer docker(t, "rm", "-f", src)
	ok(t, "commit", src, tag)
	defer docker(t, "rmi", "-f", tag)
	id := strings.TrimSpace(ok(t, "image", "inspect", "--format", "{{.Id}}", tag))

	r := docker(t, "run", "--rm", "--mount", "type=image,source="+tag+",target=/m", "busybox", "sh", "-c", "cat /m/data/f && touch /m/data/x")
	if r.code != 1 || r.stdout != "from-image\n" || !strings.Contains(r.stderr, "Read-only file system") ||
		!strings.Contains(r.stderr, "Image mount is an experimental feature") {
		t.Errorf("read and write through an image mount: exit %d, stdout %q, stderr %q; want 1, the file, EROFS and dockerd's warning", r.code, r.stdout, r.stderr)
	}
	// A subpath, and the same image at a second target (one disk).
	r = docker(t, "run", "--rm", "--mount", "type=image,source="+tag+",target=/a,image-subpath=data",
		"--mount", "type=image,source="+tag+",target=/b", "busybox", "cat", "/a/f", "/b/data/f")
	if r.code != 0 || r.stdout != "from-image\nfrom-image\n" {
		t.Errorf("image subpath and a second target: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = docker(t, "run", "--rm", "--mount", "type=image,source="+tag+",target=/a,image-subpath=nope", "busybox", "true")
	if p := id + "/nope"; r.code != 127 || !strings.Contains(r.stderr, "cannot access path "+p+": lstat "+p+": no such file or directory") {
		t.Errorf("missing image subpath: exit %d, stderr %q", r.code, r.stderr)
	}

	// A new volume beneath an image mount is filled from the
	// container's own image (which has no /img/data), as dockerd fills
	// it from the container's filesystem, not from the mounted image.
	v := name + "-vol"
	defer docker(t, "volume", "rm", "-f", v)
	r = docker(t, "run", "--rm", "--mount", "type=image,source="+tag+",target=/img", "-v", v+":/img/data", "busybox", "ls", "-A", "/img/data")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("volume beneath an image mount: exit %d, stdout %q, stderr %q; want it empty", r.code, r.stdout, r.stderr)
	}

	c := strings.TrimSpace(ok(t, "create", "--mount", "type=image,source="+tag+",target=/m", "busybox", "true"))
	var mounts []map[string]any
	if err := json.Unmarshal([]byte(ok(t, "inspect", "--format", "{{json .Mounts}}", c)), &mounts); err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0]["Type"] != "image" || mounts[0]["Name"] != tag || mounts[0]["Destination"] != "/m" || mounts[0]["RW"] != false {
		t.Errorf("inspect Mounts %v, want one read-only image mount named %s at /m", mounts, tag)
	}
	r = docker(t, "rmi", tag)
	if r.code == 0 || !strings.Contains(r.stderr, "container "+c[:12]+" is using its referenced image") {
		t.Errorf("rmi of a mounted image: exit %d, stderr %q; want a conflict naming %s", r.code, r.stderr, c[:12])
	}
	ok(t, "rm", c)
	ok(t, "rmi", tag)
}
