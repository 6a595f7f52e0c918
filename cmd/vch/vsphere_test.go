package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vchproject/vch/internal/hypervisor/vsphere/vcsimtest"
	"github.com/vchproject/vch/internal/vch/deploy"
)

// fakeExecEnv makes the test binary, run by vch create as the VCH's
// supervisor and daemon, act as them: `supervise` is the real command,
// `daemon` a stand-in that answers on the admin socket and boots nothing.
const fakeExecEnv = "VCH_TEST_FAKE_EXEC"

// fakeFailEnv makes the stand-in supervisor exit at once, failing create.
const fakeFailEnv = "VCH_TEST_FAKE_FAIL"

func TestMain(m *testing.M) {
	if os.Getenv(fakeExecEnv) == "1" {
		os.Exit(fakeExec(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeExec runs the vch command line args in a child of a test.
func fakeExec(args []string) int {
	if os.Getenv(fakeFailEnv) == "1" {
		fmt.Fprintln(os.Stderr, "no daemon here")
		return 3
	}
	if len(args) == 0 || args[0] != "daemon" {
		root := newRootCmd()
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	var sock, pidfile string
	for i := 0; i+1 < len(args); i++ {
		switch {
		case args[i] == "-H" && strings.HasPrefix(args[i+1], "unix://"):
			sock = strings.TrimPrefix(args[i+1], "unix://")
		case args[i] == "--pidfile":
			pidfile = args[i+1]
		}
	}
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())), 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"Version":"fake","ApiVersion":"1.50"}`)
	})
	mux.HandleFunc("/containers/json", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `[]`) })
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{}`) })
	go http.Serve(ln, mux)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ln.Close()
	os.Remove(pidfile)
	return 0
}

// The simulated vCenter's only credentials: distinctive, so a leak shows.
const (
	simUser = "vch-admin-5e1b"
	simPass = "Pa55-Wurd-c3a9"
)

// Names in the simulated inventory.
const (
	simCluster = "/DC0/host/DC0_C0"
	simDS      = "LocalDS_0"
	simDS2     = "LocalDS_1"
	simPG      = "DC0_DVPG0"
	simPG2     = "DC0_DVPG1"
)

// vcsim is a simulated vCenter (a cluster of 4 hosts, 2 datastores, 2
// distributed portgroups) with a pool, a folder, a VM and a directory that
// are no VCH's, and a client of the test's own.
type vcsim struct {
	t      *testing.T
	server *simulator.Server
	c      *vim25.Client
	dc     *object.Datacenter
	// host is the server's host:port; target its URL with the credentials.
	host, target string
}

