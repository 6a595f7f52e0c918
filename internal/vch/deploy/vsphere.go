package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor/vsphere"
	"github.com/vchproject/vch/internal/portlayer/volume"
)

// A vSphere VCH (vch create --target): vch create makes, through the
// vsphere driver, a resource pool, a VM folder, the image store's
// directory and the directories of its datastore volume stores; vch
// delete removes them again. Its daemon runs the container VMs there,
// with the driver configuration SaveConfig writes (DriverConfig).

// The environment variables that give a target's credentials when the
// --target URL holds none. For vch configure and vch delete, when set,
// they take precedence over the credentials file (a changed password).
const (
	TargetUsernameEnv = "VCH_TARGET_USERNAME"
	TargetPasswordEnv = "VCH_TARGET_PASSWORD"
)

// VSphereOptions are vch create's vSphere flags. Its String hides the
// credentials.
type VSphereOptions struct {
	// Target is the vCenter or ESX SDK endpoint,
	// "https://[USER:PASS@]HOST[:PORT][/sdk]"; without user information
	// the credentials come from TargetUsernameEnv and TargetPasswordEnv.
	Target string
	// Thumbprint is the SHA-1 thumbprint of the server's certificate
	// (colon hex), trusted when the system's CAs do not vouch for it.
	Thumbprint string
	// Insecure skips the certificate check (--insecure-target); exclusive
	// with Thumbprint.
	Insecure bool
	// ComputeResource is the inventory path of the cluster or host,
	// "/DC/host/CLUSTER"; the datacenter is the part before "/host/".
	ComputeResource string
	// ImageStore is "DATASTORE[/PATH]" (PATH defaults to the VCH's name).
	ImageStore string
	// BridgeNetwork and PublicNetwork are portgroup names; optional.
	BridgeNetwork, PublicNetwork string
	// ChannelListen is the HOST:PORT the VCH's daemon listens on for its
	// container VMs' serial ports (the ESX hosts connect to it); empty
	// is DefaultChannelListen.
	ChannelListen string
	// BridgeInterface is the interface of the VCH's host on the bridge
	// portgroup, which the daemon enslaves to the VCH's default bridge;
	// optional.
	BridgeInterface string
}

// DefaultChannelListen is the guest channels' listener without
// --channel-listen: loopback, which only VMs run on this machine (a
// simulator's stand-ins) can reach.
const DefaultChannelListen = "127.0.0.1:0"

// String is o with the target's credentials hidden.
func (o VSphereOptions) String() string {
	type plain VSphereOptions
	p := plain(o)
	p.Target = redactTarget(o.Target)
	return fmt.Sprintf("%+v", p)
}

// GoString is String, for %#v.
func (o VSphereOptions) GoString() string { return "deploy.VSphereOptions" + o.String() }

// VSphere is a vSphere VCH's deployment as config.json records it. It
// holds no credentials (those are in CredentialsFile).
type VSphere struct {
	// Target is the SDK endpoint without credentials, "https://HOST[:PORT]/sdk".
	Target string `json:"target"`
	// Thumbprint and Insecure are how the server's certificate is checked.
	Thumbprint string `json:"thumbprint,omitempty"`
	Insecure   bool   `json:"insecure,omitempty"`
	// Datacenter is the datacenter's inventory path, "/DC".
	Datacenter string `json:"datacenter"`
	// ComputeResource is the cluster's or host's inventory path.
	ComputeResource string `json:"compute_resource"`
	// ResourcePool and VMFolder are the inventory paths of the VCH's pool
	// ("/DC/host/CLUSTER/Resources/NAME") and folder ("/DC/vm/NAME"),
	// both named after the VCH.
	ResourcePool string `json:"resource_pool"`
	VMFolder     string `json:"vm_folder"`
	// ImageStore is --image-store as given, "DATASTORE[/PATH]";
	// ImageStorePath its directory, "[DATASTORE] PATH".
	ImageStore     string `json:"image_store"`
	ImageStorePath string `json:"image_store_path"`
	// ImageStoreParents are the parent directories of ImageStorePath that
	// vch create made ("[DATASTORE] PATH", outermost first): vch delete
	// removes them, from the last, while they are empty.
	ImageStoreParents []string `json:"image_store_parents,omitempty"`
	// VolumeStores are the datastore volume stores (the ds:// entries of
	// Config.VolumeStores), resolved.
	VolumeStores []DatastoreVolumeStore `json:"volume_stores,omitempty"`
	// BridgeNetwork and PublicNetwork are portgroup names ("" if not given).
	BridgeNetwork string `json:"bridge_network,omitempty"`
	PublicNetwork string `json:"public_network,omitempty"`
	// ChannelListen is VSphereOptions.ChannelListen ("" is
	// DefaultChannelListen).
	ChannelListen string `json:"channel_listen,omitempty"`
	// BridgeInterface is VSphereOptions.BridgeInterface.
	BridgeInterface string `json:"bridge_interface,omitempty"`
	// CPULimitMHz and MemoryLimitMiB are the pool's limits as last set
	// (0: unlimited): Limits.CPUs times the compute resource's core clock,
	// and Limits.MemoryMiB.
	CPULimitMHz    int64 `json:"cpu_limit_mhz"`
	MemoryLimitMiB int64 `json:"memory_limit_mib"`
}

