//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestArchive: docker cp both ways (file, directory, symlink, modes,
// owners, into a volume), docker export, docker diff and docker commit on
// one running container, then cp on it once stopped.
func TestArchive(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	vol := name + "-vol"
	ok(t, "run", "-d", "--name", name, "-v", vol+":/data", "busybox", "sh", "-c",
		"echo base > /base && rm /etc/group && echo changed >> /etc/passwd && ln -s /etc/passwd /plink && sleep 100000")
	t.Cleanup(func() { docker(t, "rm", "-f", name); docker(t, "volume", "rm", vol) })

	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("hello\n"), 0o640)
	os.Chown(filepath.Join(src, "f"), 1234, 2345)
	os.MkdirAll(filepath.Join(src, "d/sub"), 0o750)
	os.WriteFile(filepath.Join(src, "d/sub/x"), []byte("x"), 0o755)
	os.Symlink("/etc/hostname", filepath.Join(src, "d/ln"))

	// cp in: a file (owner and mode kept), a directory, into a volume.
	ok(t, "cp", filepath.Join(src, "f"), name+":/f")
	ok(t, "cp", filepath.Join(src, "d"), name+":/d")
	ok(t, "cp", filepath.Join(src, "f"), name+":/data/")
	got := ok(t, "exec", name, "sh", "-c", "stat -c '%a %u %g' /f; cat /data/f; stat -c %a /d/sub /d/sub/x; readlink /d/ln")
	if want := "640 1234 2345\nhello\n750\n755\n/etc/hostname\n"; got != want {
		t.Errorf("after cp in:\n%q\nwant\n%q", got, want)
	}
	// Docker's errors.
	// The CLI words a 404 from the archive stat itself (20.10 otherwise
	// than later releases).
	want := "Could not find the file /nope in container " + name
	if cliMajor() < 23 {
		want = "No such container:path: " + name + ":/nope"
	}
	if r := docker(t, "cp", name+":/nope", t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("cp of a missing path: %d %s, want %q", r.code, r.stderr, want)
	}

	// cp out: a directory and a symlink (kept as a link; -L follows it).
	dst := t.TempDir()
	ok(t, "cp", name+":/d", dst)
	if b, _ := os.ReadFile(filepath.Join(dst, "d/sub/x")); string(b) != "x" {
		t.Errorf("cp out d/sub/x = %q", b)
	}
	ok(t, "cp", name+":/plink", filepath.Join(dst, "plink"))
	if l, err := os.Readlink(filepath.Join(dst, "plink")); err != nil || l != "/etc/passwd" {
		t.Errorf("cp out symlink: %q %v", l, err)
	}
	ok(t, "cp", "-L", name+":/plink", filepath.Join(dst, "passwd"))
	if b, _ := os.ReadFile(filepath.Join(dst, "passwd")); !strings.Contains(string(b), "changed") {
		t.Errorf("cp -L: %q", b)
	}
	// To stdout as a tar: the top entry is named as asked.
	r := docker(t, "cp", name+":/f", "-")
	tr := tar.NewReader(strings.NewReader(r.stdout))
	if h, err := tr.Next(); err != nil || h.Name != "f" || h.Uid != 1234 || h.Mode&0o777 != 0o640 {
		t.Errorf("cp to stdout: %+v %v", h, err)
	}

	// export holds the files written in the container, not the volume's.
	exp := docker(t, "export", name)
	names := tarNames(t, []byte(exp.stdout))
	if !names["base"] || !names["d/sub/x"] || names["data/f"] || names["etc/group"] {
		t.Errorf("export: base %v d/sub/x %v data/f %v etc/group %v", names["base"], names["d/sub/x"], names["data/f"], names["etc/group"])
	}

	// diff: A, C and D as Docker prints them.
	diff := ok(t, "diff", name)
	for _, want := range []string{"A /base", "C /etc/passwd", "D /etc/group", "A /d/sub/x", "C /etc"} {
		if !strings.Contains(diff, want+"\n") {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}

	// commit: the new image holds the changes; -c sets its CMD.
	img := "vch-e2e/commit:" + strings.ToLower(name)
	ok(t, "commit", "-c", `CMD ["cat","/base"]`, "-m", "from e2e", name, img)
	t.Cleanup(func() { docker(t, "rmi", "-f", img) })
	if out := ok(t, "run", "--rm", img); out != "base\n" {
		t.Errorf("run committed image: %q", out)
	}
	if out := ok(t, "run", "--rm", img, "sh", "-c", "cat /f; test -e /etc/group || echo gone"); out != "hello\ngone\n" {
		t.Errorf("committed image content: %q", out)
	}
	// A change's variables expand against the container's environment
	// (as a Dockerfile's ENV would); RUN is not a change.
	envImg := img + "-env"
	ok(t, "commit", "-c", "ENV PATH=/opt/x:$PATH", name, envImg)
	t.Cleanup(func() { docker(t, "rmi", "-f", envImg) })
	if env := ok(t, "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", envImg); !strings.Contains(env, "PATH=/opt/x:/usr/local/sbin:") {
		t.Errorf("ENV PATH=/opt/x:$PATH committed as:\n%s", env)
	}
	if r := docker(t, "commit", "-c", "RUN true", name); r.code == 0 || !strings.Contains(r.stderr, "run is not a valid change command") {
		t.Errorf("commit -c RUN: exit %d %s", r.code, r.stderr)
	}

	// Stopped: cp both ways boots the container's disks without its process.
	ok(t, "stop", "-t", "1", name)
	ok(t, "cp", filepath.Join(src, "f"), name+":/stopped")
	ok(t, "cp", name+":/stopped", filepath.Join(dst, "stopped"))
	if b, _ := os.ReadFile(filepath.Join(dst, "stopped")); string(b) != "hello\n" {
		t.Errorf("cp on a stopped container: %q", b)
	}
}

func tarNames(t *testing.T, b []byte) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = true
	}
	return out
}
