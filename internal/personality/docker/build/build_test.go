package build

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseDockerfile(t *testing.T) {
	for _, tc := range []struct {
		df, target string
		labels     map[string]string
		steps      int
		err        string
	}{
		{df: "ARG A=1\nFROM busybox\nRUN true\nFROM busybox AS b\nCOPY x /\n", steps: 5},
		{df: "FROM busybox AS a\nRUN true\nFROM busybox AS b\nRUN false\n", target: "A", steps: 2},
		{df: "FROM busybox\n", labels: map[string]string{"k": "v", "a": "b"}, steps: 3},
		{df: "FROM busybox\nFOO bar\n", err: "dockerfile parse error line 2: unknown instruction: FOO"},
		{df: "FROM busybox\n", target: "nope", err: "failed to reach build target nope in Dockerfile"},
		{df: "", err: "file with no instructions"},
		{df: "FROM busybox\nCOPY\n", err: "dockerfile parse error line 2: COPY requires at least two arguments"},
	} {
		p, err := parseDockerfile([]byte(tc.df), options{target: tc.target, labels: tc.labels})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errdefs.IsInvalidArgument(err) {
				t.Errorf("%q: err = %v, want InvalidArgument %q", tc.df, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.df, err)
			continue
		}
		if p.total != tc.steps {
			t.Errorf("%q: %d steps, want %d", tc.df, p.total, tc.steps)
		}
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		query string
		tags  []string
		err   string
	}{
		{query: "t=a&t=b:2&t=localhost:5000/c", tags: []string{"a:latest", "b:2", "localhost:5000/c:latest"}},
		{query: "t=UPPER", err: "invalid reference format"},
		{query: "t=a@sha256:" + strings.Repeat("0", 64), err: "build tag cannot contain a digest"},
		{query: "platform=linux/arm64", err: `platform "linux/arm64" is not supported`},
		{query: "platform=linux/amd64"},
		{query: "buildargs={bad", err: "invalid buildargs"},
		{query: "remote=https://example.com/x.git", err: "remote build contexts"},
	} {
		r := httptest.NewRequest("POST", "/build?"+tc.query, nil)
		r.ParseForm()
		o, err := parseOptions(r)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.query, err)
		}
		if strings.Join(o.tags, ",") != strings.Join(tc.tags, ",") {
			t.Errorf("%s: tags %v, want %v", tc.query, o.tags, tc.tags)
		}
	}
}

// Sources that climb out of the context, or leave it through a link, are
// refused; links inside it resolve.
func TestExpandSource(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "a.txt"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(root, "b.txt"), []byte("b"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(root, "out"))
	os.Symlink("a.txt", filepath.Join(root, "in"))
	b := &builder{}
	for _, src := range []string{"../x", "out", "sub/../../x"} {
		if _, err := b.expandSource(root, src, false); err == nil || !strings.Contains(err.Error(), "forbidden path outside the build context") {
			t.Errorf("%s: err = %v", src, err)
		}
	}
	got, err := b.expandSource(root, "in", false)
	if err != nil || len(got) != 1 || filepath.Base(got[0]) != "a.txt" {
		t.Errorf("in: %v %v", got, err)
	}
	got, err = b.expandSource(root, "/*.txt", false)
	if err != nil || len(got) != 2 {
		t.Errorf("*.txt: %v %v", got, err)
	}
	var se *stepError
	if _, err := b.expandSource(root, "missing", false); !errors.As(err, &se) || !strings.Contains(err.Error(), "file not found in build context") {
		t.Errorf("missing: %v", err)
	}
}

// The COPY checksum follows content, names, modes and owners, not times.
func TestChecksum(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("one"), 0o644)
	sum := func(uid int) string {
		fi, _ := os.Lstat(p)
		s, err := checksum([]entry{{host: p, dest: "x/f", info: fi}}, uid, uid, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := sum(0)
	os.Chtimes(p, time.Unix(1, 0), time.Unix(1, 0))
	if b := sum(0); b != a {
		t.Error("checksum changed with the mtime")
	}
	if b := sum(7); b == a {
		t.Error("checksum ignores the owner")
	}
	os.WriteFile(p, []byte("two"), 0o644)
	if b := sum(0); b == a {
		t.Error("checksum ignores the content")
	}
}

func TestStepKey(t *testing.T) {
	base := ocispec.ImageConfig{Env: []string{"PATH=/bin"}}
	k1 := stepKey("sha256:a", "/bin/sh -c true", base, nil)
	if k2 := stepKey("sha256:b", "/bin/sh -c true", base, nil); k1 == k2 {
		t.Error("key ignores the parent")
	}
	cfg := cloneConfig(base)
	cfg.User = "nobody"
	if k2 := stepKey("sha256:a", "/bin/sh -c true", cfg, nil); k1 == k2 {
		t.Error("key ignores the config")
	}
}
