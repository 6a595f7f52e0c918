// Package vsphere is the hypervisor driver for vCenter (or one ESX host):
// each VM of a [hypervisor.Spec] is a vSphere VM in the VCH's resource
// pool and VM folder, as VIC ran containers. It knows nothing of
// containers.
//
// # What a VM is made of
//
//   - Spec.Kernel is the datastore path ("[DATASTORE] dir/file.iso") of a
//     bootable ISO holding the guest kernel and initramfs, attached as a
//     CD-ROM the VM boots from; Spec.Initrd must be empty (the ISO holds
//     it). vSphere cannot boot a kernel file directly.
//   - Spec.MemoryMiB is rounded up to a multiple of 4 MiB, as vSphere
//     wants.
//   - Spec.Disks are VMDKs named by datastore paths
//     ("[DATASTORE] dir/file.vmdk", Format "vmdk") on one paravirtual SCSI
//     controller, in order (unit numbers 0-6, 8-15; at most 15 disks). A
//     ReadOnly disk is attached independent-nonpersistent: vSphere has no
//     read-only disk mode, so the guest may write, but its writes go to a
//     redo log vSphere discards at power-off and the file never changes.
//     vSphere gives a disk no settable serial number: a disk's Serial goes
//     to guestinfo (below) with its SCSI address.
//   - Spec.NICs are vmxnet3 NICs on the Config's bridge portgroup, each
//     with its MAC set manually. NIC.File is not used: a vSphere NIC has
//     no host device, its frames reach the VCH's bridge through the
//     portgroup (a caller's tap for it stays unused).
//   - Spec.RuntimeDir is not used (the driver keeps no host files);
//     Spec.Shares are refused (Capabilities.Shares is false).
//   - The guest's configuration is in the VM's extraConfig, which the guest
//     reads as guestinfo (vmware-rpctool "info-get guestinfo.KEY"):
//     guestinfo.vch.name (Spec.Name), guestinfo.vch.cmdline (Spec.Cmdline),
//     guestinfo.vch.channel.name (Spec.ChannelName),
//     guestinfo.vch.channel.secret (the channel secret, below),
//     guestinfo.vch.channel.tls ("1": TLS after the hello, below) and, for
//     each disk i with a serial, guestinfo.vch.disk.i.serial and
//     guestinfo.vch.disk.i.address ("scsi0:UNIT"). vSphere drops a key
//     whose value is empty (an empty Cmdline): the guest takes a missing
//     key as empty.
//
// The VM's files live in a directory named after it at the root of the
// image store's datastore (vSphere's default place); the driver destroys
// the VM when it ends, which removes that directory but never a disk of
// Spec.Disks: those are detached first and stay the caller's.
//
// # The guest channel
//
// A VM's channel is its serial port, backed by a network URI
// (tcp://CHANNEL-ADDRESS, direction client): when the VM powers on, the
// ESX host it runs on connects to the driver's listener, and the bytes of
// that TCP connection are the bytes of the guest's serial port. Anything
// that reaches the listener can connect, so a connection is handed out as
// a VM's channel only after it proved it holds that VM's secret: 32 bytes
// from crypto/rand, fresh for each VM, in guestinfo.vch.channel.secret
// (hex), which only the guest and vSphere users allowed to read the VM's
// configuration can read. The hello, one line each way, in ASCII:
//
//	driver: "vch-channel v1 NONCE\n"         NONCE: 32 random bytes, hex, fresh per connection
//	guest:  "vch-channel v1 NAME GUESTMAC\n" NAME: guestinfo.vch.name
//	driver: "ok SERVERMAC\n"                 then TLS 1.3, inside it the agent's stream
//
// where GUESTMAC is hex(HMAC-SHA256(secret, "vch-channel v1 guest NAME
// NONCE")) and SERVERMAC is hex(HMAC-SHA256(secret, "vch-channel v1
// server NAME NONCE")), NONCE in the hex form sent. The nonce makes a
// recorded hello useless on another connection; the server's MAC lets the
// guest refuse a listener that does not know its secret. Bytes before
// the hello that are no nudge or echo (what a guest's last session still
// wrote) are skipped, up to maxLeftovers, a hello glued to them taken;
// nudges and echoes at most 8. A hello
// that is malformed, longer than 512 bytes, slower than 10 s, for a name
// no Start waits for, or with a wrong MAC gets the connection closed and
// a warning logged, and Start keeps waiting; a name's channel is handed
// out once, so a second good hello for it is refused too. After the ok,
// both ends run TLS 1.3 with certificates whose Ed25519 keys derive from
// the secret (serialauth.ServerHandshake, GuestHandshake), so the stream
// is encrypted and bound to the secret's holders; a failed handshake is
// refused like a bad hello. A VM made before the driver set
// vch.channel.tls (a key the guest cannot read) is adopted with the plain
// stream its guest speaks. tether overwrites guestinfo.vch.channel.secret once it has read
// it, so that its own processes (the backdoor answers them too) cannot
// read it later; the driver keeps a copy in vch.channel.secret, a key of
// the VM's configuration that the guest cannot read, for Adopt.
//
// # How a VM ends
//
// The driver watches its VMs' runtime.powerState with one property
// collector stream over the children of the VCH's folder (a list view of the
// folder as the filter's root, watch.go);
// an update saying a VM is off is checked by reading its state, as
// updates may be stale. Kill powers the VM
// off, detaches its disks and destroys it (ExitStatus.Err says it was
// killed). A VM seen powered off or removed by anyone else ends with a
// non-nil Err, unless the guest marked its own power-off first: before it
// powers off, the guest sets guestinfo.vch.exit to hex(HMAC-SHA256(secret,
// "vch-exit v1 poweroff NAME")); a VM powered off with that mark in its
// extraConfig ends with Err nil. Either way the driver then destroys the
// VM (keeping its disks) and closes Done.
//
// VMs run on when the driver closes or its process dies; a later driver
// takes one back with Adopt (adopt.go): the VM's serial port is pointed
// at the new listener and the guest, which says its hello again after
// every session, proves the secret read back from its guestinfo.
//
// # Placement
//
// Where the compute resource is a cluster with DRS enabled (its
// configurationEx's drsConfig.enabled, read at New), vSphere chooses each
// VM's host: Start creates it with no host. Otherwise (DRS off, or one
// ESX host) the driver chooses, among the hosts that are connected,
// powered on and not in maintenance mode, the one with the most free
// memory: summary.hardware.memorySize minus
// summary.quickStats.overallMemoryUsage minus the memory of the VMs this
// driver placed there and the host's quick stats may not count yet (still
// starting, or powered on since the stats last changed), so that a burst
// of concurrent Starts spreads; ties go to the host with fewer of this
// driver's VMs, then to the first by name. The hosts are read with one
// call through a container view, at most a second old when Start places
// a VM. [Driver.Placement] names the mode ("drs" or "free-memory"), each
// VM's Host its host ([hypervisor.Placer]); docker info shows the mode.
//
// A VM whose host is disconnected, not responding, powered off or in
// standby, or whose own runtime.connectionState is not "connected", for
// longer than Config.HostLostGrace ends with [ErrHostLost] (the driver
// polls the hosts every half grace, at most every 5 s). A host in
// maintenance mode takes no new VM, but its VMs are not ended: vSphere
// enters maintenance only once they are moved or powered off.
//
// # Overlays
//
// CreateOverlay makes a delta disk whose parent is the base (a vSphere
// child disk, never a copy): it adds a disk to a powered-off helper VM of
// the VCH ("_vch-disks", created on first use in the VCH's pool and
// folder) with a backing whose Parent is the base's, creating the file,
// checks that vSphere chained it, and detaches it again, keeping the file.
// The driver remembers each overlay's parent chain and gives it with the
// disk's backing when Start attaches the overlay (an overlay it did not
// make, say before a restart, is attached by its file name alone). The
// simulator the tests use keeps no chain in its disk files and needs the
// parent given; whether real vSphere takes a parent on an existing disk
// as it takes one on a disk it creates is not tested yet.
//
// # The image store
//
// The driver is a [hypervisor.DiskStore]: ImportBoot builds the boot ISO
// from the guest kernel and initramfs (ISOLINUX, with xorriso) and
// uploads it to STORE/boot/; ImportDisk converts a raw disk image to a
// streamOptimized VMDK and imports it with vSphere's OVF import (NFC) as
// STORE/images/NAME.vmdk, once per name; DiskPath names the caller's
// disks under STORE (the overlays of CreateOverlay) and RemoveDisk
// deletes them. STORE is the image store directory (Config.ImageStore).
// The simulator keeps no content of an NFC upload (it only sums it): a
// test that boots an imported disk gives it its content itself.
//
// # The VCH
//
// [Driver.CreateVCH] makes what a VCH owns: a resource pool (with the
// Config's CPU and memory limits) under the compute resource's root pool,
// a VM folder under the datacenter's VM folder, and the image store's
// directory on its datastore; [Driver.DeleteVCH] removes those and the
// VMs in the folder, and nothing else.
package vsphere

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor"
)

