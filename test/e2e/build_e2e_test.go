//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// helloC prints without libc (raw syscalls), so the compiler stage needs
// only gcc, cc1, as and ld.
const helloC = `static long sys(long n, long a, long b, long c) {
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}
void _start(void) {
	static const char m[] = "hello from C\n";
	sys(1, 1, (long)m, sizeof m - 1);
	sys(60, 0, 0, 0);
	for (;;) {}
}
`

// buildDockerfile has three stages: compile in an image holding the
// host's gcc, check the program in busybox (and that .dockerignore kept
// a file out), and a scratch image with the program and the check's
// output.
const buildDockerfile = `ARG CC_IMAGE
FROM $CC_IMAGE AS compile
WORKDIR /src
COPY hello.c .
RUN ["gcc", "-O2", "-static", "-nostdlib", "-fno-stack-protector", "-o", "hello", "hello.c"]

FROM busybox AS check
ARG WHO=nobody
ENV GREETING="checked by"
COPY --from=compile /src/hello /usr/local/bin/hello
COPY . /ctx/
RUN test ! -e /ctx/secret.txt && hello > /out.txt && echo "$GREETING $WHO" >> /out.txt

FROM scratch
COPY --from=compile /src/hello /hello
COPY --from=check --chown=7:8 /out.txt /out.txt
LABEL org.example.stage=final
ENTRYPOINT ["/hello"]
`

// TestBuild runs docker build (the classic builder) on a 3-stage
// Dockerfile that compiles a C program, runs the result, rebuilds it
// fully from the cache, and checks a failing RUN and a COPY from outside
// the context.
func TestBuild(t *testing.T) {
	t.Parallel()
	cc := gccImage(t)
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hello.c", helloC)
	write("Dockerfile", buildDockerfile)
	write("secret.txt", "must not reach the daemon\n")
	write(".dockerignore", "secret.txt\n")
	tag := "vch-e2e/built:" + strings.ToLower(uniqueName(t))
	iid := filepath.Join(t.TempDir(), "iid")
	t.Cleanup(func() { docker(t, "rmi", tag) })

	build := func(args ...string) result {
		t.Helper()
		return dockerBuild(t, append(args, dir)...)
	}
	r := build("-t", tag, "--iidfile", iid, "--build-arg", "CC_IMAGE="+cc, "--build-arg", "WHO=vch")
	if r.code != 0 {
		t.Fatalf("build: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"Step 1/16 : ARG CC_IMAGE", "Step 5/16 : RUN [\"gcc\"", " ---> Running in ", "Removing intermediate container ", "Successfully built ", "Successfully tagged " + tag} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("build output lacks %q:\n%s", want, r.stdout)
		}
	}
	id, err := os.ReadFile(iid)
	if err != nil || !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).Match(id) {
		t.Fatalf("iidfile: %q %v", id, err)
	}
	if got := ok(t, "run", "--rm", tag); got != "hello from C\n" {
		t.Errorf("run the built program: %q", got)
	}
	// The check stage's output, owned as --chown said, in a scratch image.
	c := strings.TrimSpace(ok(t, "create", tag))
	defer docker(t, "rm", c)
	out := dockerIn(t, nil, "cp", c+":/out.txt", "-")
	if out.code != 0 || !strings.Contains(out.stdout, "hello from C\nchecked by vch\n") {
		t.Errorf("out.txt: exit %d %q %s", out.code, out.stdout, out.stderr)
	}
	if u := ok(t, "image", "inspect", "-f", "{{.Config.Entrypoint}} {{index .Config.Labels \"org.example.stage\"}} {{len .RootFS.Layers}}", tag); u != "[/hello] final 2\n" {
		t.Errorf("image config: %q", u)
	}
	if h := ok(t, "history", "--no-trunc", "--format", "{{.CreatedBy}}", tag); !strings.Contains(h, "#(nop) COPY file:") {
		t.Errorf("history: %q", h)
	}

	// Unchanged: every step from the cache, no VM.
	start := time.Now()
	r = build("-t", tag, "--build-arg", "CC_IMAGE="+cc, "--build-arg", "WHO=vch")
	if r.code != 0 || strings.Contains(r.stdout, "Running in") || strings.Count(r.stdout, "Using cache") != 12 {
		t.Errorf("rebuild not from the cache (exit %d, %d cached):\n%s\n%s", r.code, strings.Count(r.stdout, "Using cache"), r.stdout, r.stderr)
	}
	t.Logf("cached rebuild: %v", time.Since(start))
	if got := strings.TrimSpace(ok(t, "image", "inspect", "-f", "{{.Id}}", tag)); got != string(id) {
		t.Errorf("cached rebuild made %s, first build %s", got, id)
	}
	// A changed build argument reruns the RUN that sees it, not the
	// compile stage.
	r = build("-q", "--build-arg", "CC_IMAGE="+cc, "--build-arg", "WHO=else")
	if r.code != 0 || !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(r.stdout) || r.stdout == string(id)+"\n" {
		t.Errorf("build -q with another WHO: exit %d %q %s", r.code, r.stdout, r.stderr)
	} else {
		defer docker(t, "rmi", strings.TrimSpace(r.stdout))
	}

	// A failing RUN: its exit code and dockerd's text, no container left.
	// (FROM an image of its own, whose ID finds the build's containers
	// among those of the tests running alongside.)
	bad := t.TempDir()
	base := "vch-e2e/failbase:" + strings.ToLower(uniqueName(t))
	src := strings.TrimSpace(ok(t, "create", "busybox"))
	ok(t, "commit", "-c", "LABEL failbase=1", src, base)
	ok(t, "rm", src)
	defer docker(t, "rmi", base)
	baseID := strings.TrimSpace(ok(t, "image", "inspect", "-f", "{{.Id}}", base))
	os.WriteFile(filepath.Join(bad, "Dockerfile"), []byte("FROM "+base+"\nRUN echo partial > /p && exit 3\n"), 0o644)
	r = dockerBuild(t, bad)
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "The command '/bin/sh -c echo partial > /p && exit 3' returned a non-zero code: 3") {
		t.Errorf("failing RUN: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if left := ok(t, "ps", "-aq", "--filter", "ancestor="+baseID); left != "" {
		t.Errorf("a failed build left containers: %q", left)
	}
	// COPY from outside the context and a syntax error.
	os.WriteFile(filepath.Join(bad, "Dockerfile"), []byte("FROM busybox\nCOPY ../etc/passwd /\n"), 0o644)
	if r = dockerBuild(t, bad); r.code == 0 || !strings.Contains(r.stderr, "forbidden path outside the build context: ../etc/passwd") {
		t.Errorf("COPY ../: exit %d %s", r.code, r.stderr)
	}
	os.WriteFile(filepath.Join(bad, "Dockerfile"), []byte("FROM busybox\nBOGUS x\n"), 0o644)
	if r = dockerBuild(t, bad); r.code == 0 || !strings.Contains(r.stderr, "dockerfile parse error line 2: unknown instruction: BOGUS") {
		t.Errorf("unknown instruction: exit %d %s", r.code, r.stderr)
	}
}

