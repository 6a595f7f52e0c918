package container

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// UpdateRoutes serve POST /containers/{name}/update (docker update,
// Engine API v1.50 "Update a container"): the restart policy in any state
// (dockerd's validation; refused when AutoRemove is set), and the limits
// the guest enforces (-m, --memory-swap, --cpus, --cpu-quota/--cpu-period,
// --pids-limit; see ResourceLimits), at once in a running container whose
// VM can hold them, else 409 naming the VM's size. Other resource
// settings are refused (400 naming them).
func UpdateRoutes(u portlayer.Updater, compute portlayer.Compute) []httputils.Route {
	ur := &updateRouter{updater: u, rt: &Router{compute: compute}}
	return []httputils.Route{httputils.NewRoute(http.MethodPost, "/containers/{name}/update", ur.postUpdate)}
}

type updateRouter struct {
	updater portlayer.Updater
	rt      *Router
}

func (ur *updateRouter) postUpdate(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	name := vars["name"]
	var req container.UpdateConfig
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	if f := unsupportedResources(req.Resources); f != "" {
		return httputils.InvalidArgument("docker update %s is not supported by vch: a container's limits are --memory, --memory-swap, --cpus, --cpu-quota/--cpu-period and --pids-limit", f)
	}
	c, err := ur.rt.inspect(r.Context(), name)
	if err != nil {
		return err
	}
	_, hc := storedConfig(c)
	var u portlayer.ContainerUpdate
	if req.RestartPolicy.Name != "" {
		if hc.AutoRemove && req.RestartPolicy.Name != container.RestartPolicyDisabled {
			// 409, as dockerd answers it (a conflict with the container's
			// own setting, not a malformed request).
			return httputils.Classify(errdefs.ErrConflict, nil, "Restart policy cannot be updated because AutoRemove is enabled for the container")
		}
		if err := ValidateRestartPolicy(req.RestartPolicy, false); err != nil {
			return err
		}
		u.RestartPolicy = &portlayer.RestartPolicy{Name: string(req.RestartPolicy.Name), MaximumRetryCount: req.RestartPolicy.MaximumRetryCount}
		hc.RestartPolicy = req.RestartPolicy
	}
	if err := mergeResources(&hc.Resources, req.Resources); err != nil {
		return err
	}
	limits, err := ResourceLimits(hc.Resources, true)
	if err != nil {
		return err
	}
	u.Limits = &limits
	hcJSON, err := json.Marshal(hc)
	if err != nil {
		return fmt.Errorf("update: encode host config: %w", err)
	}
	u.Annotations = map[string][]byte{AnnotationHostConfig: hcJSON}
	if _, err := ur.updater.Update(r.Context(), c.ID, u); err != nil {
		switch {
		case errdefs.IsConflict(err):
			return httputils.Classify(errdefs.ErrConflict, err, httputils.PortLayerText(err))
		case errdefs.IsInvalidArgument(err):
			return httputils.Classify(errdefs.ErrInvalidArgument, err, httputils.PortLayerText(err))
		}
		return containerErr("update", name, err)
	}
	return httputils.WriteJSON(w, http.StatusOK, container.UpdateResponse{Warnings: []string{}})
}

// unsupportedResources names the first resource setting a VM cannot
// honour yet, or "".
func unsupportedResources(r container.Resources) string {
	switch {
	case r.CPUShares != 0:
		return "--cpu-shares"
	case r.CpusetCpus != "" || r.CpusetMems != "":
		return "--cpuset-cpus/--cpuset-mems"
	case r.BlkioWeight != 0:
		return "--blkio-weight"
	case r.MemoryReservation != 0:
		return "--memory-reservation"
	}
	return ""
}
