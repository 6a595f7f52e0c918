package build

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// A session is one container VM that runs the RUN steps of a stage one
// after another as execs, instead of a VM per step. Its filesystem is the
// flattened image sess.image at all times: a RUN advances both (the
// step's layer is the difference between the container's changes after
// and before it), a COPY or ADD layer is also unpacked into it, and a
// configuration step only renames the image. When the stage's image is
// no longer sess.image (a step came from the cache, a new stage began) the
// session ends and the next RUN starts another. A session starts only for
// a RUN that another RUN of the stage follows (a lone RUN is cheaper in a
// VM of its own); an image without /bin/sh, whose idle main process cannot
// run, gets a VM per RUN step.
type session struct {
	id    string // container
	image string // the image its filesystem holds
	snap  string // its changes so far (a tar file)
	index map[string]string
}

// idleArgs keep a session's main process waiting on its open stdin.
var idleArgs = []string{"/bin/sh", "-c", "read _"}

// sessionFor returns the stage's session for st.image, starting one if
// needed; nil when the image cannot host one (the caller then runs the
// step in a container of its own).
func (b *builder) sessionFor(ctx context.Context, st *stage, spec portlayer.ContainerSpec) (*session, error) {
	if st.sess != nil && st.sess.image == st.image {
		return st.sess, nil
	}
	b.endSession(st)
	if st.noSession {
		return nil, nil
	}
	spec.Args, spec.Env, spec.User, spec.WorkingDir = idleArgs, nil, "", ""
	spec.OpenStdin, spec.CaptureChanges = true, false
	ctr, err := b.createContainer(ctx, spec)
	if err != nil {
		return nil, err
	}
	sess := &session{id: ctr.ID, image: st.image}
	b.sessions = append(b.sessions, sess)
	if err := b.rt.be.Compute.Start(ctx, ctr.ID); err != nil {
		b.rt.log.Info("build steps run in a VM each", "image", st.image, "reason", httputils.PortLayerText(err))
		st.noSession = true
		return nil, nil
	}
	// Nothing ran yet: the first step's layer is all the container's
	// changes (as a VM of its own would give), so no snapshot is needed.
	sess.index = map[string]string{}
	st.sess = sess
	return sess, nil
}

// endSession forgets the stage's session; its container is removed at the
// end of the build.
func (b *builder) endSession(st *stage) { st.sess = nil }

// removeSessions removes every session container of the build (before
// its last message, so a client that sees the build end finds none).
func (b *builder) removeSessions(ctx context.Context) {
	for _, s := range b.sessions {
		if err := b.rt.be.Compute.Remove(detached(ctx), s.id, true); err != nil && !errdefs.IsNotFound(err) {
			b.rt.log.Warn("build container not removed", "container", s.id, "err", err)
		}
		if s.snap != "" {
			_ = os.Remove(s.snap)
		}
	}
	b.sessions = nil
}

// execStep runs a RUN step as an exec in the session and returns its exit
// code once all its output was sent.
func (b *builder) execStep(ctx context.Context, sess *session, args, env []string, user, dir string) (int, error) {
	if dir != "" && dir != "/" {
		if err := b.ensureDir(ctx, sess.id, dir); err != nil {
			return 0, err
		}
	}
	spec := portlayer.ExecSpec{Args: args, Env: env, User: user, WorkingDir: dir, AttachStdout: true, AttachStderr: true}
	execID, err := b.rt.be.Execs.CreateExec(ctx, sess.id, spec)
	if err != nil {
		return 0, stepErrorf("%s", httputils.PortLayerText(err))
	}
	opts := portlayer.ExecStartOptions{Stdout: io.Discard, Stderr: io.Discard}
	if !b.opts.quiet {
		opts.Stdout, opts.Stderr = &streamWriter{out: b.out}, &streamWriter{out: b.out, stderr: true}
	}
	if err := b.rt.be.Execs.StartExec(ctx, execID, opts); err != nil {
		return 0, stepErrorf("%s", httputils.PortLayerText(err))
	}
	info, err := b.rt.be.Execs.InspectExec(ctx, execID)
	if err != nil || info.ExitCode == nil {
		return 0, stepErrorf("RUN: no exit code: %v", err)
	}
	return *info.ExitCode, nil
}