func newVCSim(t *testing.T) *vcsim {
	t.Helper()
	sim := vcsimtest.Start(t, simUser, simPass, func(m *simulator.Model) { m.Datastore, m.Portgroup, m.Machine = 2, 2, 1 })
	s, gc, dc, f := sim.Server, sim.Client, sim.Datacenter, sim.Finder
	ctx := t.Context()
	e := &vcsim{t: t, server: s, c: gc, dc: dc, host: s.URL.Host,
		target: "https://" + url.UserPassword(simUser, simPass).String() + "@" + s.URL.Host + "/sdk"}

	// Someone else's pool, folder, VM and directory, beside the VCH's.
	cr, err := f.ClusterComputeResource(ctx, simCluster)
	if err != nil {
		t.Fatal(err)
	}
	root, err := cr.ResourcePool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := root.Create(ctx, "other-pool", types.DefaultResourceConfigSpec())
	if err != nil {
		t.Fatal(err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	folder, err := folders.VmFolder.CreateFolder(ctx, "other-folder")
	if err != nil {
		t.Fatal(err)
	}
	task, err := folder.CreateVM(ctx, types.VirtualMachineConfigSpec{Name: "other-vm", GuestId: "otherGuest64",
		Files: &types.VirtualMachineFileInfo{VmPathName: "[" + simDS + "]"}}, pool, nil)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("create other-vm: %v", err)
	}
	if err := object.NewFileManager(e.c).MakeDirectory(ctx, "["+simDS+"] other-dir", dc, true); err != nil {
		t.Fatal(err)
	}
	return e
}

// inventory lists the names of every pool, folder and VM, and the entries
// at the roots of both datastores.
func (e *vcsim) inventory() []string {
	e.t.Helper()
	ctx := e.t.Context()
	v, err := view.NewManager(e.c).CreateContainerView(ctx, e.c.ServiceContent.RootFolder, []string{"ResourcePool", "Folder", "VirtualMachine"}, true)
	if err != nil {
		e.t.Fatal(err)
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var ents []mo.ManagedEntity
	if err := v.Retrieve(ctx, []string{"ManagedEntity"}, []string{"name"}, &ents); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, m := range ents {
		out = append(out, m.Self.Type+":"+m.Name)
	}
	for _, ds := range []string{simDS, simDS2} {
		for _, f := range e.ls(ds, "") {
			out = append(out, "file:["+ds+"] "+f)
		}
	}
	slices.Sort(out)
	return out
}

// ls lists the files in dir on the datastore ds.
func (e *vcsim) ls(ds, dir string) []string {
	e.t.Helper()
	ctx := e.t.Context()
	d, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).Datastore(ctx, ds)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := d.Browser(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	task, err := b.SearchDatastore(ctx, d.Path(dir), &types.HostDatastoreBrowserSearchSpec{MatchPattern: []string{"*"}})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, f := range info.Result.(types.HostDatastoreBrowserSearchResults).File {
		out = append(out, f.GetFileInfo().Path)
	}
	return out
}

// pool is the VCH's resource pool's config, nil if there is none.
func (e *vcsim) pool(name string) *types.ResourceConfigSpec {
	e.t.Helper()
	p, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).ResourcePool(e.t.Context(), simCluster+"/Resources/"+name)
	if err != nil {
		return nil
	}
	var o mo.ResourcePool
	if err := p.Properties(e.t.Context(), p.Reference(), []string{"config"}, &o); err != nil {
		e.t.Fatal(err)
	}
	return &o.Config
}

// coreMHz is what the driver multiplies --cpu by.
func (e *vcsim) coreMHz() int64 {
	e.t.Helper()
	cr, err := find.NewFinder(e.c, false).SetDatacenter(e.dc).ClusterComputeResource(e.t.Context(), simCluster)
	if err != nil {
		e.t.Fatal(err)
	}
	var o mo.ComputeResource
	if err := cr.Properties(e.t.Context(), cr.Reference(), []string{"summary"}, &o); err != nil {
		e.t.Fatal(err)
	}
	s := o.Summary.GetComputeResourceSummary()
	return int64(s.TotalCpu) / int64(s.NumCpuCores)
}

// vchRun runs vch in-process with the state directory base, and checks
// its output and error for the credentials.
func vchRun(t *testing.T, base string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--state-dir", base}, args...))
	err := root.Execute()
	for _, s := range []string{simUser, simPass} {
		if strings.Contains(out.String(), s) || err != nil && strings.Contains(err.Error(), s) {
			t.Errorf("vch %s: output or error holds a credential:\n%s\nerror: %v", args[0], out.String(), err)
		}
	}
	return out.String(), err
}

// noCredentialsBut walks dir and fails on any file other than allowed
// that holds a credential.
func noCredentialsBut(t *testing.T, dir string, allowed string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 || p == allowed {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, s := range []string{simUser, simPass} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a credential:\n%s", p, b)
			}
		}
		return nil
	})
}

// procHolds reports whether the process pid's command line or environment
// holds a credential.
func procHolds(t *testing.T, pid int) bool {
	t.Helper()
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			t.Fatalf("read %s of %d: %v", f, pid, err)
		}
		if bytes.Contains(b, []byte(simUser)) || bytes.Contains(b, []byte(simPass)) {
			return true
		}
	}
	return false
}