// DatastoreVolumeStore is one "NAME:ds://DATASTORE/PATH" volume store.
type DatastoreVolumeStore struct {
	Name string `json:"name"`
	// URL is "ds://DATASTORE/PATH" as given.
	URL string `json:"url"`
	// Path is its directory's datastore path, "[DATASTORE] PATH".
	Path string `json:"path"`
	// Made are the directories vch create (or configure) made for it,
	// "[DATASTORE] PATH", parents first: vch delete removes them, from the
	// last, while they are empty. Empty when the directory existed.
	Made []string `json:"made,omitempty"`
}

// Credentials are a target's user and password. String and GoString hide
// them; only the credentials file holds them.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// String hides the credentials.
func (Credentials) String() string { return "{***}" }

// GoString hides the credentials.
func (Credentials) GoString() string { return "deploy.Credentials{***}" }

// secrets are the strings no output may hold.
func (c Credentials) secrets() []string {
	var s []string
	for _, w := range []string{c.Username, c.Password} {
		if w != "" {
			s = append(s, w)
		}
	}
	return s
}

// redactTarget is raw with any user information replaced by "***"; a raw
// URL that does not parse is not shown at all.
func redactTarget(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	if u.User == nil {
		return u.String()
	}
	u.User = nil
	scheme, rest, _ := strings.Cut(u.String(), "//")
	return scheme + "//***@" + rest
}

// ParseTarget checks a --target URL and returns the endpoint without
// credentials ("https://HOST[:PORT]/sdk") and the credentials: the URL's
// user information, or else getenv(TargetUsernameEnv) and
// getenv(TargetPasswordEnv). InvalidArgument, before anything is made,
// for a URL that is not https, has no host, a path other than /sdk, a
// query or fragment, or no credentials anywhere. No error holds the
// credentials.
func ParseTarget(raw string, getenv func(string) string) (string, Credentials, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("vch: --target "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", Credentials{}, bad("does not parse as a URL; want https://USER:PASS@HOST/sdk") // its text may hold the password
	}
	shown := redactTarget(raw)
	if u.Scheme != "https" {
		return "", Credentials{}, bad("%s: want https://HOST/sdk (https only: the password crosses it)", shown)
	}
	if u.Hostname() == "" {
		return "", Credentials{}, bad("%s: no host; want https://HOST/sdk", shown)
	}
	if u.Path != "" && u.Path != "/" && u.Path != "/sdk" && u.Path != "/sdk/" {
		return "", Credentials{}, bad("%s: path %q; want https://HOST/sdk", shown, u.Path)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", Credentials{}, bad("%s: want https://HOST/sdk with no query or fragment", shown)
	}
	var c Credentials
	if u.User != nil {
		c.Username = u.User.Username()
		c.Password, _ = u.User.Password()
	}
	if c.Username == "" && getenv != nil {
		c.Username = getenv(TargetUsernameEnv)
	}
	if c.Password == "" && getenv != nil {
		c.Password = getenv(TargetPasswordEnv)
	}
	if c.Username == "" || c.Password == "" {
		return "", Credentials{}, bad("%s: no credentials: give https://USER:PASS@HOST/sdk or set %s and %s", shown, TargetUsernameEnv, TargetPasswordEnv)
	}
	return (&url.URL{Scheme: "https", Host: u.Host, Path: "/sdk"}).String(), c, nil
}

