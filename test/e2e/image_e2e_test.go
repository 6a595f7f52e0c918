//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/vchproject/vch/internal/testenv"
)

// rootfsTar returns a tar of a tiny root filesystem holding /bin/busybox and
// /bin/sh, for docker import.
func rootfsTar(t *testing.T, extra map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	bb := testenv.ReadFile(t, "/bin/busybox")
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	if _, err := tw.Write(bb); err != nil {
		t.Fatal(err)
	}
	tw.WriteHeader(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "bin/echo", Typeflag: tar.TypeSymlink, Linkname: "/bin/busybox", Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "bin/cat", Typeflag: tar.TypeLink, Linkname: "bin/busybox", Mode: 0o755})
	for name, content := range extra {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))})
		tw.Write([]byte(content))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestImportEntrypointCmd: docker import with -c, then Docker's ENTRYPOINT
// and CMD combination rules, each checked in a real VM.
func TestImportEntrypointCmd(t *testing.T) {
	t.Parallel()
	tag := "vch-e2e/entry:" + strings.ToLower(uniqueName(t))
	r := dockerIn(t, rootfsTar(t, map[string]string{"etc/motd": "imported\n"}), "import",
		"-c", `ENTRYPOINT ["/bin/echo", "ep"]`, "-c", `CMD ["default"]`, "-c", "ENV GREETING=hi", "-c", "WORKDIR /etc", "-", tag)
	if r.code != 0 || !strings.HasPrefix(strings.TrimSpace(r.stdout), "sha256:") {
		t.Fatalf("import: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	t.Cleanup(func() { docker(t, "rmi", tag) })
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"image entrypoint and cmd", nil, "ep default\n"},
		{"args replace cmd", []string{"x", "y"}, "ep x y\n"},
		{"entrypoint override drops image cmd", []string{"--entrypoint", "/bin/cat", "@", "/etc/motd"}, "imported\n"},
		{"empty entrypoint runs args", []string{"--entrypoint", "", "@", "/bin/sh", "-c", "echo $GREETING $(pwd)"}, "hi /etc\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"run", "--rm"}
			rest := tc.args
			if i := indexOf(rest, "@"); i >= 0 {
				args = append(args, rest[:i]...)
				args = append(args, tag)
				args = append(args, rest[i+1:]...)
			} else {
				args = append(args, tag)
				args = append(args, rest...)
			}
			if out := ok(t, args...); out != tc.want {
				t.Errorf("docker %v = %q, want %q", args, out, tc.want)
			}
		})
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestPullFromRegistry: docker pull from a plain-HTTP loopback registry shows
// Docker's progress lines, the image is listed and runs; rmi untags.
func TestPullFromRegistry(t *testing.T) {
	t.Parallel()
	ref := env.registry + "/library/busybox:1"
	r := docker(t, "pull", ref)
	if r.code != 0 {
		t.Fatalf("pull: code %d stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"Pulling from library/busybox", "Digest: sha256:", "Status: Downloaded newer image for " + ref} {
		if strings.Count(r.stdout, want) != 1 {
			t.Errorf("pull output should show %q once:\n%s", want, r.stdout)
		}
	}
	if out := ok(t, "images", "--format", "{{.Repository}}:{{.Tag}}"); !strings.Contains(out, ref) {
		t.Errorf("images lacks %s:\n%s", ref, out)
	}
	var insp []struct {
		RepoDigests []string
		RootFS      struct{ Layers []string }
		Os          string
	}
	if err := json.Unmarshal([]byte(ok(t, "image", "inspect", ref)), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("image inspect: %v", err)
	}
	if len(insp[0].RepoDigests) != 1 || len(insp[0].RootFS.Layers) == 0 || insp[0].Os != "linux" {
		t.Errorf("image inspect = %+v", insp[0])
	}
	if out := ok(t, "run", "--rm", ref, "echo", "pulled"); out != "pulled\n" {
		t.Errorf("run pulled image = %q", out)
	}
	again := ok(t, "pull", ref)
	if !strings.Contains(again, "Image is up to date for "+ref) {
		t.Errorf("second pull:\n%s", again)
	}
	if out := ok(t, "rmi", ref); !strings.Contains(out, "Untagged: "+ref) {
		t.Errorf("rmi output = %q", out)
	}
	r = docker(t, "pull", env.registry+"/library/nosuch:latest")
	if r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("pull of a missing repo: code %d stderr %q", r.code, r.stderr)
	}
}

// TestImagesTagRmi: tag, list, inspect and rmi with Docker's texts.
func TestImagesTagRmi(t *testing.T) {
	t.Parallel()
	tag := "vch-e2e/tagged:" + strings.ToLower(uniqueName(t))
	ok(t, "tag", "busybox", tag)
	id := strings.TrimSpace(ok(t, "image", "inspect", "--format", "{{.Id}}", tag))
	if busy := strings.TrimSpace(ok(t, "image", "inspect", "--format", "{{.Id}}", "busybox")); id != busy {
		t.Errorf("tag points at %s, busybox is %s", id, busy)
	}
	if out := ok(t, "rmi", tag); !strings.Contains(out, "Untagged: "+tag) {
		t.Errorf("rmi = %q", out)
	}
	r := docker(t, "image", "inspect", tag)
	if r.code == 0 || !strings.Contains(r.stderr, "No such image") {
		t.Errorf("inspect after rmi: code %d stderr %q", r.code, r.stderr)
	}
	// The daemon's text names the reference with its tag; the 20.10 CLI
	// looks the image up itself first and prints the name as typed.
	want := "No such image: nosuchimage-e2e:latest"
	if cliMajor() < 23 {
		want = "No such image: nosuchimage-e2e"
	}
	r = docker(t, "rmi", "nosuchimage-e2e")
	if r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("rmi missing: code %d stderr %q, want %q", r.code, r.stderr, want)
	}
	if _, err := apiClient(t).ImageRemove(context.Background(), "nosuchimage-e2e", client.ImageRemoveOptions{}); err == nil || !strings.Contains(err.Error(), "No such image: nosuchimage-e2e:latest") {
		t.Errorf("DELETE /images/nosuchimage-e2e: %v", err)
	}
}

// TestLoadHostileArchive: a docker-load archive whose layer escapes with
// ../ is refused with a clear error, nothing lands outside the root, and
// the daemon keeps serving.
func TestLoadHostileArchive(t *testing.T) {
	t.Parallel()
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	evil := "owned\n"
	lw.WriteHeader(&tar.Header{Name: "../../../../../../tmp/vch-e2e-escape", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(evil))})
	lw.Write([]byte(evil))
	lw.Close()
	r := dockerIn(t, layer.Bytes(), "import", "-", "vch-e2e/evil:latest")
	if r.code == 0 {
		// Accepted: then running it must not have written outside either.
		docker(t, "rmi", "vch-e2e/evil:latest")
	}
	if _, err := readFileErr("/tmp/vch-e2e-escape"); err == nil {
		t.Fatal("a layer entry escaped the store's root: /tmp/vch-e2e-escape exists")
	}
	r = dockerIn(t, []byte("this is not a tar archive"), "load")
	if r.code == 0 {
		t.Errorf("load of garbage succeeded: %q", r.stdout)
	}
	ok(t, "version")
}