// TestVSphereLifecycle: create --target with credentials in the URL
// makes the pool (limits), folder and directories; inspect and ls show
// them without credentials; the credentials are in target.json (0600)
// alone and in no process's argv or environment; a second create of the
// name on the target is AlreadyExists and leaves the first alone;
// configure updates the pool and adds a volume store; delete removes all
// of it and nothing else.
func TestVSphereLifecycle(t *testing.T) {
	e := newVCSim(t)
	t.Setenv(fakeExecEnv, "1")
	t.Setenv(deploy.TargetUsernameEnv, "")
	t.Setenv(deploy.TargetPasswordEnv, "")
	before := e.inventory()
	base := t.TempDir()
	out, err := vchRun(t, base, "create", "vs1", "--no-tls", "--service", "process",
		"--target", e.target, "--insecure-target", "--compute-resource", simCluster,
		"--image-store", simDS, "--volume-store", "vols:ds://"+simDS2+"/vch/vols", "--volume-store", "local:"+filepath.Join(t.TempDir(), "v"),
		"--bridge-network", simPG, "--public-network", simPG2, "--cpu", "2", "--memory", "3g")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	t.Logf("vch create:\n%s", out)
	t.Cleanup(func() { vchRun(t, base, "delete", "vs1", "--force") })
	if c := e.pool("vs1"); c == nil {
		t.Fatal("no resource pool vs1")
	} else {
		if l := c.CpuAllocation.Limit; l == nil || *l != 2*e.coreMHz() {
			t.Errorf("pool CPU limit %v, want 2 x %d MHz", l, e.coreMHz())
		}
		if l := c.MemoryAllocation.Limit; l == nil || *l != 3072 {
			t.Errorf("pool memory limit %v, want 3072 MiB", l)
		}
	}
	created := e.inventory()
	for _, want := range []string{"Folder:vs1", "ResourcePool:vs1", "file:[" + simDS + "] vs1", "file:[" + simDS2 + "] vch"} {
		if !slices.Contains(created, want) {
			t.Errorf("after create, no %s in %v", want, created)
		}
	}
	if got := e.ls(simDS2, "vch"); !slices.Equal(got, []string{"vols"}) {
		t.Errorf("[%s] vch holds %v, want the volume store vols", simDS2, got)
	}

	// Credentials: target.json alone, 0600; not in any process.
	l := deploy.Layout{Dir: filepath.Join(base, "vs1")}
	st, err := os.Stat(l.CredentialsFile())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, %v; want mode 0600", st, err)
	}
	var creds deploy.Credentials
	b, _ := os.ReadFile(l.CredentialsFile())
	if err := json.Unmarshal(b, &creds); err != nil || creds.Username != simUser || creds.Password != simPass {
		t.Errorf("credentials file does not hold the credentials: %v", err)
	}
	noCredentialsBut(t, base, l.CredentialsFile())
	for _, f := range []string{l.DaemonPIDFile(), l.SupervisorPIDFile()} {
		b, _ := os.ReadFile(f)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid <= 0 {
			t.Fatalf("%s: no pid", f)
		}
		if procHolds(t, pid) {
			t.Errorf("process %d (%s) holds a credential in its argv or environment", pid, filepath.Base(f))
		}
	}

	// inspect and ls.
	out, err = vchRun(t, base, "inspect", "vs1")
	if err != nil {
		t.Fatal(err)
	}
	var sts []deploy.Status
	if err := json.Unmarshal([]byte(out), &sts); err != nil || len(sts) != 1 || sts[0].VSphere == nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	want := deploy.VSphereInfo{
		Target: "https://" + e.host + "/sdk", Insecure: true, ComputeResource: simCluster,
		ResourcePool: simCluster + "/Resources/vs1", VMFolder: "/DC0/vm/vs1", ImageStore: "[" + simDS + "] vs1",
		VolumeStores: []string{"vols:[" + simDS2 + "] vch/vols"}, BridgeNetwork: simPG, PublicNetwork: simPG2,
		CPULimitMHz: 2 * e.coreMHz(), MemoryLimitMiB: 3072, Containers: sts[0].VSphere.Containers,
	}
	if got := *sts[0].VSphere; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("inspect's VSphere:\n got %+v\nwant %+v", got, want)
	}
	if !strings.Contains(sts[0].VSphere.Containers, "QEMU") {
		t.Errorf("inspect does not say containers run on QEMU: %q", sts[0].VSphere.Containers)
	}
	out, err = vchRun(t, base, "ls")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vch ls:\n%s", out)
	for _, w := range []string{"TARGET", "https://" + e.host + "/sdk", simCluster + "/Resources/vs1", "/DC0/vm/vs1", "[" + simDS + "] vs1", "vols:[" + simDS2 + "] vch/vols", "bridge=" + simPG + ",public=" + simPG2} {
		if !strings.Contains(out, w) {
			t.Errorf("ls does not show %q:\n%s", w, out)
		}
	}

	// The same name on the same target from another host: AlreadyExists,
	// nothing of the first touched.
	other := t.TempDir()
	_, err = vchRun(t, other, "create", "vs1", "--no-tls", "--service", "process",
		"--target", e.target, "--insecure-target", "--compute-resource", simCluster, "--image-store", simDS)
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "already exists on https://"+e.host+"/sdk") {
		t.Errorf("second create: %v, want AlreadyExists naming the target", err)
	}
	if got := e.inventory(); !slices.Equal(got, created) {
		t.Errorf("a refused create changed the inventory:\n got %v\nwant %v", got, created)
	}
	if ents, _ := os.ReadDir(other); len(ents) != 0 {
		t.Errorf("a refused create left %v", ents)
	}

	// configure: limits and a volume store; the target is fixed.
	if _, err := vchRun(t, base, "configure", "vs1", "--target", "https://"+e.host+"/sdk"); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "cannot change --target") {
		t.Errorf("configure --target: %v", err)
	}
	if _, err := vchRun(t, base, "configure", "vs1", "--volume-store", "more:ds://"+simDS+"/more"); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "cannot drop") {
		t.Errorf("configure dropping vols: %v", err)
	}
	out, err = vchRun(t, base, "configure", "vs1", "--force", "--cpu", "1", "--memory", "2g",
		"--volume-store", "vols:ds://"+simDS2+"/vch/vols", "--volume-store", "more:ds://"+simDS+"/more")
	if err != nil {
		t.Fatalf("configure: %v\n%s", err, out)
	}
	if c := e.pool("vs1"); c == nil || *c.CpuAllocation.Limit != e.coreMHz() || *c.MemoryAllocation.Limit != 2048 {
		t.Errorf("pool after configure: %+v", c)
	}
	if !slices.Contains(e.ls(simDS, ""), "more") {
		t.Error("configure did not make the volume store more")
	}
	noCredentialsBut(t, base, l.CredentialsFile())

	// delete: everything made, nothing else.
	out, err = vchRun(t, base, "delete", "vs1")
	if err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	t.Logf("vch delete:\n%s", out)
	if got := e.inventory(); !slices.Equal(got, before) {
		t.Errorf("after delete:\n got %v\nwant %v", got, before)
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("state directory left: %v", err)
	}
}

