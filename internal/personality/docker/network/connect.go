package network

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// connectRequest is the body of POST /networks/{id}/connect as API v1.50
// clients send it; addresses stay strings so malformed ones get dockerd's
// texts. The operational fields clients may echo back (NetworkID,
// IPAddress, Gateway...) are ignored, as dockerd does.
type connectRequest struct {
	Container      string
	EndpointConfig *endpointConfig
}

type endpointConfig struct {
	IPAMConfig *struct {
		IPv4Address  string
		IPv6Address  string
		LinkLocalIPs []string
	}
	Links      []string
	Aliases    []string
	DriverOpts map[string]string
	GwPriority int
	MacAddress string
}

// disconnectRequest is the body of POST /networks/{id}/disconnect.
type disconnectRequest struct {
	Container string
	Force     bool
}

// errNoConnector answers connect and disconnect when no NetworkConnector
// is wired in.
var errNoConnector = errdefs.ErrNotImplemented.WithMessage("connecting containers to networks is not supported by this VCH yet")

// errInvalidContainer is dockerd's 400 for an empty container reference.
func errInvalidContainer(ref string) error {
	return httputils.InvalidArgument("invalid name or ID supplied: %q", ref)
}

// postConnect serves POST /networks/{id}/connect (Engine API v1.50
// "Connect a container to a network"): 200 with no body. The network is
// resolved first (404 "network x not found"), the endpoint settings are
// checked as dockerd 28 does (400 "invalid endpoint settings:\n..."), and
// the connector's errors keep its dockerd texts: 404 "No such container:
// x", 403 for an endpoint or address already in use (dockerd's code), 400
// for settings that do not fit.
func (rt *Router) postConnect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	var req connectRequest
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	if rt.conn == nil {
		return errNoConnector
	}
	if req.Container == "" {
		return errInvalidContainer(req.Container)
	}
	n, err := rt.lookup(ctx, vars["id"])
	if err != nil {
		return err
	}
	spec, err := endpointSpec(n, req.EndpointConfig)
	if err != nil {
		return err
	}
	if err := rt.conn.Connect(ctx, req.Container, spec); err != nil {
		return connectorErr("connect", req.Container, n.Name, err)
	}
	return nil
}

// postDisconnect serves POST /networks/{id}/disconnect (Engine API v1.50
// "Disconnect a container from a network"): 200 with no body. A network
// that does not exist goes to the connector by the name given, as dockerd
// does, so that a stopped container (or any, with Force) can drop a
// network removed after it was attached; the connector answers 404
// "network x not found" otherwise.
func (rt *Router) postDisconnect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctx := r.Context()
	var req disconnectRequest
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	if rt.conn == nil {
		return errNoConnector
	}
	if req.Container == "" {
		return errInvalidContainer(req.Container)
	}
	ref := vars["id"]
	name := ref
	n, err := rt.lookup(ctx, ref)
	switch {
	case err == nil:
		ref, name = n.ID, n.Name
	case errdefs.IsNotFound(err):
	default:
		return err
	}
	if err := rt.conn.Disconnect(ctx, req.Container, ref, req.Force); err != nil {
		return connectorErr("disconnect", req.Container, name, err)
	}
	return nil
}

// connectorErr gives a NetworkConnector error its HTTP class, keeping the
// connector's dockerd text: NotFound 404, InvalidArgument 400, Conflict
// 403 on connect (dockerd answers "endpoint with name x already exists in
// network y" and "Address already in use" with 403) and 409 on disconnect.
func connectorErr(op, container, network string, err error) error {
	msg := httputils.PortLayerText(err)
	switch {
	case errdefs.IsNotFound(err):
		return httputils.Classify(errdefs.ErrNotFound, err, msg)
	case errdefs.IsInvalidArgument(err):
		return httputils.Classify(errdefs.ErrInvalidArgument, err, msg)
	case errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err):
		if op == "connect" {
			return httputils.Classify(errdefs.ErrPermissionDenied, err, msg)
		}
		return httputils.Classify(errdefs.ErrConflict, err, msg)
	default:
		return fmt.Errorf("%s %s to network %s: %w", op, container, network, err)
	}
}

// endpointSpec checks a connect request's endpoint settings against n as
// dockerd 28's validateEndpointSettings does, with its texts, then refuses
// what vch does not support (IPv6, link-local addresses, a fixed MAC,
// driver options, gateway priority). The spec names n by ID.
func endpointSpec(n portlayer.Network, cfg *endpointConfig) (portlayer.EndpointSpec, error) {
	spec := portlayer.EndpointSpec{Network: n.ID}
	if cfg == nil {
		return spec, nil
	}
	var v4, v6 string
	var linkLocal []string
	if cfg.IPAMConfig != nil {
		v4, v6, linkLocal = cfg.IPAMConfig.IPv4Address, cfg.IPAMConfig.IPv6Address, cfg.IPAMConfig.LinkLocalIPs
	}

	var errs []error
	if n.Predefined {
		if v4 != "" || v6 != "" {
			errs = append(errs, errors.New("user specified IP address is supported on user defined networks only"))
		}
		if len(cfg.Aliases) > 0 {
			errs = append(errs, errors.New("network-scoped alias is supported only for containers in user defined networks"))
		}
	}
	var addr netip.Addr
	if v4 != "" {
		a, err := netip.ParseAddr(v4)
		if err != nil || !a.Unmap().Is4() || a.IsUnspecified() {
			errs = append(errs, fmt.Errorf("invalid IPv4 address: %s", v4))
		} else {
			addr = a.Unmap()
		}
	}
	if v6 != "" {
		if a, err := netip.ParseAddr(v6); err != nil || a.Is4() || a.Is4In6() || a.IsUnspecified() {
			errs = append(errs, fmt.Errorf("invalid IPv6 address: %s", v6))
		}
	}
	for _, ll := range linkLocal {
		if a, err := netip.ParseAddr(ll); err != nil || a.IsUnspecified() {
			errs = append(errs, fmt.Errorf("invalid link-local IP address: %s", ll))
		}
	}
	if !n.Predefined {
		if addr.IsValid() && n.Subnet.IsValid() && !n.Subnet.Contains(addr) {
			errs = append(errs, fmt.Errorf("no configured subnet or ip-range contain the IP address %s", v4))
		}
		if v6 != "" {
			// vch networks have no IPv6 subnet.
			errs = append(errs, errors.New("user specified IP address is supported only when connecting to networks with user configured subnets"))
		}
	}
	if cfg.MacAddress != "" {
		if _, err := net.ParseMAC(cfg.MacAddress); err != nil {
			return spec, httputils.Classify(errdefs.ErrInvalidArgument, err, "invalid MAC address "+cfg.MacAddress)
		}
	}
	if len(errs) > 0 {
		return spec, httputils.InvalidArgument("invalid endpoint settings:\n%s", joinErrors(errs))
	}

	switch {
	case len(linkLocal) > 0:
		return spec, errNotSupported("link-local addresses are not supported by vch")
	case cfg.MacAddress != "":
		return spec, errNotSupported("a fixed MAC address is not supported by vch: the MAC is derived from the IP address")
	case len(cfg.DriverOpts) > 0:
		return spec, errNotSupported("endpoint driver options are not supported by vch: got %s", strings.Join(slices.Sorted(maps.Keys(cfg.DriverOpts)), ", "))
	case cfg.GwPriority != 0:
		return spec, errNotSupported("gateway priority is not supported by vch: the default route goes through the first non-internal network")
	}
	spec.IPv4 = addr
	spec.Aliases = cfg.Aliases
	spec.Links = cfg.Links
	return spec, nil
}