// Config configures the driver. Its String and GoString never show the
// credentials in URL.
type Config struct {
	// URL is the vCenter or ESX SDK endpoint with its credentials,
	// "https://USER:PASS@HOST[:PORT]/sdk" (path "/sdk" when empty).
	URL string `json:"url"`
	// Insecure skips the verification of the server's certificate.
	Insecure bool `json:"insecure"`
	// Thumbprint is the SHA-1 thumbprint of the server's certificate in
	// colon hex ("AB:CD:…", 20 bytes), trusted when the system's CAs do
	// not vouch for the certificate.
	Thumbprint string `json:"thumbprint"`
	// Datacenter is the datacenter's name or inventory path ("DC0").
	Datacenter string `json:"datacenter"`
	// ComputeResource is the inventory path of the cluster or host VMs
	// run on ("/DC0/host/CLUSTER").
	ComputeResource string `json:"compute_resource"`
	// ResourcePool is the name of the VCH's resource pool, a child of the
	// compute resource's root pool.
	ResourcePool string `json:"resource_pool"`
	// VMFolder is the name of the VCH's VM folder, a child of the
	// datacenter's VM folder.
	VMFolder string `json:"vm_folder"`
	// ImageStore is "DATASTORE[/PATH]": the datastore of the VMs' files
	// and the directory of the VCH's disks on it (PATH defaults to the
	// ResourcePool name).
	ImageStore string `json:"image_store"`
	// BridgePortgroup is the name of the network (standard or distributed
	// portgroup) the VMs' NICs are on. Empty: none, and Start refuses a
	// Spec with NICs (FailedPrecondition); enough for managing the VCH
	// (CreateVCH, DeleteVCH).
	BridgePortgroup string `json:"bridge_portgroup"`
	// ChannelListen is the host:port the driver listens on for the VMs'
	// serial ports (port 0 picks one).
	ChannelListen string `json:"channel_listen"`
	// ChannelAddress is the host:port the VMs' serial ports connect to
	// (what the ESX hosts reach the listener by); empty means the
	// listener's own address, which must then not be a wildcard.
	ChannelAddress string `json:"channel_address"`
	// CPULimitMHz and MemoryLimitMiB limit the VCH's resource pool;
	// 0 is unlimited.
	CPULimitMHz    int64 `json:"cpu_limit_mhz"`
	MemoryLimitMiB int64 `json:"memory_limit_mib"`
	// ConnectTimeout bounds how long Start waits for the guest's hello
	// after power-on; default 2 minutes.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// HostLostGrace is how long a VM's host may be unreachable
	// (disconnected, not responding, powered off or in standby, or the
	// VM's connectionState not "connected") before the VM ends with
	// ErrHostLost; default 30 s. The hosts are read every half of it (at
	// most every 5 s), so a VM ends between one grace and one grace plus
	// a period after its host is lost.
	HostLostGrace time.Duration `json:"host_lost_grace"`
	// Logger receives the driver's logs; default slog.Default().
	Logger *slog.Logger `json:"-"`
}