// TestVSphereEnvCredentials: a target URL without user information takes
// the credentials from the environment; delete finds them in the
// credentials file, and the environment, when set, overrides it.
func TestVSphereEnvCredentials(t *testing.T) {
	e := newVCSim(t)
	t.Setenv(fakeExecEnv, "1")
	t.Setenv(deploy.TargetUsernameEnv, simUser)
	t.Setenv(deploy.TargetPasswordEnv, simPass)
	before := e.inventory()
	base := t.TempDir()
	out, err := vchRun(t, base, "create", "vs2", "--no-tls", "--service", "process",
		"--target", "https://"+e.host, "--insecure-target", "--compute-resource", simCluster, "--image-store", simDS+"/images/vs2")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	t.Cleanup(func() { vchRun(t, base, "delete", "vs2", "--force") })
	if e.pool("vs2") == nil || !slices.Contains(e.ls(simDS, "images"), "vs2") {
		t.Fatalf("create with env credentials made no pool or image store: %v", e.inventory())
	}
	l := deploy.Layout{Dir: filepath.Join(base, "vs2")}
	noCredentialsBut(t, base, l.CredentialsFile())
	if st, err := os.Stat(l.CredentialsFile()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v", err)
	}
	for _, f := range []string{l.DaemonPIDFile(), l.SupervisorPIDFile()} {
		b, _ := os.ReadFile(f)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid <= 0 || procHolds(t, pid) {
			t.Errorf("process of %s (pid %d) holds the credentials from create's environment", f, pid)
		}
	}

	// A wrong password in the environment beats the file: delete fails,
	// Unauthenticated, without the password, and stops nothing.
	t.Setenv(deploy.TargetPasswordEnv, "Wrong-"+simPass)
	_, err = vchRun(t, base, "delete", "vs2")
	if !errdefs.IsUnauthorized(err) || strings.Contains(err.Error(), "Wrong-") {
		t.Errorf("delete with a wrong password: %v, want Unauthenticated without the password", err)
	}
	if out, _ := vchRun(t, base, "ls"); !strings.Contains(out, "running") {
		t.Errorf("a delete that could not log in stopped the VCH:\n%s", out)
	}
	// With --force the VCH stops here (no daemon left running against a
	// vCenter it cannot reach) but keeps its state and inventory.
	_, err = vchRun(t, base, "delete", "--force", "vs2")
	if !errdefs.IsUnauthorized(err) || strings.Contains(err.Error(), "Wrong-") {
		t.Errorf("delete --force with a wrong password: %v, want Unauthenticated without the password", err)
	}
	if out, _ := vchRun(t, base, "ls"); strings.Contains(out, "running") || !strings.Contains(out, "vs2") {
		t.Errorf("after delete --force that could not log in: want vs2 listed and stopped:\n%s", out)
	}
	if e.pool("vs2") == nil {
		t.Error("delete --force that could not log in removed the pool")
	}
	// Without the environment, the file's credentials.
	t.Setenv(deploy.TargetUsernameEnv, "")
	t.Setenv(deploy.TargetPasswordEnv, "")
	if out, err := vchRun(t, base, "delete", "vs2"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if got := e.inventory(); !slices.Equal(got, before) {
		t.Errorf("after delete:\n got %v\nwant %v", got, before)
	}
}

// TestVSphereRollback: a create that fails after the vSphere objects were
// made (the daemon never answers; a volume store on a missing datastore)
// removes them, and the state directory.
func TestVSphereRollback(t *testing.T) {
	e := newVCSim(t)
	t.Setenv(fakeExecEnv, "1")
	before := e.inventory()
	base := t.TempDir()
	args := []string{"create", "vs3", "--no-tls", "--service", "process", "--target", e.target, "--insecure-target",
		"--compute-resource", simCluster, "--image-store", simDS, "--volume-store", "v:ds://" + simDS2 + "/a/b", "--cpu", "1"}

	t.Setenv(fakeFailEnv, "1")
	out, err := vchRun(t, base, args...)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "no daemon here") {
		t.Fatalf("create with a failing daemon: %v, want Unavailable with its output\n%s", err, out)
	}
	if !strings.Contains(out, "removing what was made") {
		t.Errorf("no rollback in the progress:\n%s", out)
	}
	if got := e.inventory(); !slices.Equal(got, before) {
		t.Errorf("after a failed create:\n got %v\nwant %v", got, before)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("a failed create left %v", ents)
	}

	t.Setenv(fakeFailEnv, "")
	args = append(args, "--volume-store", "w:ds://NoSuchDS/x")
	if _, err := vchRun(t, base, args...); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "volume store w") {
		t.Errorf("create with a volume store on a missing datastore: %v, want NotFound", err)
	}
	if got := e.inventory(); !slices.Equal(got, before) {
		t.Errorf("after a failed create:\n got %v\nwant %v", got, before)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("a failed create left %v", ents)
	}
}