// dockerBuild runs docker build with the classic builder (DOCKER_BUILDKIT=0,
// which CLI 28 needs without the buildx plugin; CLI 20.10 defaults to it).
func dockerBuild(t *testing.T, args ...string) result {
	t.Helper()
	return dockerWith(t, []string{"DOCKER_CONFIG=" + t.TempDir(), "DOCKER_BUILDKIT=0"}, nil, append([]string{"build"}, args...)...)
}

// gccImage imports an image holding the host's gcc driver, cc1, collect2,
// as and ld with the shared libraries they load (enough to compile and
// link a program without libc), and returns its tag.
func gccImage(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc on the host (deps.sh installs it)")
	}
	var progs []string
	for _, q := range []string{"-print-prog-name=cc1", "-print-prog-name=collect2", "-print-prog-name=as", "-print-prog-name=ld", "-print-file-name=liblto_plugin.so"} {
		out, err := exec.Command(gcc, q).Output()
		if err != nil {
			t.Fatalf("gcc %s: %v", q, err)
		}
		p := strings.TrimSpace(string(out))
		if !filepath.IsAbs(p) {
			if p, err = exec.LookPath(p); err != nil {
				t.Fatalf("gcc %s: %v", q, err)
			}
		}
		progs = append(progs, p)
	}
	files := map[string]bool{}
	var add func(p string)
	add = func(p string) {
		if files[p] {
			return
		}
		files[p] = true
		if l, err := os.Readlink(p); err == nil { // each hop of a link chain
			if !filepath.IsAbs(l) {
				l = filepath.Join(filepath.Dir(p), l)
			}
			add(l)
			return
		}
		out, err := exec.Command("ldd", p).Output()
		if err != nil {
			return // static, or not an ELF file
		}
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") {
				add(f)
			}
		}
	}
	add(gcc)
	for _, p := range progs {
		add(p)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var mkdirs func(d string)
	mkdirs = func(d string) {
		if d == "/" || d == "." || dirs[d] {
			return
		}
		mkdirs(filepath.Dir(d))
		dirs[d] = true
		tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	for p := range files {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		mkdirs(filepath.Dir(p))
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/"), Typeflag: tar.TypeSymlink, Linkname: l, Mode: 0o777})
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/"), Typeflag: tar.TypeReg, Mode: int64(fi.Mode().Perm()), Size: fi.Size()})
		io.Copy(tw, f)
		f.Close()
	}
	// /tmp for gcc's temporary files; the header cc1 includes implicitly.
	mkdirs("/usr/include")
	tw.WriteHeader(&tar.Header{Name: "usr/include/stdc-predef.h", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	tw.Close()
	tag := "vch-e2e/gcc:" + strings.ToLower(uniqueName(t))
	if r := dockerIn(t, buf.Bytes(), "import", "-c", "ENV PATH=/usr/bin:/bin", "-", tag); r.code != 0 {
		t.Fatalf("import gcc image: %s", r.stderr)
	}
	t.Cleanup(func() { docker(t, "rmi", tag) })
	return tag
}

// TestContainerPrune removes the stopped containers a label selects (the
// label keeps other tests' containers out of it) and keeps running ones.
func TestContainerPrune(t *testing.T) {
	t.Parallel()
	label := "vch-e2e-prune=" + uniqueName(t)
	stopped := strings.TrimSpace(ok(t, "create", "--label", label, "busybox"))
	running := strings.TrimSpace(ok(t, "run", "-d", "--label", label, "busybox", "sleep", "300"))
	defer docker(t, "rm", "-f", stopped, running)
	out := ok(t, "container", "prune", "-f", "--filter", "label="+label)
	if !strings.Contains(out, "Deleted Containers:\n"+stopped+"\n") || strings.Contains(out, running) {
		t.Errorf("prune output: %q", out)
	}
	if r := docker(t, "inspect", stopped); r.code == 0 {
		t.Errorf("pruned container still there")
	}
	if s := ok(t, "inspect", "-f", "{{.State.Status}}", running); s != "running\n" {
		t.Errorf("running container: %q", s)
	}
}
