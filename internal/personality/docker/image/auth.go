package image

import (
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/registry"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// AuthRoutes serve POST /auth (docker login; Engine API v1.50 "Check auth
// configuration"): the body's credentials are checked against the
// registry; 200 {"Status":"Login Succeeded"} or 401 with dockerd's text.
// The daemon keeps nothing: the CLI stores the credentials and sends them
// with each pull and push.
func AuthRoutes(login portlayer.RegistryLogin) []httputils.Route {
	return []httputils.Route{httputils.NewRoute(http.MethodPost, "/auth", func(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
		var cfg registry.AuthConfig
		if err := httputils.ReadJSON(r, &cfg); err != nil {
			return err
		}
		err := login.Login(r.Context(), cfg.ServerAddress, portlayer.RegistryAuth{
			Username: cfg.Username, Password: cfg.Password, IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken,
		})
		switch {
		case err == nil:
			return httputils.WriteJSON(w, http.StatusOK, registry.AuthResponse{Status: "Login Succeeded"})
		case errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
			return httputils.Classify(errdefs.ErrUnauthenticated, err, httputils.PortLayerText(err))
		case errdefs.IsInvalidArgument(err):
			return httputils.Classify(errdefs.ErrInvalidArgument, err, httputils.PortLayerText(err))
		}
		return err
	})}
}