// String is the Config with the URL's credentials hidden.
func (c Config) String() string {
	c.URL = redactURL(c.URL)
	c.Logger = nil
	type plain Config // no String method: no recursion
	return fmt.Sprintf("%+v", plain(c))
}

// GoString is String, for %#v.
func (c Config) GoString() string { return "vsphere.Config" + c.String() }

// redactURL is u with any user information replaced by "***".
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		// Unparseable: show nothing that may hold a password.
		return "(unparseable URL)"
	}
	if p.User == nil {
		return p.String()
	}
	p.User = nil
	scheme, rest, _ := strings.Cut(p.String(), "//")
	return scheme + "//***@" + rest
}

// Driver runs vSphere VMs. Safe for concurrent use.
type Driver struct {
	cfg      Config
	creds    secretWords // user and password: redacted from every error
	logger   *slog.Logger
	client   *vim25.Client
	sessions *session.Manager

	dc        *object.Datacenter
	cr        *object.ComputeResource
	rootPool  *object.ResourcePool
	dcFolders *object.DatacenterFolders
	ds        *object.Datastore
	imageDir  string // datastore path of the image store directory, "[DS] PATH"
	nicBack   types.BaseVirtualDeviceBackingInfo
	channel   string // the serial ports' service URI, tcp://HOST:PORT

	ln     net.Listener
	ctx    context.Context // ends at Close: watchers and handshakes
	cancel context.CancelFunc
	wg     sync.WaitGroup
	hellos chan struct{} // bounds concurrent handshakes

	mu       sync.Mutex
	pool     *object.ResourcePool // nil until CreateVCH (or found by New)
	folder   *object.Folder
	waiting  map[string]*waiter                   // Start waits for these names' hellos
	vms      map[string]*vm                       // running, by name
	watched  map[types.ManagedObjectReference]*vm // powered on, followed by the watcher
	watching bool                                 // the watcher runs
	chains   map[string]*types.VirtualDiskFlatVer2BackingInfo
	hosts    map[types.ManagedObjectReference]*hostState // the compute resource's, as last read
	hostsAt  time.Time                                   // when hosts was read

	drs      bool                // the compute resource is a cluster with DRS enabled
	viewMu   sync.Mutex          // guards hostView
	hostView *view.ContainerView // remade after a lost session (readHosts)

	helperMu sync.Mutex // one helper reconfiguration at a time

	importMu sync.Mutex
	imports  map[string]*chanMutex // ImportDisk: one import per name at a time
}

