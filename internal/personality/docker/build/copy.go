package build

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/sys/user"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// copyRequest is a COPY or ADD after expansion.
type copyRequest struct {
	name         string // "COPY" or "ADD"
	sd           instructions.SourcesAndDest
	from         string
	chown, chmod string
	unpack       bool // ADD: local tar archives are unpacked
	checksum     string
}

// entry is one thing a COPY puts in its layer: a host file, directory or
// link (host set) or a local archive ADD unpacks (archive set).
type entry struct {
	host    string
	dest    string // path in the image, without the leading "/"
	info    fs.FileInfo
	archive bool
}

// copyStep builds COPY/ADD's layer on the host: sources from the context
// (or, with --from, a stage's or an image's filesystem), Docker's rules
// for the destination (a trailing "/", several sources or a directory
// there means "into"; relative to WORKDIR), root ownership unless
// --chown, also with --from (names from the stage image's /etc/passwd and /etc/group),
// modes kept unless --chmod. The cache key is the checksum of what is
// copied (names, modes, owners, links, contents; not times, as Docker).
// Errors with dockerd's texts: a source outside the context ("forbidden
// path outside the build context"), a source that does not exist, ADD of
// a URL (not fetched by this builder).
func (b *builder) copyStep(ctx context.Context, st *stage, req copyRequest) error {
	if len(req.sd.SourceContents) > 0 {
		return stepErrorf("%s with a here-document needs BuildKit, which vch does not provide", req.name)
	}
	if req.checksum != "" {
		return stepErrorf("ADD --checksum needs a remote source, which vch cannot fetch")
	}
	root := b.ctxDir
	if req.from != "" {
		id, ok := b.stageResult(req.from)
		if !ok {
			img, err := b.image(ctx, req.from, false)
			if err != nil {
				return err
			}
			id = img.ID
		}
		if id == "" {
			return stepErrorf("%s --from=%s: the stage is an empty scratch image", req.name, req.from)
		}
		tree, err := b.tree(ctx, id)
		if err != nil {
			return err
		}
		root = tree
	}
	uid, gid := 0, 0 // root's, from the context and --from alike (Docker's rule)
	if req.chown != "" {
		var err error
		if uid, gid, err = b.chown(ctx, st, req.chown); err != nil {
			return err
		}
	}
	var mode *fs.FileMode
	if req.chmod != "" {
		m, err := strconv.ParseUint(req.chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return stepErrorf("invalid chmod parameter: %s", req.chmod)
		}
		fm := fs.FileMode(m)
		mode = &fm
	}

	dest := req.sd.DestPath
	destIsDir := strings.HasSuffix(dest, "/") || dest == "." || strings.HasSuffix(dest, "/.")
	if !path.IsAbs(dest) {
		dest = path.Join("/", st.cfg.WorkingDir, dest)
	}
	dest = path.Clean(dest)

	var sources []string
	for _, src := range req.sd.SourcePaths {
		if isURL(src) {
			return stepErrorf("%s %s: remote sources are not supported by vch's builder: download the file into the build context", req.name, src)
		}
		matches, err := b.expandSource(root, src, req.from != "")
		if err != nil {
			return err
		}
		sources = append(sources, matches...)
	}
	if len(sources) > 1 && !destIsDir {
		return stepErrorf("When using %s with more than one source file, the destination must be a directory and end with a /", req.name)
	}

	var entries []entry
	kind := "file"
	for _, src := range sources {
		fi, err := os.Stat(src)
		if err != nil {
			return stepErrorf("%s failed: %v", req.name, err)
		}
		switch {
		case fi.IsDir():
			kind = "dir"
			es, err := walkInto(src, strings.TrimPrefix(dest, "/"))
			if err != nil {
				return stepErrorf("%s failed: %v", req.name, err)
			}
			entries = append(entries, es...)
		case req.name == "ADD" && req.unpack && isArchive(src):
			entries = append(entries, entry{host: src, dest: strings.TrimPrefix(dest, "/"), info: fi, archive: true})
		default:
			target := dest
			if destIsDir {
				target = path.Join(dest, filepath.Base(src))
			} else if into, err := b.isDirInImage(ctx, st, dest); err != nil {
				return err
			} else if into {
				target = path.Join(dest, filepath.Base(src))
			}
			entries = append(entries, entry{host: src, dest: strings.TrimPrefix(target, "/"), info: fi})
		}
	}
	if len(sources) > 1 {
		kind = "multi"
	}
	sum, err := checksum(entries, uid, gid, mode)
	if err != nil {
		return stepErrorf("%s failed: %v", req.name, err)
	}
	createdBy := strings.Join(append(slices.Clone(st.shell), fmt.Sprintf("#(nop) %s %s:%s in %s ", req.name, kind, sum, req.sd.DestPath)), " ")
	key := stepKey(st.image, createdBy, st.cfg, st.extraKey())
	if id, ok := b.cached(ctx, key, st.image); ok {
		st.image = id
		return nil
	}
	layer, err := os.CreateTemp(filepath.Join(b.rt.root, "tmp"), "layer-*.tar")
	if err != nil {
		return fmt.Errorf("build: layer: %w", err)
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	if err := writeLayer(layer, entries, uid, gid, mode); err != nil {
		return stepErrorf("%s failed: %v", req.name, err)
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("build: layer: %w", err)
	}
	img, err := b.rt.be.Committer.Commit(ctx, portlayer.CommitSpec{Parent: st.image, Layer: layer, Config: st.cfg, ConfigExtra: st.extra, CreatedBy: createdBy})
	if err != nil {
		return stepErrorf("%s", httputils.PortLayerText(err))
	}
	if sess := st.sess; sess != nil && sess.image == st.image {
		if err := b.putLayer(ctx, sess, layer.Name()); err != nil {
			b.rt.log.Info("build container left behind the stage", "container", sess.id, "err", err)
			b.endSession(st)
		} else {
			sess.image = img.ID
		}
	}
	return b.stepDone(st, key, img, st.cfg)
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "git@")
}

