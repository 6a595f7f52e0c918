//go:build e2e

package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"

	"github.com/vchproject/vch/internal/hypervisor/vsphere/standin"
	"github.com/vchproject/vch/internal/hypervisor/vsphere/vcsimtest"
	"github.com/vchproject/vch/internal/testenv"
	"github.com/vchproject/vch/internal/vch/deploy"
)

// TestVSphereLifecycle is the operator's story on vSphere: vch create
// --target makes the VCH on a vCenter (govmomi's simulator, a cluster of
// 4 hosts), the team's docker CLI runs containers whose VMs are in the
// VCH's pool and folder there, and vch delete leaves nothing behind. The
// simulator runs no guest: each VM the driver powers on gets a real QEMU
// guest standing in for it (package standin), booted from the boot ISO
// and the disk chain the driver put on the simulated datastore, talking
// to the daemon over the VM's network-backed serial port.
func TestVSphereLifecycle(t *testing.T) {
	o := newOperator(t)
	sim := vcsimtest.Start(t, "vch-operator", "lifecycle-Pa55", func(m *simulator.Model) { m.Machine = 0 })
	srv := sim.Server
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()

	// The bridge portgroup, as the test's own: a bridge "pg" in a network
	// namespace of the test's, and the VCH host's interface on it, one
	// end of a veth pair (no address) whose other end is on "pg". The
	// stand-ins' NICs go on "pg"; the daemon enslaves the interface to
	// its bridge, so their frames reach the VCH as a portgroup's would.
	pgns, uplink := portgroup(t)

	const name = "vs"
	env := o.create(name, "--no-tls", "--target", srv.URL.String(), "--insecure-target",
		"--compute-resource", "/DC0/host/DC0_C0", "--image-store", "LocalDS_0",
		"--bridge-network", "DC0_DVPG0", "--bridge-interface", uplink,
		"--volume-store", "default:ds://LocalDS_0/"+name+"-volumes")

	gc, f := sim.Client, sim.Finder
	folder, err := f.Folder(ctx, "/DC0/vm/"+name)
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
	loadBusybox(t, env)

	// The stand-ins read the disks the driver imported to the simulated
	// datastore: vcsimtest's simulator keeps what NFC uploads send.
	runner := &standin.Runner{
		Client: gc, Folder: folder, Datastores: map[string]string{"LocalDS_0": dsDir},
		NIC: func(vm string, index int, mac string) (string, string, bool) {
			return pgns, "pg", true
		},
		RunDir: filepath.Join(t.TempDir(), "standins"), Logf: t.Logf,
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { runner.Run(rctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	dockerV := func(args ...string) string {
		t.Helper()
		r := docker(t, env, args...)
		if r.code != 0 {
			matches, _ := filepath.Glob(filepath.Join(runner.RunDir, "*", "console.log"))
			for _, m := range matches {
				b, _ := os.ReadFile(m)
				t.Logf("%s:\n%s", m, b)
			}
			t.Fatalf("docker %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}

	out := dockerV("run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hello from vsphere; cat /proc/cmdline")
	if !strings.HasPrefix(out, "hello from vsphere\n") || !strings.Contains(out, "vch.channel=serial") {
		t.Errorf("docker run output %q: want the greeting and the guest's serial channel", out)
	}
	// The guest's devices are vSphere's: its disks on a paravirtual SCSI
	// controller (found by the addresses in guestinfo: they have no
	// serial), its NIC a vmxnet3.
	out = dockerV("run", "--rm", "busybox", "sh", "-c", "ls /sys/block; cat /sys/class/scsi_host/*/proc_name; basename $(readlink /sys/class/net/eth0/device/driver)")
	if f := strings.Fields(out); !slices.Contains(f, "sda") || slices.Contains(f, "vda") || !slices.Contains(f, "vmw_pvscsi") || !slices.Contains(f, "vmxnet3") {
		t.Errorf("the guest's devices %q: want sda on vmw_pvscsi and a vmxnet3 NIC, no virtio-blk disk", out)
	}
	info := dockerV("info", "--format", "{{range .DriverStatus}}{{index . 0}}={{index . 1}};{{end}}")
	if !strings.Contains(info, "vSphere Placement=drs;") || !strings.Contains(info, "vSphere Resource Pool=/DC0/host/DC0_C0/Resources/"+name+";") {
		t.Errorf("docker info %q: want the vSphere placement (the simulator's cluster has DRS) and resource pool", info)
	}
	if !strings.Contains(info, "Volume Store default=ds://LocalDS_0/"+name+"-volumes;") {
		t.Errorf("docker info %q: want the datastore volume store as the default", info)
	}

	// The default bridge network: the container's NIC is on the bridge
	// portgroup, it has its address on the VCH's bridge, and a published
	// port reaches it.
	if out := dockerV("run", "--rm", "busybox", "ip", "-4", "addr", "show", "eth0"); !strings.Contains(out, "inet 172.17.") {
		t.Errorf("a container on the default bridge: %q, want an address in 172.17.0.0/16", out)
	}
	port := freePort(t)
	dockerV("run", "-d", "--name", "web", "-p", "127.0.0.1:"+port+":8080", "busybox", "sh", "-c", "echo served from vsphere > /index.html; exec httpd -f -p 8080 -h /")
	// served is what the published port serves at /index.html, once it
	// answers 200 (within a minute).
	served := func(port, what string) string {
		t.Helper()
		var body string
		waitFor(t, 60*time.Second, what, func() bool {
			resp, err := http.Get("http://127.0.0.1:" + port + "/index.html")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return resp.StatusCode == 200
		})
		return body
	}
	if body := served(port, "the published port to serve"); body != "served from vsphere\n" {
		t.Errorf("published port served %q", body)
	}
	dockerV("rm", "-f", "web")

	// A user-defined network: its bridge is joined to the uplink's, so a
	// port published by its container is reached through it (the daemon's
	// side of the network: without the join its bridge reaches no VM),
	// its containers, on the same portgroup, reach each other by name (the
	// embedded DNS), and the default bridge's do not reach them.
	dockerV("network", "create", "vsnet")
	port2 := freePort(t)
	dockerV("run", "-d", "--network", "vsnet", "--name", "vsweb", "-p", "127.0.0.1:"+port2+":80", "busybox", "sh", "-c", "echo on vsnet > /index.html; exec httpd -f -p 80 -h /")
	if body := served(port2, "vsnet's published port to serve"); body != "on vsnet\n" {
		t.Errorf("vsnet's published port served %q", body)
	}
	// (busybox-static's wget -T crashes: timeout(1) bounds each try.)
	fetch := "for i in $(seq 20); do timeout 3 wget -qO- http://%s/index.html && exit 0; sleep 1; done; exit 1"
	if out := dockerV("run", "--rm", "--network", "vsnet", "busybox", "sh", "-c", fmt.Sprintf(fetch, "vsweb")); out != "on vsnet" {
		t.Errorf("a peer on a user-defined network by name: %q, want %q", out, "on vsnet")
	}
	vsIP := dockerV("inspect", "-f", "{{.NetworkSettings.Networks.vsnet.IPAddress}}", "vsweb")
	// (Not the container's first process: PID 1 ignores timeout's signal.)
	if out := dockerV("run", "--rm", "busybox", "sh", "-c", "timeout 5 wget -qO- http://"+vsIP+"/index.html; echo rc=$?"); strings.Contains(out, "on vsnet") || strings.Contains(out, "rc=0") {
		t.Errorf("a container on the default bridge reached %s on vsnet: %q", vsIP, out)
	}
	dockerV("rm", "-f", "vsweb")
	dockerV("network", "rm", "vsnet")

	// Writes land in the container's delta disk: the image's disk under
	// it is unchanged, and another container does not see them.
	sums := func() map[string]string {
		s := map[string]string{}
		files, _ := filepath.Glob(filepath.Join(dsDir, name, "images", "*-flat.vmdk"))
		for _, f := range files {
			s[f] = testenv.FileSHA256(t, f)
		}
		return s
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

	// A volume on the datastore volume store: a disk there, which one
	// container writes and the next reads; docker volume rm deletes it.
	dockerV("volume", "create", "vsvol")
	volDisk := filepath.Join(dsDir, name+"-volumes", "vsvol", "vsvol.vmdk")
	if _, err := os.Stat(volDisk); err != nil {
		t.Errorf("the volume's disk on the datastore: %v", err)
	}
	if out := dockerV("run", "--rm", "--network", "none", "-v", "vsvol:/data", "busybox", "sh", "-c", "echo kept on the datastore > /data/f && sync && cat /data/f"); out != "kept on the datastore" {
		t.Errorf("write to the volume: %q", out)
	}
	if out := dockerV("run", "--rm", "--network", "none", "-v", "vsvol:/data", "busybox", "cat", "/data/f"); out != "kept on the datastore" {
		t.Errorf("the next container reads %q from the volume, want what the first wrote", out)
	}
	if got := dockerV("volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "vsvol"); got != "vsvol local" {
		t.Errorf("docker volume inspect: %q", got)
	}
	dockerV("volume", "rm", "vsvol")
	if _, err := os.Stat(filepath.Dir(volDisk)); !os.IsNotExist(err) {
		t.Errorf("the removed volume's directory on the datastore: %v; want it gone", err)
	}

	// A detached container: its VM is in the VCH's folder while it runs,
	// exec reaches it, and rm -f leaves no VM and no disk of it.
	id := dockerV("run", "-d", "--network", "none", "--name", "vs1", "busybox", "sleep", "300")
	if got := dockerV("exec", "vs1", "cat", "/etc/hostname"); got != id[:12] {
		t.Errorf("exec cat /etc/hostname = %q, want %s", got, id[:12])
	}
	if names := folderVMs(t, ctx, folder); !strings.Contains(strings.Join(names, " "), id[:12]) {
		t.Errorf("VMs in the VCH's folder %v: want one of %s", names, id[:12])
	}
	// docker inspect names the ESX host the VM runs on (Node.Name, as
	// the Swarm API had it), the one vSphere reports.
	if got, want := dockerV("inspect", "-f", "{{.Node.Name}}", "vs1"), vmHost(t, ctx, f, name, id[:12]); got == "" || got != want {
		t.Errorf("docker inspect's Node.Name of vs1 = %q, want its VM's host %q", got, want)
	}
	dockerV("rm", "-f", "vs1")
	for _, n := range folderVMs(t, ctx, folder) {
		if n == id[:12] {
			t.Errorf("the VM of removed container %s is still there", id[:12])
		}
	}
	if _, err := os.Stat(filepath.Join(dsDir, name, "containers", id)); !os.IsNotExist(err) {
		t.Errorf("the removed container's disk directory on the datastore: %v; want it gone", err)
	}

	// A VM powered off behind the VCH's back: its container exits with
	// a non-zero code and a die event; with a restart policy it runs again
	// in a new VM.
	since := time.Now().Add(-time.Second).Unix()
	dockerV("run", "-d", "--network", "none", "--name", "vs2", "busybox", "sleep", "300")
	dockerV("run", "-d", "--network", "none", "--name", "vs3", "--restart", "always", "busybox", "sleep", "300")
	vs2, vs3 := dockerV("inspect", "-f", "{{.Id}}", "vs2"), dockerV("inspect", "-f", "{{.Id}}", "vs3")
	firstVM := powerOff(t, ctx, f, name, vs3[:12])
	powerOff(t, ctx, f, name, vs2[:12])
	waitFor(t, 60*time.Second, "vs2 to exit", func() bool {
		return dockerV("inspect", "-f", "{{.State.Status}}", "vs2") == "exited"
	})
	if code := dockerV("inspect", "-f", "{{.State.ExitCode}}", "vs2"); code == "0" {
		t.Errorf("vs2 powered off behind the VCH's back exited with code 0; want non-zero")
	}
	events := dockerV("events", "--since", fmt.Sprint(since), "--until", fmt.Sprint(time.Now().Unix()+1), "--filter", "container=vs2", "--filter", "event=die", "--format", "{{.Action}}")
	if events != "die" {
		t.Errorf("die events of vs2: %q, want one", events)
	}
	waitFor(t, 3*time.Minute, "vs3 to run again", func() bool {
		return dockerV("inspect", "-f", "{{.State.Running}} {{.State.Restarting}} {{.RestartCount}}", "vs3") == "true false 1"
	})
	if vm := findVM(t, ctx, f, name, vs3[:12]); vm == nil || vm.Reference() == firstVM.Reference() {
		t.Errorf("vs3 restarted: its VM %v, want a new one (the first was %v)", vm, firstVM)
	}
	if got := dockerV("exec", "vs3", "echo", "back"); got != "back" {
		t.Errorf("exec in the restarted vs3: %q", got)
	}
	dockerV("rm", "-f", "vs2", "vs3")

	// kill -9 of the daemon: the container's VM runs on in vSphere, and
	// the daemon the supervisor starts again takes it back (the driver
	// points the VM's serial port at its new listener; the guest says
	// its hello again): the same VM, still running, its output kept,
	// exec answering.
	dockerV("run", "-d", "--network", "none", "--name", "vs4", "busybox", "sh", "-c", "echo before the restart; exec sleep 300")
	vs4 := dockerV("inspect", "-f", "{{.Id}}", "vs4")
	vmBefore := findVM(t, ctx, f, name, vs4[:12])
	waitFor(t, 60*time.Second, "vs4's first output", func() bool {
		return strings.Contains(dockerV("logs", "vs4"), "before the restart")
	})
	pid := o.inspect(name).Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the supervisor restarts the daemon", func() bool {
		st := o.inspect(name)
		return st.State == deploy.StateRunning && st.Pid > 0 && st.Pid != pid
	})
	waitFor(t, 90*time.Second, "the restarted daemon answers with vs4 running", func() bool {
		r := docker(t, env, "inspect", "-f", "{{.State.Running}}", "vs4")
		return r.code == 0 && strings.TrimSpace(r.stdout) == "true"
	})
	if got := dockerV("exec", "vs4", "echo", "after the restart"); got != "after the restart" {
		t.Errorf("exec in vs4 after the daemon's restart: %q", got)
	}
	if vm := findVM(t, ctx, f, name, vs4[:12]); vm == nil || vmBefore == nil || vm.Reference() != vmBefore.Reference() {
		t.Errorf("vs4's VM after the restart: %v, want the same VM %v", vm, vmBefore)
	}
	if logs := dockerV("logs", "vs4"); logs != "before the restart" {
		t.Errorf("vs4's logs after the restart: %q", logs)
	}
	dockerV("rm", "-f", "vs4")
	if vm := findVM(t, ctx, f, name, vs4[:12]); vm != nil {
		t.Errorf("the VM of removed container vs4 is still there")
	}

	// vch delete removes the pool, the folder (with the driver's helper
	// VM) and the image store's directory.
	o.mustVCH("delete", name)
	if _, err := f.Folder(ctx, "/DC0/vm/"+name); err == nil {
		t.Error("the VCH's folder is still there after vch delete")
	}
	if _, err := f.ResourcePool(ctx, "/DC0/host/DC0_C0/Resources/"+name); err == nil {
		t.Error("the VCH's resource pool is still there after vch delete")
	}
	if _, err := os.Stat(filepath.Join(dsDir, name)); !os.IsNotExist(err) {
		t.Errorf("the image store's directory after vch delete: %v; want it gone", err)
	}
}

// portgroup makes the test's portgroup: namespace NS with bridge "pg",
// and a veth pair from this namespace (returned, no address) to "pg".
func portgroup(t *testing.T) (ns, uplink string) {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	ns, uplink, peer := "vch-pg-"+tag, "vpg"+tag+"a", "vpg"+tag+"b"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns).Run()
		exec.Command("ip", "link", "del", uplink).Run() // if still here
	})
	ip("-n", ns, "link", "add", "pg", "type", "bridge")
	ip("-n", ns, "link", "set", "pg", "up")
	ip("link", "add", uplink, "type", "veth", "peer", "name", peer, "netns", ns)
	ip("-n", ns, "link", "set", peer, "master", "pg", "up")
	return ns, uplink
}

// vmHost is the inventory name of the host the VM named vmName in the
// VCH's folder runs on (its runtime.host), "" if it has none.
func vmHost(t *testing.T, ctx context.Context, f *find.Finder, vch, vmName string) string {
	t.Helper()
	vm := findVM(t, ctx, f, vch, vmName)
	if vm == nil {
		t.Fatalf("no VM %s in the VCH's folder", vmName)
	}
	h, err := vm.HostSystem(ctx)
	if err != nil {
		t.Fatalf("the host of VM %s: %v", vmName, err)
	}
	n, err := h.ObjectName(ctx)
	if err != nil {
		t.Fatalf("the name of host %v: %v", h.Reference(), err)
	}
	return n
}

// findVM is the VM named vmName in the VCH's folder, nil if none.
func findVM(t *testing.T, ctx context.Context, f *find.Finder, vch, vmName string) *object.VirtualMachine {
	t.Helper()
	vm, err := f.VirtualMachine(ctx, "/DC0/vm/"+vch+"/"+vmName)
	if err != nil {
		return nil
	}
	return vm
}

// powerOff powers the VM vmName off as someone else than the VCH would,
// and returns it.
func powerOff(t *testing.T, ctx context.Context, f *find.Finder, vch, vmName string) *object.VirtualMachine {
	t.Helper()
	vm := findVM(t, ctx, f, vch, vmName)
	if vm == nil {
		t.Fatalf("no VM %s in the VCH's folder", vmName)
	}
	task, err := vm.PowerOff(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("power off %s: %v", vmName, err)
	}
	return vm
}

// folderVMs are the names of the VMs in folder.
func folderVMs(t *testing.T, ctx context.Context, folder *object.Folder) []string {
	t.Helper()
	children, err := folder.Children(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range children {
		if vm, ok := c.(*object.VirtualMachine); ok {
			if n, err := vm.ObjectName(ctx); err == nil {
				names = append(names, n)
			}
		}
	}
	return names
}