// Default bounds.
const (
	defaultConnectTimeout = 2 * time.Minute
	helloTimeout          = 10 * time.Second
	maxHello              = 512
	// maxLeftovers bounds the bytes a guest may send before its hello
	// that are neither nudges nor echoes (a dying session's last
	// output: a TLS record is at most 16 KiB and some bytes).
	maxLeftovers  = 64 << 10
	maxHandshakes = 64
	// opTimeout bounds the vSphere calls of Kill and of a VM's end.
	opTimeout = time.Minute
)

// New logs in to vSphere and finds the Config's datacenter, compute
// resource, datastore and portgroup, then listens for guest channels.
// The VCH's pool and folder are found if they exist; Start needs them
// (CreateVCH makes them). The portgroup is looked up only when the Config
// names one. InvalidArgument for a bad Config; Unauthenticated
// for credentials the server refuses; NotFound for an inventory object
// that does not exist; Unavailable if the server cannot be reached or the
// listener cannot listen. No error holds the credentials.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	u, user, err := parseConfig(&cfg)
	if err != nil {
		return nil, err
	}
	d := &Driver{
		cfg:     cfg,
		creds:   secretWords{user.Username()},
		logger:  cfg.Logger.With("component", "vsphere"),
		waiting: map[string]*waiter{},
		vms:     map[string]*vm{},
		watched: map[types.ManagedObjectReference]*vm{},
		chains:  map[string]*types.VirtualDiskFlatVer2BackingInfo{},
		imports: map[string]*chanMutex{},
		hellos:  make(chan struct{}, maxHandshakes),
	}
	if p, ok := user.Password(); ok {
		d.creds = append(d.creds, p)
	}
	sc := soap.NewClient(u, cfg.Insecure)
	if cfg.Thumbprint != "" {
		sc.SetThumbprint(u.Host, cfg.Thumbprint)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, d.fail("connect to "+u.Host, err)
	}
	rl := &relogin{rt: keepalive.NewHandlerSOAP(c.RoundTripper, 5*time.Minute, nil)}
	c.RoundTripper = rl
	d.client = c
	d.sessions = session.NewManager(c)
	rl.login = func(ctx context.Context) error {
		err := d.sessions.Login(ctx, user)
		if err != nil {
			d.logger.Error("vSphere session lost; logging in again failed", "err", d.creds.redact(err.Error()))
		} else {
			d.logger.Warn("vSphere session lost; logged in again", "server", u.Host)
		}
		return err
	}
	if err := d.sessions.Login(ctx, user); err != nil {
		return nil, d.fail("log in to "+u.Host, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = d.sessions.Logout(context.WithoutCancel(ctx))
		}
	}()
	if err := d.findInventory(ctx); err != nil {
		return nil, err
	}
	if err := d.findPlacement(ctx); err != nil {
		return nil, err
	}
	if err := d.listen(); err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go d.health()
	ok = true
	d.logger.Info("connected", "server", u.Host, "compute_resource", cfg.ComputeResource, "placement", d.Placement(), "image_store", d.imageDir, "channel", d.channel)
	return d, nil
}