// IsDatastoreVolumeStore reports whether a --volume-store value names a
// datastore location ("NAME:ds://…") rather than a local directory.
func IsDatastoreVolumeStore(v string) bool {
	_, loc, _ := strings.Cut(v, ":")
	return strings.HasPrefix(loc, volume.DatastoreScheme)
}

// ParseDatastoreVolumeStore parses "NAME:ds://DATASTORE/PATH" (PATH
// relative, clean and not empty; volume.ParseStore's rules).
// InvalidArgument otherwise.
func ParseDatastoreVolumeStore(v string) (DatastoreVolumeStore, error) {
	name, loc, err := volume.ParseStore(v)
	dir, ok := volume.DatastoreDir(loc)
	if err != nil || !ok {
		return DatastoreVolumeStore{}, fmt.Errorf("vch: --volume-store %q: want NAME:ds://DATASTORE/PATH, NAME letters, digits, '_', '.' or '-' and PATH a directory on the datastore: %w", v, errdefs.ErrInvalidArgument)
	}
	return DatastoreVolumeStore{Name: name, URL: loc, Path: dir}, nil
}

// parseComputeResource splits "/DC/host/CLUSTER" into the datacenter's
// path ("/DC"). InvalidArgument for another shape.
func parseComputeResource(cr string) (string, error) {
	dc, rest, ok := strings.Cut(cr, "/host/")
	if !strings.HasPrefix(cr, "/") || !ok || dc == "" || dc == "/" || strings.Trim(rest, "/") == "" {
		return "", fmt.Errorf("vch: --compute-resource %q: want the inventory path of a cluster or host, /DATACENTER/host/CLUSTER: %w", cr, errdefs.ErrInvalidArgument)
	}
	return dc, nil
}

// checkImageStore checks "DATASTORE[/PATH]".
func checkImageStore(s string) error {
	ds, p, _ := strings.Cut(s, "/")
	p = strings.TrimSuffix(p, "/")
	if ds == "" || strings.ContainsAny(ds, "[]") || strings.HasPrefix(s, volume.DatastoreScheme) ||
		p != "" && (path.Clean(p) != p || strings.HasPrefix(p, "..")) {
		return fmt.Errorf("vch: --image-store %q: want DATASTORE or DATASTORE/PATH: %w", s, errdefs.ErrInvalidArgument)
	}
	return nil
}

// prepareVSphere checks o for the VCH name with the volume stores given
// (nothing is made) and returns the Config's vSphere section, without the
// pool and folder paths yet, and the credentials. InvalidArgument for bad
// options.
func prepareVSphere(o VSphereOptions, name string, volumeStores []string, getenv func(string) string) (*VSphere, Credentials, error) {
	target, creds, err := ParseTarget(o.Target, getenv)
	if err != nil {
		return nil, Credentials{}, err
	}
	if o.Insecure && o.Thumbprint != "" {
		return nil, Credentials{}, fmt.Errorf("vch: --thumbprint and --insecure-target exclude each other: %w", errdefs.ErrInvalidArgument)
	}
	if o.ComputeResource == "" || o.ImageStore == "" {
		return nil, Credentials{}, fmt.Errorf("vch: --target needs --compute-resource /DATACENTER/host/CLUSTER and --image-store DATASTORE[/PATH]: %w", errdefs.ErrInvalidArgument)
	}
	dc, err := parseComputeResource(o.ComputeResource)
	if err != nil {
		return nil, Credentials{}, err
	}
	if err := checkImageStore(o.ImageStore); err != nil {
		return nil, Credentials{}, err
	}
	if o.BridgeInterface != "" && (len(o.BridgeInterface) > 15 || strings.ContainsAny(o.BridgeInterface, "/ \t\n:")) {
		return nil, Credentials{}, fmt.Errorf("vch: --bridge-interface %q: want an interface name: %w", o.BridgeInterface, errdefs.ErrInvalidArgument)
	}
	if o.BridgeInterface != "" && o.BridgeNetwork == "" {
		return nil, Credentials{}, fmt.Errorf("vch: --bridge-interface needs --bridge-network (the portgroup it is on): %w", errdefs.ErrInvalidArgument)
	}
	if o.ChannelListen != "" {
		host, port, err := net.SplitHostPort(o.ChannelListen)
		ip, ipErr := netip.ParseAddr(host)
		if err != nil || host == "" || (ipErr == nil && ip.IsUnspecified()) || !validPort(port) {
			return nil, Credentials{}, fmt.Errorf("vch: --channel-listen %q: want HOST:PORT with an address the ESX hosts reach (not a wildcard): %w", o.ChannelListen, errdefs.ErrInvalidArgument)
		}
	}
	ds, dir, _ := strings.Cut(strings.TrimSuffix(o.ImageStore, "/"), "/")
	images := "[" + ds + "] " + cmp.Or(dir, name) // as the driver makes it
	for _, vs := range volumeStores {
		if IsDatastoreVolumeStore(vs) {
			if err := checkOutsideImageStore(vs, images); err != nil {
				return nil, Credentials{}, err
			}
		}
	}
	return &VSphere{
		Target: target, Thumbprint: o.Thumbprint, Insecure: o.Insecure,
		Datacenter: dc, ComputeResource: strings.TrimSuffix(o.ComputeResource, "/"),
		ImageStore: strings.TrimSuffix(o.ImageStore, "/"), BridgeNetwork: o.BridgeNetwork, PublicNetwork: o.PublicNetwork,
		ChannelListen: o.ChannelListen, BridgeInterface: o.BridgeInterface,
	}, creds, nil
}

