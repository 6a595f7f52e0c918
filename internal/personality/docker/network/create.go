package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"

	"github.com/vchproject/vch/internal/personality/docker/httputils"
	"github.com/vchproject/vch/internal/portlayer"
)

// createRequest is the body of POST /networks/create as API v1.50 clients
// send it. Addresses stay strings so malformed ones get dockerd's texts
// rather than a JSON decoding error.
type createRequest struct {
	Name string
	// CheckDuplicate is ignored: names are always unique (API 1.44 on).
	CheckDuplicate *bool
	Driver         string
	Scope          string
	EnableIPv4     *bool
	EnableIPv6     *bool
	IPAM           *ipamRequest
	Internal       bool
	Attachable     bool
	Ingress        bool
	ConfigOnly     bool
	ConfigFrom     *struct{ Network string }
	Options        map[string]string
	Labels         map[string]string
}

type ipamRequest struct {
	Driver  string
	Options map[string]string
	Config  []ipamConfigRequest
}

type ipamConfigRequest struct {
	Subnet     string
	IPRange    string
	Gateway    string
	AuxAddress map[string]string `json:"AuxiliaryAddresses"`
}

// Driver options dockerd reads itself (libnetwork's netlabel).
const (
	optEnableIPv4 = "com.docker.network.enable_ipv4"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
)

// predefinedNames are the names dockerd reserves on Linux.
var predefinedNames = map[string]bool{"bridge": true, "host": true, "none": true, "default": true}

// errNotSupported is a 400 for a Docker feature vch does not have.
func errNotSupported(format string, a ...any) error {
	return httputils.InvalidArgument(format, a...)
}

// pluginNotFound is dockerd's 404 for a network or IPAM driver it cannot
// find.
func pluginNotFound(name string) error {
	return httputils.Classify(errdefs.ErrNotFound, nil, fmt.Sprintf("plugin %q not found", name))
}

// postCreate serves POST /networks/create (Engine API v1.50 "Create a
// network"): 201 {"Id": ..., "Warning": ""}. Checks run in dockerd 28's
// order with its texts: 403 for a predefined name, 400 "invalid network
// config" for bad IPAM addresses, 400 "invalid name: name is empty", 409
// "network with name x already exists", 404 `plugin "x" not found` for a
// driver other than bridge. What vch lacks (IPv6, several subnets,
// auxiliary addresses, config-only networks) is a 400 saying so.
func (rt *Router) postCreate(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	ctx := r.Context()
	var req createRequest
	if err := httputils.ReadJSON(r, &req); err != nil {
		return err
	}
	if predefinedNames[req.Name] {
		return httputils.Classify(errdefs.ErrPermissionDenied, nil, fmt.Sprintf("operation is not permitted on predefined %s network ", req.Name))
	}
	// EnableIPv4 arrived in API 1.48; older clients' value is ignored.
	if !httputils.VersionAtLeast(ctx, "1.48") {
		req.EnableIPv4 = nil
	}
	enableIPv4, err := boolOption(req.EnableIPv4, req.Options, optEnableIPv4, true)
	if err != nil {
		return err
	}
	enableIPv6, err := boolOption(req.EnableIPv6, req.Options, optEnableIPv6, false)
	if err != nil {
		return err
	}
	if err := validateIPAM(req.IPAM); err != nil {
		return err
	}
	if strings.TrimSpace(req.Name) == "" {
		return httputils.InvalidArgument("invalid name: name is empty")
	}
	if err := rt.checkUnique(ctx, req.Name); err != nil {
		return err
	}
	if req.ConfigFrom != nil && req.ConfigFrom.Network != "" {
		// vch has no config-only networks, so none can be referred to.
		return httputils.Classify(errdefs.ErrNotFound, nil, fmt.Sprintf("configuration network %q does not exist", req.ConfigFrom.Network))
	}
	if req.ConfigOnly {
		return errNotSupported("config-only networks are not supported by vch")
	}
	switch req.Driver {
	case "", driverBridge:
	case driverNull:
		return httputils.Classify(errdefs.ErrPermissionDenied, nil, `only one instance of "null" network is allowed`)
	default:
		return pluginNotFound(req.Driver)
	}
	if req.Ingress {
		return httputils.Classify(errdefs.ErrPermissionDenied, nil, "Ingress network can only be global scope network")
	}
	switch req.Scope {
	case "", scopeLocal:
	case "swarm":
		return httputils.Classify(errdefs.ErrPermissionDenied, nil, "cannot create a swarm scoped network when swarm is not active")
	default:
		return errNotSupported("invalid scope %q: vch networks are local", req.Scope)
	}
	spec := portlayer.NetworkSpec{
		Name:     req.Name,
		Driver:   driverBridge,
		Internal: req.Internal,
		Labels:   req.Labels,
		Options:  req.Options,
	}
	if err := ipamSpec(req.IPAM, &spec); err != nil {
		return err
	}
	if !enableIPv4 {
		return errNotSupported("IPv4 cannot be disabled: vch networks are IPv4 only")
	}
	if enableIPv6 {
		return errNotSupported("IPv6 is not supported by vch yet: networks are IPv4 only")
	}

	n, err := rt.nets.CreateNetwork(ctx, spec)
	switch {
	case err == nil:
	case errdefs.IsAlreadyExists(err):
		return errNameTaken(req.Name, err)
	case errdefs.IsConflict(err):
		// dockerd's IPAM text and code for a subnet overlapping another.
		return httputils.Classify(errdefs.ErrPermissionDenied, err, "Pool overlaps with other one on this address space")
	case errdefs.IsResourceExhausted(err):
		// dockerd's ipamapi.ErrNoMoreSubnets, a 400.
		return httputils.Classify(errdefs.ErrInvalidArgument, err, "all predefined address pools have been fully subnetted")
	case errdefs.IsInvalidArgument(err):
		return httputils.Classify(errdefs.ErrInvalidArgument, err, httputils.PortLayerText(err))
	default:
		return fmt.Errorf("create network %s: %w", req.Name, err)
	}
	rt.log.InfoContext(ctx, "network created", slog.String("network", n.Name), slog.String("id", n.ID))
	return httputils.WriteJSON(w, http.StatusCreated, network.CreateResponse{ID: n.ID})
}