// parseConfig checks cfg, fills its defaults and returns the SDK URL
// without credentials, and the credentials.
func parseConfig(cfg *Config) (*url.URL, *url.Userinfo, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("vsphere: config: "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, nil, bad("URL does not parse") // its text may hold the password
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, nil, bad("URL %s: want https://USER:PASS@HOST/sdk", redactURL(cfg.URL))
	}
	user := u.User
	if user == nil || user.Username() == "" {
		return nil, nil, bad("URL %s has no user", redactURL(cfg.URL))
	}
	if _, ok := user.Password(); !ok {
		return nil, nil, bad("URL %s has no password", redactURL(cfg.URL))
	}
	u.User = nil
	if u.Path == "" || u.Path == "/" {
		u.Path = "/sdk"
	}
	if cfg.Thumbprint != "" {
		cfg.Thumbprint = strings.ToUpper(cfg.Thumbprint)
		b, err := hex.DecodeString(strings.ReplaceAll(cfg.Thumbprint, ":", ""))
		if err != nil || len(b) != 20 || len(cfg.Thumbprint) != 59 {
			return nil, nil, bad("thumbprint %q: want SHA-1 in colon hex (AB:CD:…, 20 bytes)", cfg.Thumbprint)
		}
	}
	for _, f := range []struct{ name, v string }{
		{"datacenter", cfg.Datacenter}, {"compute resource", cfg.ComputeResource},
		{"resource pool", cfg.ResourcePool}, {"VM folder", cfg.VMFolder},
		{"image store", cfg.ImageStore}, {"channel listen address", cfg.ChannelListen},
	} {
		if f.v == "" {
			return nil, nil, bad("no %s", f.name)
		}
	}
	for _, n := range []string{cfg.ResourcePool, cfg.VMFolder} {
		if strings.ContainsAny(n, "/\\%") {
			return nil, nil, bad("name %q: a pool or folder name holds no '/', '\\' or '%%'", n)
		}
	}
	if _, _, err := net.SplitHostPort(cfg.ChannelListen); err != nil {
		return nil, nil, bad("channel listen address %q: want host:port", cfg.ChannelListen)
	}
	if cfg.ChannelAddress != "" {
		if h, p, err := net.SplitHostPort(cfg.ChannelAddress); err != nil || h == "" || p == "0" {
			return nil, nil, bad("channel address %q: want host:port", cfg.ChannelAddress)
		}
	}
	if cfg.CPULimitMHz < 0 || cfg.MemoryLimitMiB < 0 {
		return nil, nil, bad("negative pool limit")
	}
	if cfg.ConnectTimeout < 0 {
		return nil, nil, bad("negative connect timeout")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.HostLostGrace < 0 {
		return nil, nil, bad("negative host-lost grace")
	}
	if cfg.HostLostGrace == 0 {
		cfg.HostLostGrace = defaultHostLostGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return u, user, nil
}

// findInventory finds the Config's objects, and the VCH's pool and folder
// if they exist.
func (d *Driver) findInventory(ctx context.Context) error {
	f := find.NewFinder(d.client, false)
	dc, err := f.Datacenter(ctx, d.cfg.Datacenter)
	if err != nil {
		return d.fail("datacenter", err)
	}
	f.SetDatacenter(dc)
	d.dc = dc
	if d.dcFolders, err = dc.Folders(ctx); err != nil {
		return d.fail("datacenter folders", err)
	}
	if d.cr, err = f.ComputeResource(ctx, d.cfg.ComputeResource); err != nil {
		return d.fail("compute resource", err)
	}
	if d.rootPool, err = d.cr.ResourcePool(ctx); err != nil {
		return d.fail("compute resource's root pool", err)
	}
	dsName, dir, _ := strings.Cut(d.cfg.ImageStore, "/")
	dir = strings.Trim(path.Clean("/"+dir), "/")
	if dir == "" {
		dir = d.cfg.ResourcePool
	}
	if d.ds, err = f.Datastore(ctx, dsName); err != nil {
		return d.fail("image store datastore", err)
	}
	d.imageDir = d.ds.Path(dir)
	if d.cfg.BridgePortgroup != "" {
		nw, err := f.Network(ctx, d.cfg.BridgePortgroup)
		if err != nil {
			return d.fail("bridge portgroup", err)
		}
		if d.nicBack, err = nw.EthernetCardBackingInfo(ctx); err != nil {
			return d.fail("bridge portgroup backing", err)
		}
	}
	pool, folder, err := d.findVCH(ctx)
	if err != nil {
		return err
	}
	d.pool, d.folder = pool, folder
	return nil
}

// findVCH finds the VCH's pool and folder: nil for one that does not
// exist.
func (d *Driver) findVCH(ctx context.Context) (*object.ResourcePool, *object.Folder, error) {
	si := object.NewSearchIndex(d.client)
	ref, err := si.FindChild(ctx, d.rootPool, d.cfg.ResourcePool)
	if err != nil {
		return nil, nil, d.fail("VCH resource pool", err)
	}
	var pool *object.ResourcePool
	if ref != nil && ref.Reference().Type == "ResourcePool" {
		pool = object.NewResourcePool(d.client, ref.Reference())
	}
	ref, err = si.FindChild(ctx, d.dcFolders.VmFolder, d.cfg.VMFolder)
	if err != nil {
		return nil, nil, d.fail("VCH VM folder", err)
	}
	var folder *object.Folder
	if ref != nil && ref.Reference().Type == "Folder" {
		folder = object.NewFolder(d.client, ref.Reference())
	}
	return pool, folder, nil
}

// Close stops listening, ends the watchers and logs out. VMs keep
// running in vSphere, but this driver no longer supervises them: their
// channels are closed and their Done stays open. Idempotent.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.cancel == nil {
		d.mu.Unlock()
		return nil
	}
	d.cancel()
	d.cancel = nil
	vms := make([]*vm, 0, len(d.vms))
	for _, v := range d.vms {
		vms = append(vms, v)
	}
	d.mu.Unlock()
	_ = d.ln.Close()
	for _, v := range vms {
		v.closeChannel()
	}
	d.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.viewMu.Lock()
	hv := d.hostView
	d.viewMu.Unlock()
	_ = hv.Destroy(ctx)
	if err := d.sessions.Logout(ctx); err != nil {
		return d.fail("log out", err)
	}
	return nil
}

