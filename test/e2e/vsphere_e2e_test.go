//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"crypto/tls"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"

	"github.com/vchproject/vch/internal/hypervisor/vsphere"
	"github.com/vchproject/vch/internal/hypervisor/vsphere/standin"
	"github.com/vchproject/vch/internal/testenv"
)

// TestVSphereDockerRun drives the docker CLI through a daemon whose
// container VMs are on vSphere: govmomi's simulator is the control plane
// (a cluster of 4 hosts), and each VM the driver powers on there gets a
// real QEMU guest standing in for it (package standin), booted from the
// boot ISO and the disk chain the driver put on the simulated datastore
// and talking to the daemon over the VM's network-backed serial port.
func TestVSphereDockerRun(t *testing.T) {
	need(t)
	dir := t.TempDir()
	m := simulator.VPX()
	m.Host = 0
	m.ClusterHost = 4
	m.Machine = 0
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{User: url.UserPassword("vch-e2e", "e2e-Pa55")}
	srv := m.Service.NewServer()
	t.Cleanup(func() { srv.Close(); m.Remove() })

	const vch = "vch-e2e"
	cfg := vsphere.Config{
		URL: srv.URL.String(), Insecure: true, Datacenter: "DC0", ComputeResource: "/DC0/host/DC0_C0",
		ResourcePool: vch, VMFolder: vch, ImageStore: "LocalDS_0",
		ChannelListen: "127.0.0.1:0", ConnectTimeout: 2 * time.Minute,
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	admin := cfg
	admin.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := vsphere.New(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CreateVCH(ctx); err != nil {
		t.Fatal(err)
	}
	d.Close()
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "vsphere.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	gc, err := govmomi.NewClient(ctx, srv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	f := find.NewFinder(gc.Client, false)
	dc, err := f.Datacenter(ctx, "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	folder, err := f.Folder(ctx, "/DC0/vm/"+vch)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := f.Datastore(ctx, "LocalDS_0")
	if err != nil {
		t.Fatal(err)
	}
	var dso mo.Datastore
	if err := ds.Properties(ctx, ds.Reference(), []string{"info"}, &dso); err != nil {
		t.Fatal(err)
	}
	dsDir := strings.TrimPrefix(dso.Info.GetDatastoreInfo().Url, "file://")

	daemon, err := testenv.StartDaemon(dir, "--vsphere-config", cfgFile, "--warm-vms", "0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Stop(60 * time.Second)
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", daemon.Log(20000))
		}
	})
	if err := daemon.LoadBusybox(dir); err != nil {
		t.Fatal(err)
	}
	// vcsim keeps nothing of an NFC upload: an image disk's content is
	// the daemon's own rootfs disk of that image, the file the driver
	// converted and uploaded (ImportDisk's name is its base name).
	rootfsDir := filepath.Join(daemon.Root, "images", "rootfs")
	runner := &standin.Runner{
		Client: gc.Client, Folder: folder, Datastores: map[string]string{"LocalDS_0": dsDir},
		Content: func(p string) (string, bool) {
			name, ok := strings.CutPrefix(p, "[LocalDS_0] "+vch+"/images/")
			if !ok {
				return "", false
			}
			local := filepath.Join(rootfsDir, strings.TrimSuffix(name, ".vmdk")+".ext4")
			_, err := os.Stat(local)
			return local, err == nil
		},
		RunDir: filepath.Join(dir, "standins"), Logf: t.Logf,
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { runner.Run(rctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	showConsoles := func() {
		matches, _ := filepath.Glob(filepath.Join(dir, "standins", "*", "console.log"))
		for _, m := range matches {
			b, _ := os.ReadFile(m)
			t.Logf("%s:\n%s", m, b)
		}
	}

	dockerV := func(args ...string) string {
		t.Helper()
		out, err := dockerCmd(t, daemon.Host, args...).CombinedOutput()
		if err != nil {
			showConsoles()
			t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	out := dockerV("run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hello from vsphere; uname -r; cat /proc/cmdline")
	t.Logf("docker run: %s", out)
	if !strings.HasPrefix(out, "hello from vsphere\n") || !strings.Contains(out, "vch.channel=serial") {
		t.Errorf("docker run output %q: want the greeting and the guest's serial channel", out)
	}
	// Writes land in the container's delta disk: the image's disk under
	// it is unchanged, and another container does not see them.
	sums := func() map[string]string {
		m := map[string]string{}
		files, _ := filepath.Glob(filepath.Join(rootfsDir, "*.ext4"))
		for _, f := range files {
			m[f] = fileSHA256(t, f)
		}
		return m
	}
	before := sums()
	if out := dockerV("run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo written > /etc/vs && sync && cat /etc/vs"); out != "written" {
		t.Errorf("write on the root disk: %q", out)
	}
	if out := dockerV("run", "--rm", "--network", "none", "busybox", "sh", "-c", "cat /etc/vs 2>&1 || true"); strings.Contains(out, "written") {
		t.Errorf("a second container sees the first one's write: %q", out)
	}
	if after := sums(); len(before) == 0 || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("image disks %v changed to %v under the containers' delta disks", before, after)
	}
	if info := dockerV("info", "--format", "{{.Driver}} {{range .DriverStatus}}{{index . 0}}={{index . 1}};{{end}}"); !strings.Contains(info, "vSphere Placement=drs;") || !strings.Contains(info, "vSphere Resource Pool=/DC0/host/DC0_C0/Resources/"+vch+";") {
		t.Errorf("docker info %q: want the vSphere placement (the simulator's cluster has DRS) and resource pool", info)
	}

	// A detached container: its VM is in the VCH's folder while it runs,
	// exec reaches it, and rm -f leaves no VM and no disk of it.
	id := dockerV("run", "-d", "--network", "none", "--name", "vs1", "busybox", "sleep", "300")
	if got := dockerV("exec", "vs1", "cat", "/etc/hostname"); got != id[:12] {
		t.Errorf("exec cat /etc/hostname = %q, want %s", got, id[:12])
	}
	names := folderVMs(t, ctx, gc, folder)
	if !strings.Contains(strings.Join(names, " "), id[:12]) {
		t.Errorf("VMs in the VCH's folder %v: want one of %s", names, id[:12])
	}
	dockerV("rm", "-f", "vs1")
	for _, n := range folderVMs(t, ctx, gc, folder) {
		if n == id[:12] {
			t.Errorf("the VM of removed container %s is still there", id[:12])
		}
	}
	if _, err := os.Stat(filepath.Join(dsDir, vch, "containers", id)); !os.IsNotExist(err) {
		t.Errorf("the removed container's disk directory on the datastore: %v; want it gone", err)
	}
}

func fileSHA256(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// folderVMs are the names of the VMs in folder.
func folderVMs(t *testing.T, ctx context.Context, gc *govmomi.Client, folder *object.Folder) []string {
	t.Helper()
	children, err := folder.Children(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range children {
		if vm, ok := c.(*object.VirtualMachine); ok {
			n, err := vm.ObjectName(ctx)
			if err == nil {
				names = append(names, n)
			}
		}
	}
	return names
}
