package container

import (
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// PauseRoutes serves POST /containers/{id}/pause and /unpause (Engine API
// v1.50): 204 on success, 404 "No such container", 409 with Docker's text
// ("Container <id> is not running", "… is already paused", "… is not
// paused").
func PauseRoutes(p portlayer.Pauser) []httputils.Route {
	handle := func(op func(r *http.Request, name string) error) httputils.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
			if err := op(r, vars["name"]); err != nil {
				if errdefs.IsConflict(err) {
					return httputils.Classify(errdefs.ErrConflict, err, httputils.PortLayerText(err))
				}
				return containerErr("pause", vars["name"], err)
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return []httputils.Route{
		httputils.NewRoute(http.MethodPost, "/containers/{name}/pause", handle(func(r *http.Request, name string) error { return p.Pause(r.Context(), name) })),
		httputils.NewRoute(http.MethodPost, "/containers/{name}/unpause", handle(func(r *http.Request, name string) error { return p.Unpause(r.Context(), name) })),
	}
}