// validateDatastoreStore checks a "NAME:ds://…" volume store of c: it
// needs a vSphere VCH. InvalidArgument otherwise.
func validateDatastoreStore(c Config, v string) error {
	if c.VSphere == nil {
		return fmt.Errorf("vch: --volume-store %q: a datastore volume store (ds://) needs a vSphere VCH (--target): %w", v, errdefs.ErrInvalidArgument)
	}
	_, err := ParseDatastoreVolumeStore(v)
	return err
}

// saveCredentials writes the credentials file (mode 0600) atomically.
func saveCredentials(l Layout, c Credentials) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("vch: encode credentials: %w", err)
	}
	tmp := l.CredentialsFile() + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("vch: write credentials file: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, l.CredentialsFile())
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("vch: write credentials file: %w", err)
	}
	return nil
}

// loadCredentials reads the credentials file; the environment variables,
// when set, take precedence. FailedPrecondition if there are none.
func loadCredentials(l Layout, getenv func(string) string) (Credentials, error) {
	var c Credentials
	b, err := os.ReadFile(l.CredentialsFile())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &c); err != nil {
			// The error text may quote the file.
			return Credentials{}, fmt.Errorf("vch: %s does not parse: %w", l.CredentialsFile(), errdefs.ErrInvalidArgument)
		}
	case !errors.Is(err, os.ErrNotExist):
		return Credentials{}, fmt.Errorf("vch: read credentials: %w", err)
	}
	if getenv != nil {
		if u := getenv(TargetUsernameEnv); u != "" {
			c.Username = u
		}
		if p := getenv(TargetPasswordEnv); p != "" {
			c.Password = p
		}
	}
	if c.Username == "" || c.Password == "" {
		return Credentials{}, fmt.Errorf("vch: no credentials for the vSphere target: %s is missing; set %s and %s: %w", l.CredentialsFile(), TargetUsernameEnv, TargetPasswordEnv, errdefs.ErrFailedPrecondition)
	}
	return c, nil
}

// scrub returns err with its text redacted of the credentials, keeping
// its errdefs class; err itself when its text holds none of them.
func scrub(err error, c Credentials) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, s := range c.secrets() {
		clean = strings.ReplaceAll(clean, s, "***")
	}
	if clean == msg {
		return err
	}
	return fmt.Errorf("%s: %w", clean, errdefs.Resolve(err))
}

// getenv is the Manager's environment.
func (m *Manager) getenv(k string) string {
	if m.Getenv != nil {
		return m.Getenv(k)
	}
	return os.Getenv(k)
}