// TestVSphereLoginFails: a wrong password, an unreachable target, a wrong
// thumbprint and objects the target does not have fail create before
// anything is made, and no error or output holds the credentials.
func TestVSphereLoginFails(t *testing.T) {
	e := newVCSim(t)
	t.Setenv(fakeExecEnv, "1")
	t.Setenv(deploy.TargetUsernameEnv, "")
	t.Setenv(deploy.TargetPasswordEnv, "")
	before := e.inventory()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	wrong := strings.Replace(e.target, simPass, "Wrong-"+simPass, 1)
	tests := []struct {
		name  string
		args  []string
		class func(error) bool
		want  string
	}{
		{"wrong password", []string{"--target", wrong, "--insecure-target"}, errdefs.IsUnauthorized, "log in"},
		{"unreachable", []string{"--target", "https://" + url.UserPassword(simUser, simPass).String() + "@" + dead + "/sdk", "--insecure-target"}, errdefs.IsUnavailable, dead},
		{"wrong thumbprint", []string{"--target", e.target, "--thumbprint", strings.Repeat("AB:", 19) + "AB"}, func(err error) bool { return err != nil }, "thumbprint does not match"},
		{"no such cluster", []string{"--target", e.target, "--insecure-target", "--compute-resource", "/DC0/host/nope"}, errdefs.IsNotFound, "compute resource"},
		{"no such datastore", []string{"--target", e.target, "--insecure-target", "--image-store", "NoSuchDS"}, errdefs.IsNotFound, "datastore"},
		{"no such network", []string{"--target", e.target, "--insecure-target", "--public-network", "nope"}, errdefs.IsNotFound, "--public-network nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			args := append([]string{"create", "vs4", "--no-tls", "--service", "process", "--compute-resource", simCluster, "--image-store", simDS}, tc.args...)
			_, err := vchRun(t, base, args...)
			if !tc.class(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v, want a classified error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "Wrong-") {
				t.Errorf("the error holds the wrong password: %v", err)
			}
			if ents, _ := os.ReadDir(base); len(ents) != 0 {
				t.Errorf("a failed create left %v", ents)
			}
		})
	}
	if got := e.inventory(); !slices.Equal(got, before) {
		t.Errorf("failed creates changed the inventory:\n got %v\nwant %v", got, before)
	}
}