// String names the driver's server and pool, never its credentials.
func (d *Driver) String() string {
	return fmt.Sprintf("vsphere.Driver{%s pool=%s folder=%s images=%s}", redactURL(d.cfg.URL), d.cfg.ResourcePool, d.cfg.VMFolder, d.imageDir)
}

// GoString is String, for %#v.
func (d *Driver) GoString() string { return d.String() }

// Capabilities: the accelerator is "vsphere". vSphere's suspend writes
// the VM's memory out and drops its serial connection, which is no
// pause, so Pause is false; VMs run on in vSphere when the daemon stops
// and a restarted daemon's driver takes them back (Adopt); no shares,
// templates or warm restores.
func (d *Driver) Capabilities() hypervisor.Capabilities {
	return hypervisor.Capabilities{Accelerator: "vsphere", Adopt: true}
}

// collector is the driver's property collector.
func (d *Driver) collector() *property.Collector { return property.DefaultCollector(d.client) }

// vch returns the VCH's pool and folder; FailedPrecondition before
// CreateVCH.
func (d *Driver) vch() (*object.ResourcePool, *object.Folder, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pool == nil || d.folder == nil {
		return nil, nil, fmt.Errorf("vsphere: VCH %s not created (CreateVCH): %w", d.cfg.ResourcePool, errdefs.ErrFailedPrecondition)
	}
	return d.pool, d.folder, nil
}