// expandSource resolves one source (wildcards allowed, Go's path.Match
// syntax as dockerd's) under root. A source that climbs out of root, or
// resolves through a link to outside it, is refused with dockerd's text.
func (b *builder) expandSource(root, src string, fromImage bool) ([]string, error) {
	rel := path.Clean("/" + filepath.ToSlash(src))
	if strings.HasPrefix(path.Clean(filepath.ToSlash(src)), "../") || path.Clean(filepath.ToSlash(src)) == ".." {
		return nil, stepErrorf("forbidden path outside the build context: %s ()", src)
	}
	var candidates []string
	if strings.ContainsAny(rel, "*?[") {
		m, err := filepath.Glob(filepath.Join(root, rel))
		if err != nil {
			return nil, stepErrorf("%v", err)
		}
		candidates = m
		if len(candidates) == 0 {
			return nil, stepErrorf("COPY failed: no source files were specified")
		}
	} else {
		candidates = []string{filepath.Join(root, rel)}
	}
	var out []string
	for _, c := range candidates {
		real, err := filepath.EvalSymlinks(c)
		if errors.Is(err, fs.ErrNotExist) {
			what := "file not found in build context or excluded by .dockerignore"
			if fromImage {
				what = "no such file or directory"
			}
			return nil, stepErrorf("COPY failed: %s: stat %s: file does not exist", what, strings.TrimPrefix(rel, "/"))
		}
		if err != nil {
			return nil, stepErrorf("COPY failed: %v", err)
		}
		realRoot, err := filepath.EvalSymlinks(root)
		if err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		if real != realRoot && !strings.HasPrefix(real, realRoot+string(filepath.Separator)) {
			return nil, stepErrorf("forbidden path outside the build context: %s ()", src)
		}
		out = append(out, real)
	}
	return out, nil
}

// walkInto lists a directory's contents (not the directory itself) as
// entries under dest; links are kept as links, never followed.
func walkInto(dir, dest string) ([]entry, error) {
	var out []entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, entry{host: p, dest: path.Join(dest, filepath.ToSlash(rel)), info: fi})
		return nil
	})
	return out, err
}

// isArchive reports whether a file is a tar archive, plain or in one of
// the compressions ADD unpacks.
func isArchive(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	r, err := decompress(f)
	if err != nil {
		return false
	}
	_, err = tar.NewReader(r).Next()
	return err == nil
}

// header is the tar header of an entry with the step's owner and mode.
func header(e entry, uid, gid int, mode *fs.FileMode) (*tar.Header, error) {
	link := ""
	if e.info.Mode()&fs.ModeSymlink != 0 {
		l, err := os.Readlink(e.host)
		if err != nil {
			return nil, err
		}
		link = l
	}
	h, err := tar.FileInfoHeader(e.info, link)
	if err != nil {
		return nil, err
	}
	h.Name = e.dest
	if e.info.IsDir() {
		h.Name += "/"
	}
	h.Uname, h.Gname = "", ""
	if uid >= 0 {
		h.Uid, h.Gid = uid, gid
	}
	if mode != nil && h.Typeflag != tar.TypeSymlink {
		h.Mode = int64(*mode)
	}
	h.Format = tar.FormatPAX
	h.AccessTime, h.ChangeTime = h.ModTime, h.ModTime
	return h, nil
}