// connectVSphere logs in to v's target with creds for the VCH name and
// limits. Errors are scrubbed of the credentials.
func (m *Manager) connectVSphere(ctx context.Context, name string, v *VSphere, creds Credentials) (*vsphere.Driver, error) {
	u, err := url.Parse(v.Target)
	if err != nil {
		return nil, fmt.Errorf("vch: target %q: %w", v.Target, errdefs.ErrInvalidArgument)
	}
	u.User = url.UserPassword(creds.Username, creds.Password)
	cfg := DriverConfig(name, v)
	cfg.URL = u.String()
	// The driver listens for guest channels; vch create runs none.
	cfg.ChannelListen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	d, err := vsphere.New(ctx, cfg)
	if err != nil {
		return nil, scrub(fmt.Errorf("vch: vSphere target %s: %w", v.Target, err), creds)
	}
	return d, nil
}

// validPort reports whether p is a port number, 0 (any) to 65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// DriverConfig is the vsphere driver's configuration for the VCH name
// deployed as v, without credentials (its URL is v.Target): what the
// VCH's daemon reads from Layout.VSphereConfigFile.
func DriverConfig(name string, v *VSphere) vsphere.Config {
	imageStore := v.ImageStore
	if !strings.Contains(imageStore, "/") {
		imageStore += "/" + name
	}
	return vsphere.Config{
		URL: v.Target, Insecure: v.Insecure, Thumbprint: v.Thumbprint,
		Datacenter: v.Datacenter, ComputeResource: v.ComputeResource,
		ResourcePool: name, VMFolder: name, ImageStore: imageStore,
		BridgePortgroup: v.BridgeNetwork,
		ChannelListen:   cmp.Or(v.ChannelListen, DefaultChannelListen),
		CPULimitMHz:     v.CPULimitMHz,
		MemoryLimitMiB:  v.MemoryLimitMiB,
	}
}

// poolLimits are the pool limits for the VCH's limits: its vCPUs times
// the compute resource's core clock (MHz), and its memory (MiB).
func poolLimits(ctx context.Context, d *vsphere.Driver, l Limits) (cpuMHz, memoryMiB int64, err error) {
	if l.CPUs > 0 {
		mhz, err := d.CoreMHz(ctx)
		if err != nil {
			return 0, 0, err
		}
		cpuMHz = int64(l.CPUs) * mhz
	}
	return cpuMHz, int64(l.MemoryMiB), nil
}

// vsphereMade is what createOnVSphere made, for a rollback.
type vsphereMade struct {
	vch  bool     // CreateVCH succeeded
	dirs []string // volume store directories made
}

// createOnVSphere checks the networks and makes the VCH's pool, folder,
// image store and volume store directories, recording their paths and the
// pool's limits in c.VSphere. What it made is in made even on failure.
func (m *Manager) createOnVSphere(ctx context.Context, d *vsphere.Driver, c *Config, made *vsphereMade) error {
	v := c.VSphere
	for _, n := range []struct{ flag, name string }{{"--bridge-network", v.BridgeNetwork}, {"--public-network", v.PublicNetwork}} {
		if n.name == "" {
			continue
		}
		if err := d.CheckNetwork(ctx, n.name); err != nil {
			return fmt.Errorf("vch: %s %s: %w", n.flag, n.name, err)
		}
	}
	cpu, mem, err := poolLimits(ctx, d, c.Limits)
	if err != nil {
		return err
	}
	p := d.Paths()
	v.ResourcePool, v.VMFolder, v.ImageStorePath = p.ResourcePool, p.VMFolder, p.ImageStore
	m.progress("Creating resource pool %s, VM folder %s and image store %s on %s", p.ResourcePool, p.VMFolder, p.ImageStore, v.Target)
	if parent, ok := parentDir(p.ImageStore); ok {
		// CreateVCH makes the parents too, and DeleteVCH removes the image
		// store alone: made here, they are recorded for delete.
		dirs, err := d.MakeDirectory(ctx, parent)
		if err != nil {
			return fmt.Errorf("vch: --image-store %s: %w", v.ImageStore, err)
		}
		made.dirs = append(made.dirs, dirs...)
		v.ImageStoreParents = dirs
	}
	if err := d.CreateVCH(ctx); err != nil {
		if errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("vch: a VCH named %s already exists on %s (or something else holds its names): %w", c.Name, v.Target, err)
		}
		return err
	}
	made.vch = true
	if cpu != 0 || mem != 0 {
		if err := d.SetPoolLimits(ctx, cpu, mem); err != nil {
			return err
		}
	}
	v.CPULimitMHz, v.MemoryLimitMiB = cpu, mem
	for _, vs := range c.VolumeStores {
		if !IsDatastoreVolumeStore(vs) {
			continue
		}
		s, err := ParseDatastoreVolumeStore(vs)
		if err != nil {
			return err
		}
		dirs, err := d.MakeDirectory(ctx, s.Path)
		if err != nil {
			return fmt.Errorf("vch: volume store %s: %w", s.Name, err)
		}
		if len(dirs) > 0 {
			made.dirs = append(made.dirs, dirs...)
			m.progress("Created volume store %s at %s", s.Name, s.Path)
		} else {
			m.progress("Using the existing directory %s for volume store %s", s.Path, s.Name)
		}
		s.Made = dirs
		v.VolumeStores = append(v.VolumeStores, s)
	}
	return nil
}