// ensureDir makes a missing working directory (and its missing parents)
// as Docker makes a RUN container's: mode 0755, root's.
func (b *builder) ensureDir(ctx context.Context, id, dir string) error {
	var missing []string
	for d := path.Clean(dir); d != "/"; d = path.Dir(d) {
		if _, err := b.rt.be.Archives.StatPath(ctx, id, d); err == nil {
			break
		} else if !errdefs.IsNotFound(err) {
			return stepErrorf("%s", httputils.PortLayerText(err))
		}
		missing = append(missing, d)
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Reverse(missing)
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for _, d := range missing {
			tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		pw.CloseWithError(tw.Close())
	}()
	if err := b.rt.be.Archives.PutArchive(ctx, id, "/", pr, portlayer.PutArchiveOptions{}); err != nil {
		return stepErrorf("WORKDIR %s: %s", dir, httputils.PortLayerText(err))
	}
	return nil
}

// putLayer unpacks a COPY/ADD layer into the session so that it keeps
// holding the stage's filesystem, and takes its changes again.
func (b *builder) putLayer(ctx context.Context, sess *session, layer string) error {
	f, err := os.Open(layer)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := b.rt.be.Archives.PutArchive(ctx, sess.id, "/", f, portlayer.PutArchiveOptions{}); err != nil {
		return err
	}
	return b.snapshot(ctx, sess)
}

// snapshot records the session's changes so far (a tar file and, per
// path, a digest of its header and content).
func (b *builder) snapshot(ctx context.Context, sess *session) error {
	_, rc, err := b.rt.be.Archives.ChangesLayer(ctx, sess.id)
	if err != nil {
		return stepErrorf("%s", httputils.PortLayerText(err))
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Join(b.rt.root, "tmp"), "changes-*.tar")
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	index, err := indexTar(io.TeeReader(rc, f))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return stepErrorf("changes of the build container: %v", err)
	}
	if sess.snap != "" {
		os.Remove(sess.snap)
	}
	sess.snap, sess.index = f.Name(), index
	return nil
}

// delta takes the session's changes again and writes to w what differs
// from the last snapshot: new and changed entries as they are, and a
// whiteout (OCI image-spec layer "Whiteouts") for each path that is gone.
// The new changes become the snapshot.
func (b *builder) delta(ctx context.Context, sess *session, w io.Writer) error {
	prev := sess.index
	if err := b.snapshot(ctx, sess); err != nil {
		return err
	}
	cur := sess.index
	f, err := os.Open(sess.snap)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(w)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := entryName(h.Name)
		if prev[name] == cur[name] {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	var gone []string
	for name := range prev {
		if _, ok := cur[name]; ok || strings.HasPrefix(path.Base(name), whiteoutPrefix) {
			continue
		}
		gone = append(gone, name)
	}
	slices.Sort(gone)
	for i, name := range gone {
		// A path under a directory that is gone goes with it.
		if slices.ContainsFunc(gone[:i], func(p string) bool { return strings.HasPrefix(name, p+"/") }) {
			continue
		}
		wh := path.Join(path.Dir(name), whiteoutPrefix+path.Base(name))
		if _, ok := cur[wh]; ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: wh, Typeflag: tar.TypeReg, Mode: 0o600, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	return tw.Close()
}

// whiteoutPrefix marks a deleted path in a layer (OCI image-spec).
const whiteoutPrefix = ".wh."

// entryName is a tar member's path without a leading "./" or "/" and
// without a trailing "/".
func entryName(n string) string {
	return strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+n), "/"), "/")
}

// indexTar digests each member of a tar: its type, mode, owner, size, link
// target, modification time and content.
func indexTar(r io.Reader) (map[string]string, error) {
	index := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return index, nil
		}
		if err != nil {
			return nil, err
		}
		d := sha256.New()
		fmt.Fprintf(d, "%c\x00%o\x00%d\x00%d\x00%d\x00%s\x00%d\x00%d:%d\x00", h.Typeflag, h.Mode, h.Uid, h.Gid, h.Size, h.Linkname, h.ModTime.UnixNano(), h.Devmajor, h.Devminor)
		for _, k := range slices.Sorted(maps.Keys(h.PAXRecords)) {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				fmt.Fprintf(d, "%s=%s\x00", k, h.PAXRecords[k])
			}
		}
		if _, err := io.Copy(d, tr); err != nil {
			return nil, err
		}
		index[entryName(h.Name)] = hex.EncodeToString(d.Sum(nil))
	}
}