// checksum hashes what a COPY copies, times left out.
func checksum(entries []entry, uid, gid int, mode *fs.FileMode) (string, error) {
	h := sha256.New()
	for _, e := range entries {
		if e.archive {
			fmt.Fprintf(h, "archive %s\x00", e.dest)
			if err := hashFile(h, e.host); err != nil {
				return "", err
			}
			continue
		}
		hd, err := header(e, uid, gid, mode)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00%d\x00%d\x00%s\x00%c\x00", hd.Name, hd.Mode, hd.Uid, hd.Gid, hd.Size, hd.Linkname, hd.Typeflag)
		if hd.Typeflag == tar.TypeReg {
			if err := hashFile(h, e.host); err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashFile(h hash.Hash, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}

// writeLayer writes the entries as an uncompressed layer tar.
func writeLayer(w io.Writer, entries []entry, uid, gid int, mode *fs.FileMode) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if e.archive {
			if err := copyArchive(tw, e, uid, gid); err != nil {
				return fmt.Errorf("unpack %s: %w", filepath.Base(e.host), err)
			}
			continue
		}
		hd, err := header(e, uid, gid, mode)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(hd); err != nil {
			return err
		}
		if hd.Typeflag == tar.TypeReg {
			f, err := os.Open(e.host)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// copyArchive re-emits a local archive's members under the entry's
// destination directory (ADD's unpacking); members that climb out of it
// are refused.
func copyArchive(tw *tar.Writer, e entry, uid, gid int) error {
	f, err := os.Open(e.host)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := decompress(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean("/" + h.Name)
		if strings.Contains(h.Name, "..") && path.Clean(h.Name) != strings.TrimPrefix(name, "/") {
			return fmt.Errorf("member %q climbs out of the destination", h.Name)
		}
		if name == "/" {
			continue
		}
		h.Name = path.Join(e.dest, name)
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = path.Join(e.dest, path.Clean("/"+h.Linkname))
		}
		if uid >= 0 {
			h.Uid, h.Gid, h.Uname, h.Gname = uid, gid, "", ""
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// tree returns the flattened filesystem of an image, made once per build.
func (b *builder) tree(ctx context.Context, id string) (string, error) {
	if t, ok := b.trees[id]; ok {
		return t, nil
	}
	dir, release, err := b.rt.be.Trees.Tree(ctx, id)
	if err != nil {
		return "", stepErrorf("%s", httputils.PortLayerText(err))
	}
	b.releases = append(b.releases, release)
	b.trees[id] = dir
	return dir, nil
}

// isDirInImage reports whether p is a directory in the stage's image (a
// COPY of one file to an existing directory goes into it).
func (b *builder) isDirInImage(ctx context.Context, st *stage, p string) (bool, error) {
	if st.image == "" {
		return false, nil
	}
	t, err := b.tree(ctx, st.image)
	if err != nil {
		return false, err
	}
	real, err := filepath.EvalSymlinks(filepath.Join(t, p))
	if err != nil || (real != t && !strings.HasPrefix(real, t+string(filepath.Separator))) {
		return false, nil
	}
	fi, err := os.Stat(real)
	return err == nil && fi.IsDir(), nil
}

// chown resolves --chown=user[:group] as the classic builder does: numbers
// as they are, names from the stage image's /etc/passwd and /etc/group; a
// missing group means the group named like the user (or the same number).
func (b *builder) chown(ctx context.Context, st *stage, spec string) (int, int, error) {
	u, g, ok := strings.Cut(spec, ":")
	if !ok {
		g = u
	}
	uid, uerr := strconv.Atoi(u)
	gid, gerr := strconv.Atoi(g)
	if uerr == nil && gerr == nil {
		return uid, gid, nil
	}
	if st.image == "" {
		return 0, 0, stepErrorf("unable to convert uid/gid chown string to host mapping: no image to look %q up in", spec)
	}
	t, err := b.tree(ctx, st.image)
	if err != nil {
		return 0, 0, err
	}
	if uerr != nil {
		users, err := user.ParsePasswdFileFilter(filepath.Join(t, "etc", "passwd"), func(x user.User) bool { return x.Name == u })
		if err != nil || len(users) == 0 {
			return 0, 0, stepErrorf("unable to convert uid/gid chown string to host mapping: can't find uid for user %s: no such user: %s", u, u)
		}
		uid = users[0].Uid
	}
	if gerr != nil {
		groups, err := user.ParseGroupFileFilter(filepath.Join(t, "etc", "group"), func(x user.Group) bool { return x.Name == g })
		if err != nil || len(groups) == 0 {
			return 0, 0, stepErrorf("unable to convert uid/gid chown string to host mapping: can't find gid for group %s: no such group: %s", g, g)
		}
		gid = groups[0].Gid
	}
	return uid, gid, nil
}