// errNameTaken is dockerd's 409 for a duplicate network name.
func errNameTaken(name string, cause error) error {
	return httputils.Classify(errdefs.ErrAlreadyExists, cause, fmt.Sprintf("network with name %s already exists", name))
}

// checkUnique answers 409 if a network is named name already.
func (rt *Router) checkUnique(ctx context.Context, name string) error {
	nets, err := rt.nets.ListNetworks(ctx)
	if err != nil {
		return fmt.Errorf("create network %s: %w", name, err)
	}
	for _, n := range nets {
		if n.Name == name {
			return errNameTaken(name, nil)
		}
	}
	return nil
}

// boolOption resolves a flag that may be set in the request (field) or as
// a driver option (key in opts), field first, as dockerd does; def when
// neither is. 400 `driver-opt "<key>" is not a valid bool` for a bad
// option.
func boolOption(field *bool, opts map[string]string, key string, def bool) (bool, error) {
	if field != nil {
		return *field, nil
	}
	v, ok := opts[key]
	if !ok {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, httputils.Classify(errdefs.ErrInvalidArgument, err, fmt.Sprintf("driver-opt %q is not a valid bool", key))
	}
	return b, nil
}

// validateIPAM checks every IPAM config entry as dockerd 28's ValidateIPAM
// does, with its texts: each problem is listed, and the error reads
// "invalid network config:\n<problem>" (several as "* a\n* b"). IPv6
// entries are left to ipamSpec, which refuses them.
func validateIPAM(ipam *ipamRequest) error {
	if ipam == nil {
		return nil
	}
	var errs []error
	for _, cfg := range ipam.Config {
		subnet, err := netip.ParsePrefix(cfg.Subnet)
		if err != nil {
			errs = append(errs, fmt.Errorf("invalid subnet %s: invalid CIDR block notation", cfg.Subnet))
			continue
		}
		if subnet.Addr().Is6() {
			continue
		}
		if subnet != subnet.Masked() {
			errs = append(errs, fmt.Errorf("invalid subnet %s: it should be %s", subnet, subnet.Masked()))
		}
		errs = append(errs, validateIPRange(cfg.IPRange, subnet)...)
		if err := validateAddress(cfg.Gateway, subnet); err != nil {
			errs = append(errs, fmt.Errorf("invalid gateway %s: %w", cfg.Gateway, err))
		}
		for name, aux := range cfg.AuxAddress {
			if err := validateAddress(aux, subnet); err != nil {
				errs = append(errs, fmt.Errorf("invalid auxiliary address %s: %w", name, err))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return httputils.Classify(errdefs.ErrInvalidArgument, errors.Join(errs...), "invalid network config:\n"+joinErrors(errs))
}

// joinErrors formats problems as dockerd's multierror does: one as is,
// several as a "* " list with continuation lines indented.
func joinErrors(errs []error) string {
	if len(errs) == 1 {
		return strings.TrimSpace(errs[0].Error())
	}
	lines := make([]string, 0, len(errs))
	for _, e := range errs {
		lines = append(lines, strings.ReplaceAll(e.Error(), "\n", "\n\t"))
	}
	return "* " + strings.Join(lines, "\n* ")
}

// validateIPRange checks an IPv4 subnet's ip-range (empty is fine).
func validateIPRange(ipRange string, subnet netip.Prefix) []error {
	if ipRange == "" {
		return nil
	}
	p, err := netip.ParsePrefix(ipRange)
	if err != nil {
		return []error{fmt.Errorf("invalid ip-range %s: invalid CIDR block notation", ipRange)}
	}
	if !p.Addr().Is4() {
		return []error{fmt.Errorf("invalid ip-range %s: parent subnet is an IPv4 block", ipRange)}
	}
	var errs []error
	if p.Bits() < subnet.Bits() {
		errs = append(errs, fmt.Errorf("invalid ip-range %s: CIDR block is bigger than its parent subnet %s", ipRange, subnet))
	}
	if p != p.Masked() {
		errs = append(errs, fmt.Errorf("invalid ip-range %s: it should be %s", p, p.Masked()))
	}
	if !subnet.Overlaps(p) {
		errs = append(errs, fmt.Errorf("invalid ip-range %s: parent subnet %s doesn't contain ip-range", ipRange, subnet))
	}
	return errs
}

// validateAddress checks that address (empty is fine) is an IPv4 address
// inside subnet.
func validateAddress(address string, subnet netip.Prefix) error {
	if address == "" {
		return nil
	}
	a, err := netip.ParseAddr(address)
	if err != nil {
		return errors.New("invalid address")
	}
	if !a.Is4() {
		return errors.New("parent subnet is an IPv4 block")
	}
	if !subnet.Contains(a) {
		return fmt.Errorf("parent subnet %s doesn't contain this address", subnet)
	}
	return nil
}

// ipamSpec copies a validated IPAM request into spec: the IPAM driver must
// be dockerd's "default" (404 `plugin "x" not found` otherwise), and vch
// networks take one IPv4 subnet with an optional gateway and ip-range; no
// IPAM options or auxiliary addresses.
func ipamSpec(ipam *ipamRequest, spec *portlayer.NetworkSpec) error {
	if ipam == nil {
		return nil
	}
	if ipam.Driver != "" && ipam.Driver != ipamDefault {
		return pluginNotFound(ipam.Driver)
	}
	if len(ipam.Options) > 0 {
		return errNotSupported("IPAM driver options are not supported by vch")
	}
	for _, cfg := range ipam.Config {
		if p, err := netip.ParsePrefix(cfg.Subnet); err == nil && p.Addr().Is6() {
			return errNotSupported("IPv6 subnet %s: IPv6 is not supported by vch yet, networks are IPv4 only", cfg.Subnet)
		}
	}
	switch len(ipam.Config) {
	case 0:
		return nil
	case 1:
	default:
		return errNotSupported("a vch network has one IPv4 subnet: got %d", len(ipam.Config))
	}
	cfg := ipam.Config[0]
	if len(cfg.AuxAddress) > 0 {
		return errNotSupported("auxiliary addresses are not supported by vch")
	}
	// validateIPAM has parsed each of these already.
	spec.Subnet = netip.MustParsePrefix(cfg.Subnet)
	if cfg.Gateway != "" {
		spec.Gateway = netip.MustParseAddr(cfg.Gateway)
	}
	if cfg.IPRange != "" {
		spec.IPRange = netip.MustParsePrefix(cfg.IPRange)
	}
	return nil
}