// undoVSphere removes what createOnVSphere made.
func (m *Manager) undoVSphere(ctx context.Context, d *vsphere.Driver, made vsphereMade) error {
	var errs []error
	if made.vch {
		errs = append(errs, d.DeleteVCH(ctx))
	}
	for _, dir := range slices.Backward(made.dirs) {
		if _, err := d.RemoveDirectoryIfEmpty(ctx, dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// parentDir is the parent of the datastore path "[DS] a/b": "[DS] a";
// false for a directory at the datastore's root.
func parentDir(p string) (string, bool) {
	i := strings.LastIndex(p, "/")
	if i < 0 {
		return "", false
	}
	return p[:i], true
}

// checkOutsideImageStore refuses a datastore volume store inside the
// image store's directory: vch delete removes that directory with all it
// holds, and volumes must outlive the VCH. InvalidArgument.
func checkOutsideImageStore(v, imageStore string) error {
	s, err := ParseDatastoreVolumeStore(v)
	if err != nil {
		return err
	}
	if s.Path == imageStore || strings.HasPrefix(s.Path, imageStore+"/") {
		return fmt.Errorf("vch: --volume-store %s is inside the image store %s, which vch delete removes; put it beside: %w", v, imageStore, errdefs.ErrInvalidArgument)
	}
	return nil
}

// sameVSphere reports whether a and b are the same deployment: what
// configure cannot change (target, certificate check, compute resource,
// pool, folder, image store, networks).
func sameVSphere(a, b *VSphere) bool {
	if a == nil || b == nil {
		return a == b
	}
	key := func(v *VSphere) [13]string {
		return [13]string{v.Target, v.Thumbprint, fmt.Sprint(v.Insecure), v.Datacenter, v.ComputeResource, v.ResourcePool,
			v.VMFolder, v.ImageStore, v.ImageStorePath, v.BridgeNetwork, v.PublicNetwork, v.ChannelListen, v.BridgeInterface}
	}
	return key(a) == key(b)
}

// cloneVSphere is a deep copy of v (nil for nil).
func cloneVSphere(v *VSphere) *VSphere {
	if v == nil {
		return nil
	}
	c := *v
	c.VolumeStores = slices.Clone(v.VolumeStores)
	return &c
}

// addedDatastoreStores are the datastore volume stores c has and before
// has not. InvalidArgument if c drops one of before's: its volumes would
// be lost to the VCH.
func addedDatastoreStores(before, c Config) ([]DatastoreVolumeStore, error) {
	for _, vs := range before.VolumeStores {
		if IsDatastoreVolumeStore(vs) && !slices.Contains(c.VolumeStores, vs) {
			return nil, fmt.Errorf("vch: configure cannot drop the datastore volume store %s (its volumes would be lost to the VCH); give it again with --volume-store: %w", vs, errdefs.ErrInvalidArgument)
		}
	}
	var added []DatastoreVolumeStore
	for _, vs := range c.VolumeStores {
		if !IsDatastoreVolumeStore(vs) || slices.Contains(before.VolumeStores, vs) {
			continue
		}
		if err := checkOutsideImageStore(vs, c.VSphere.ImageStorePath); err != nil {
			return nil, err
		}
		s, err := ParseDatastoreVolumeStore(vs)
		if err != nil {
			return nil, err
		}
		added = append(added, s)
	}
	return added, nil
}

// configureVSphere applies a configure to the target: the pool's limits
// (limitsChanged) and the directories of the added volume stores,
// recorded in c.VSphere. finish(saved) ends it: when the config was not
// saved it sets the old limits again and removes the directories made.
// On an error nothing stays changed.
func (m *Manager) configureVSphere(ctx context.Context, l Layout, c *Config, added []DatastoreVolumeStore, limitsChanged bool) (finish func(saved bool), err error) {
	creds, err := loadCredentials(l, m.getenv)
	if err != nil {
		return nil, err
	}
	v := c.VSphere
	m.progress("Logging in to %s", v.Target)
	d, err := m.connectVSphere(ctx, c.Name, v, creds)
	if err != nil {
		return nil, err
	}
	oldCPU, oldMem := v.CPULimitMHz, v.MemoryLimitMiB
	var dirs []string
	undo := func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StopTimeout)
		defer cancel()
		for _, dir := range slices.Backward(dirs) {
			_, _ = d.RemoveDirectoryIfEmpty(uctx, dir)
		}
		if limitsChanged {
			_ = d.SetPoolLimits(uctx, oldCPU, oldMem)
		}
	}
	defer func() {
		if err != nil {
			undo()
			d.Close()
			err = scrub(err, creds)
		}
	}()
	if limitsChanged {
		cpu, mem, err := poolLimits(ctx, d, c.Limits)
		if err != nil {
			return nil, err
		}
		m.progress("Setting the limits of resource pool %s: CPU %s, memory %s", v.ResourcePool, limitText(cpu, "MHz"), limitText(mem, "MiB"))
		if err := d.SetPoolLimits(ctx, cpu, mem); err != nil {
			return nil, err
		}
		v.CPULimitMHz, v.MemoryLimitMiB = cpu, mem
	}
	for _, s := range added {
		made, err := d.MakeDirectory(ctx, s.Path)
		if err != nil {
			return nil, fmt.Errorf("vch: volume store %s: %w", s.Name, err)
		}
		if len(made) > 0 {
			dirs = append(dirs, made...)
			m.progress("Created volume store %s at %s", s.Name, s.Path)
		}
		s.Made = made
		v.VolumeStores = append(v.VolumeStores, s)
	}
	return func(saved bool) {
		if !saved {
			undo()
		}
		d.Close()
	}, nil
}

// limitText is a pool limit for people: "unlimited" for 0.
func limitText(v int64, unit string) string {
	if v == 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d %s", v, unit)
}

// deleteOnVSphere removes the VCH from its target: DeleteVCH (pool,
// folder and its VMs, image store), then the volume store directories
// create made, if empty.
func (m *Manager) deleteOnVSphere(ctx context.Context, d *vsphere.Driver, c Config) error {
	v := c.VSphere
	m.progress("Removing resource pool %s, VM folder %s (with its VMs) and image store %s from %s", v.ResourcePool, v.VMFolder, v.ImageStorePath, v.Target)
	if err := d.DeleteVCH(ctx); err != nil {
		return fmt.Errorf("vch: delete VCH %s on %s: %w", c.Name, v.Target, err)
	}
	made := slices.Clone(v.ImageStoreParents)
	for _, s := range v.VolumeStores {
		if len(s.Made) == 0 {
			m.progress("Leaving volume store %s at %s: vch did not make it", s.Name, s.Path)
		}
		made = append(made, s.Made...)
	}
	// Last made first: a parent after its children. A parent two stores
	// share is tried once both are gone.
	left := map[string]bool{}
	for _, dir := range slices.Backward(made) {
		removed, err := d.RemoveDirectoryIfEmpty(ctx, dir)
		if err != nil {
			return fmt.Errorf("vch: volume store directory %s: %w", dir, err)
		}
		if !removed {
			left[dir] = true
		}
	}
	for _, s := range v.VolumeStores {
		if len(s.Made) == 0 {
			continue
		}
		if left[s.Path] {
			m.progress("Left volume store %s at %s in place: it holds volumes (or is gone)", s.Name, s.Path)
		} else {
			m.progress("Removed volume store %s at %s", s.Name, s.Path)
		}
	}
	return nil
}