// TestVSphereFlagValidation: refused before anything is made, with a
// clear message, and no credential in it.
func TestVSphereFlagValidation(t *testing.T) {
	t.Setenv(deploy.TargetUsernameEnv, "")
	t.Setenv(deploy.TargetPasswordEnv, "")
	target := "https://" + url.UserPassword(simUser, simPass).String() + "@vc.example.com/sdk"
	full := []string{"--compute-resource", "/DC0/host/C0", "--image-store", "ds1"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"thumbprint and insecure", append([]string{"--target", target, "--insecure-target", "--thumbprint", "AB"}, full...), "--thumbprint and --insecure-target exclude each other"},
		{"no compute resource", []string{"--target", target, "--image-store", "ds1"}, "--target needs --compute-resource"},
		{"no image store", []string{"--target", target, "--compute-resource", "/DC0/host/C0"}, "--target needs --compute-resource"},
		{"http", append([]string{"--target", "http://" + url.UserPassword(simUser, simPass).String() + "@vc.example.com/sdk"}, full...), "want https://HOST/sdk"},
		{"no host", append([]string{"--target", "https:///sdk"}, full...), "no host"},
		{"other path", append([]string{"--target", "https://" + url.UserPassword(simUser, simPass).String() + "@vc.example.com/DC0"}, full...), `path "/DC0"`},
		{"unparseable", append([]string{"--target", "https://" + simUser + ":" + simPass + "@vc example.com:x/sdk"}, full...), "does not parse"},
		{"no credentials", append([]string{"--target", "https://vc.example.com/sdk"}, full...), "set VCH_TARGET_USERNAME and VCH_TARGET_PASSWORD"},
		{"bad compute resource", []string{"--target", target, "--compute-resource", "C0", "--image-store", "ds1"}, "want the inventory path of a cluster or host"},
		{"bad image store", []string{"--target", target, "--compute-resource", "/DC0/host/C0", "--image-store", "[ds1] x"}, "--image-store"},
		{"bad ds volume store", append([]string{"--target", target, "--volume-store", "v:ds://ds1"}, full...), "want NAME:ds://DATASTORE/PATH"},
		{"volume store in the image store", append([]string{"--target", target, "--volume-store", "v:ds://ds1/x/vols"}, "--compute-resource", "/DC0/host/C0", "--image-store", "ds1/x"), "inside the image store [ds1] x"},
		{"volume store in the default image store", append([]string{"--target", target, "--volume-store", "v:ds://ds1/x"}, full...), "inside the image store [ds1] x"},
		{"duplicate volume store", append([]string{"--target", target, "--volume-store", "v:ds://ds1/a", "--volume-store", "v:/srv/v"}, full...), "given twice"},
		{"ds volume store without target", []string{"--volume-store", "v:ds://ds1/vols"}, "needs a vSphere VCH (--target)"},
		{"compute resource without target", []string{"--compute-resource", "/DC0/host/C0"}, "--compute-resource needs --target"},
		{"insecure without target", []string{"--insecure-target"}, "--insecure-target needs --target"},
		{"wildcard channel", append([]string{"--target", target, "--channel-listen", "0.0.0.0:2377"}, full...), "--channel-listen"},
		{"channel without port", append([]string{"--target", target, "--channel-listen", "10.0.0.5"}, full...), "--channel-listen"},
		{"channel without target", []string{"--channel-listen", "10.0.0.5:2377"}, "--channel-listen needs --target"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			_, err := vchRun(t, base, append([]string{"create", "x", "--no-tls"}, tc.args...)...)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v, want InvalidArgument with %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(base); len(ents) != 0 {
				t.Errorf("a refused create left %v", ents)
			}
		})
	}
}
