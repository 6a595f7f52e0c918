package container

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// ArchiveRoutes serve docker cp (HEAD/GET/PUT /containers/{name}/archive),
// docker export and docker diff over the port layer's Archives; compute
// resolves names first so a missing container is Docker's 404. volumes
// (may be nil) names a volume's Mountpoint in the error of a bad subpath.
func ArchiveRoutes(a portlayer.Archives, compute portlayer.Compute, volumes portlayer.Volumes) []httputils.Route {
	ar := &archiveRouter{archives: a, compute: compute}
	if volumes != nil {
		ar.volumes = volumes
	}
	return []httputils.Route{
		httputils.NewRoute(http.MethodHead, "/containers/{name}/archive", ar.headArchive),
		httputils.NewRoute(http.MethodGet, "/containers/{name}/archive", ar.getArchive),
		httputils.NewRoute(http.MethodPut, "/containers/{name}/archive", ar.putArchive),
		httputils.NewRoute(http.MethodGet, "/containers/{name}/export", ar.getExport),
		httputils.NewRoute(http.MethodGet, "/containers/{name}/changes", ar.getChanges),
	}
}

type archiveRouter struct {
	archives portlayer.Archives
	compute  portlayer.Compute
	volumes  volumeStore // nil: none
}

// pathErr gives an archive error dockerd's texts: a mount the
// maintenance VM could not set up as at a start (mountErr), a missing container
// is 404 "No such container: NAME" (the port layer's NotFound of kind
// container, decided with the operation), a missing path 404 "Could not
// find the file P in container NAME"; other classes keep the guest's
// text (400 "extraction point is not a directory", …).
func (ar *archiveRouter) pathErr(ctx context.Context, name, p string, err error) error {
	if se := mountErr(ctx, ar.volumes, err); se != nil {
		return se // the maintenance VM could not mount a volume's subpath
	}
	if pe := portlayer.AsError(err); pe != nil && pe.Class == portlayer.ClassNotFound && pe.Kind == portlayer.KindContainer {
		return containerErr("archive", name, err)
	}
	switch {
	case errdefs.IsNotFound(err):
		return httputils.Classify(errdefs.ErrNotFound, err, "Could not find the file "+p+" in container "+name)
	case errdefs.IsInvalidArgument(err), errdefs.IsConflict(err):
		return httputils.Classify(errdefs.Resolve(err), err, httputils.PortLayerText(err))
	}
	return err
}

// statHeader is Docker's container.PathStat as the header carries it.
type statHeader struct {
	Name       string    `json:"name"`
	Size       int64     `json:"size"`
	Mode       uint32    `json:"mode"`
	Mtime      time.Time `json:"mtime"`
	LinkTarget string    `json:"linkTarget"`
}

func setStatHeader(w http.ResponseWriter, st portlayer.PathStat) {
	b, _ := json.Marshal(statHeader{Name: st.Name, Size: st.Size, Mode: uint32(st.Mode), Mtime: st.Mtime, LinkTarget: st.LinkTarget})
	w.Header().Set("X-Docker-Container-Path-Stat", base64.StdEncoding.EncodeToString(b))
}

// archivePath reads the ?path= of an archive request (400 when empty).
func (ar *archiveRouter) archivePath(r *http.Request, name string) (string, error) {
	p := r.FormValue("path")
	if p == "" {
		return "", httputils.InvalidArgument("path cannot be empty")
	}
	return p, nil
}

func (ar *archiveRouter) headArchive(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	p, err := ar.archivePath(r, name)
	if err != nil {
		return err
	}
	st, err := ar.archives.StatPath(r.Context(), name, p)
	if err != nil {
		return ar.pathErr(r.Context(), name, p, err)
	}
	setStatHeader(w, st)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (ar *archiveRouter) getArchive(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	p, err := ar.archivePath(r, name)
	if err != nil {
		return err
	}
	st, rc, err := ar.archives.GetArchive(r.Context(), name, p)
	if err != nil {
		return ar.pathErr(r.Context(), name, p, err)
	}
	defer rc.Close()
	setStatHeader(w, st)
	return streamTar(w, rc)
}

// streamTar sends a tar stream; a failure once bytes went out aborts the
// connection, so a cut archive never looks complete.
func streamTar(w http.ResponseWriter, rc io.Reader) error {
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (ar *archiveRouter) putArchive(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	p, err := ar.archivePath(r, name)
	if err != nil {
		return err
	}
	opts := portlayer.PutArchiveOptions{
		NoOverwriteDirNonDir: httputils.BoolValue(r, "noOverwriteDirNonDir"),
		CopyUIDGID:           httputils.BoolValue(r, "copyUIDGID"),
	}
	if err := ar.archives.PutArchive(r.Context(), name, p, r.Body, opts); err != nil {
		return ar.pathErr(r.Context(), name, p, err)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (ar *archiveRouter) getExport(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	rc, err := ar.archives.Export(r.Context(), name)
	if err != nil {
		if se := mountErr(r.Context(), ar.volumes, err); se != nil {
			return se
		}
		return containerErr("export", name, err)
	}
	defer rc.Close()
	return streamTar(w, rc)
}

// change is Docker's container.FilesystemChange.
type change struct {
	Path string `json:"Path"`
	Kind int    `json:"Kind"`
}

func (ar *archiveRouter) getChanges(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	list, err := ar.archives.Changes(r.Context(), name)
	if err != nil {
		if se := mountErr(r.Context(), ar.volumes, err); se != nil {
			return se
		}
		return containerErr("changes", name, err)
	}
	out := make([]change, 0, len(list))
	for _, c := range list {
		out = append(out, change{Path: c.Path, Kind: int(c.Kind)})
	}
	return httputils.WriteJSON(w, http.StatusOK, out)
}
