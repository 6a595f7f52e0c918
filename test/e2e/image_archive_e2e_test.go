//go:build e2e

package e2e

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"
)

// TestSaveLoadHistoryDF: docker save of two tags sharing their layers, rmi,
// docker load back; docker history shows the config's history; the image
// list's SharedSize and docker system df count the shared layer once.
func TestSaveLoadHistoryDF(t *testing.T) {
	t.Parallel()
	u := strings.ToLower(uniqueName(t))
	a, b := "vch-e2e/save-a:"+u, "vch-e2e/save-b:"+u
	ok(t, "tag", "busybox", a)
	if r := dockerIn(t, rootfsTar(t, nil), "import", "-c", "LABEL vch-e2e-save="+u, "-", b); r.code != 0 {
		t.Fatalf("import: %s", r.stderr)
	}
	id := strings.TrimSpace(ok(t, "image", "inspect", "--format", "{{.Id}}", a))
	archive := filepath.Join(t.TempDir(), "save.tar")
	ok(t, "save", "-o", archive, a, b)
	ok(t, "rmi", a, b)
	out := ok(t, "load", "-i", archive)
	if !strings.Contains(out, "Loaded image: "+a) || !strings.Contains(out, "Loaded image: "+b) {
		t.Fatalf("load output:\n%s", out)
	}
	if got := strings.TrimSpace(ok(t, "image", "inspect", "--format", "{{.Id}}", a)); got != id {
		t.Errorf("loaded %s as %s, saved %s", a, got, id)
	}

	// history: the newest row carries the image ID and the tag.
	hist := ok(t, "history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}", a)
	rows := strings.Split(strings.TrimSpace(hist), "\n")
	if len(rows) == 0 || !strings.HasPrefix(rows[0], id+"|") {
		t.Errorf("history:\n%s", hist)
	}

	// shared-size=1 fills SharedSize (0 or more) instead of -1.
	c := apiClient(t)
	imgs, err := c.ImageList(t.Context(), client.ImageListOptions{SharedSize: true})
	if err != nil {
		t.Fatal(err)
	}
	var seen bool
	for _, img := range imgs.Items {
		if img.ID == id {
			seen = true
			if img.SharedSize < 0 || img.Size <= 0 {
				t.Errorf("SharedSize %d Size %d", img.SharedSize, img.Size)
			}
		}
	}
	if !seen {
		t.Errorf("image %s not listed", id)
	}
	df := ok(t, "system", "df")
	for _, want := range []string{"Images", "Containers", "Local Volumes", "Build Cache"} {
		if !strings.Contains(df, want) {
			t.Errorf("system df lacks %q:\n%s", want, df)
		}
	}
	ok(t, "rmi", a, b)
}

// TestPushToRegistry: docker push to the loopback registry with Docker's
// progress; the registry then holds the diff IDs image inspect shows; a
// second push finds every layer there; a push of an unknown tag fails
// with Docker's text.
func TestPushToRegistry(t *testing.T) {
	t.Parallel()
	u := strings.ToLower(uniqueName(t))
	ref := env.registry + "/vch-e2e/pushed:" + u
	ok(t, "tag", "busybox", ref)
	out := ok(t, "push", ref)
	// The registry already holds busybox's layer (the suite pushed it), so
	// the layer line is "Layer already exists" rather than "Pushed".
	for _, want := range []string{"The push refers to repository [" + env.registry + "/vch-e2e/pushed]", "Preparing", "Layer already exists", u + ": digest: sha256:"} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q:\n%s", want, out)
		}
	}
	var insp []struct{ RootFS struct{ Layers []string } }
	if err := json.Unmarshal([]byte(ok(t, "image", "inspect", ref)), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for _, d := range cf.RootFS.DiffIDs {
		held = append(held, d.String())
	}
	if !slices.Equal(held, insp[0].RootFS.Layers) {
		t.Errorf("registry holds %v, image inspect shows %v", held, insp[0].RootFS.Layers)
	}
	res := docker(t, "push", env.registry+"/vch-e2e/nosuch:"+u)
	if res.code == 0 || !strings.Contains(res.stderr, "An image does not exist locally with the tag") {
		t.Errorf("push of a missing tag: code %d stderr %q", res.code, res.stderr)
	}
	ok(t, "rmi", ref)
}

// TestImagePrune: prune removes dangling images (narrowed here by label,
// as the daemon is shared) and, with -a, unused tagged ones; images a
// container uses stay.
func TestImagePrune(t *testing.T) {
	t.Parallel()
	u := strings.ToLower(uniqueName(t))
	label := "vch-e2e-prune=" + u
	tag := "vch-e2e/prune:" + u
	// Two imports under one tag: the first becomes dangling.
	first := strings.TrimSpace(dockerIn(t, rootfsTar(t, map[string]string{"one": "1"}), "import", "-c", "LABEL "+label, "-", tag).stdout)
	dockerIn(t, rootfsTar(t, map[string]string{"two": "2"}), "import", "-c", "LABEL "+label, "-", tag)
	out := ok(t, "image", "prune", "-f", "--filter", "label="+label)
	if !strings.Contains(out, "deleted: "+first) || !strings.Contains(out, "Total reclaimed space") {
		t.Errorf("prune:\n%s", out)
	}
	if r := docker(t, "image", "inspect", tag); r.code != 0 {
		t.Errorf("prune removed the tagged image")
	}
	out = ok(t, "image", "prune", "-a", "-f", "--filter", "label="+label)
	if !strings.Contains(out, "untagged: "+tag) {
		t.Errorf("prune -a:\n%s", out)
	}
	if r := docker(t, "image", "inspect", tag); r.code == 0 {
		t.Errorf("prune -a kept the unused image")
	}
}
