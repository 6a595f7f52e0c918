//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/testenv"
)

// restoredRun runs a busybox script in a named container (not --rm, so
// its ID can be read) and returns its output and whether the daemon
// restored its VM from a template, for it or as a warm VM it claimed
// (its log names the VM).
func restoredRun(t *testing.T, args ...string) (out string, restored bool) {
	t.Helper()
	out, restored, _ = restoredOrWarmRun(t, args...)
	return out, restored
}

// restoredOrWarmRun is restoredRun that also tells whether the VM was a
// warm one (package warmpool) the container claimed.
func restoredOrWarmRun(t *testing.T, args ...string) (out string, restored, warm bool) {
	t.Helper()
	name := uniqueName(t)
	out = ok(t, append([]string{"run", "--name", name}, args...)...)
	id := strings.TrimSpace(ok(t, "inspect", "--format", "{{.Id}}", name))
	ok(t, "rm", name)
	log := env.daemon.Log(1 << 20)
	warm = strings.Contains(log, `msg="warm VM claimed" component=compute container=`+id)
	return out, warm || strings.Contains(log, `msg="vm restored" component=vmtemplate vm=`+id[:12]), warm
}

// TestTemplateClones: containers restored from one template are each
// their own: different random bytes and boot IDs (the guest CRNG is
// reseeded at wake), their own MAC (not the template's), the host's
// clock; docker info says templates are on.
func TestTemplateClones(t *testing.T) {
	t.Parallel()
	if info := ok(t, "info"); !strings.Contains(info, "VM Templates: on") {
		t.Errorf("docker info does not show templates on:\n%s", info)
	}
	script := `head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; cat /proc/sys/kernel/random/boot_id; cat /sys/class/net/eth0/address; date +%s`
	var outs [][]string
	for i := 0; i < 3; i++ {
		out, restored := restoredRun(t, "busybox", "sh", "-c", script)
		if i > 0 && !restored {
			// The first may have booted while the template was built.
			t.Errorf("run %d was not restored from a template; daemon log:\n%s", i, env.daemon.Log(3000))
		}
		f := strings.Fields(out)
		if len(f) != 4 {
			t.Fatalf("output %q: want 4 fields", out)
		}
		outs = append(outs, f)
	}
	for i := 1; i < len(outs); i++ {
		if outs[i][0] == outs[i-1][0] {
			t.Errorf("two restored containers read the same /dev/urandom bytes %s", outs[i][0])
		}
		if outs[i][1] == outs[i-1][1] {
			t.Errorf("two restored containers share boot_id %s", outs[i][1])
		}
	}
	for _, o := range outs {
		if strings.HasPrefix(o[2], "02:76:63:68:ff") || !strings.HasPrefix(o[2], "02:42:") {
			t.Errorf("eth0 has address %s; want the container's own (02:42:…), not the template's", o[2])
		}
	}
	sec, err := strconv.ParseInt(outs[len(outs)-1][3], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if d := sec - time.Now().Unix(); d < -5 || d > 1 {
		t.Errorf("restored guest clock %d s off the host's", d)
	}
}

// TestTemplateDamaged: a template whose saved state is damaged is not
// fatal: the next container of its shape boots cold (a warning in the
// log), the template is made again, and the one after is restored. Not
// parallel: it finds its template as the directory its first run made.
func TestTemplateDamaged(t *testing.T) {
	need(t)
	dir := filepath.Join(env.daemon.Root, "compute", "templates")
	list := func() []string {
		var keys []string
		es, _ := os.ReadDir(dir)
		for _, e := range es {
			if e.IsDir() && !strings.HasSuffix(e.Name(), ".run") {
				keys = append(keys, e.Name())
			}
		}
		return keys
	}
	before := list()
	// A shape of its own (a 1 GiB VM for a 700 MiB limit), so no other
	// test uses it.
	args := []string{"-m", "700m", "busybox", "echo", "fine"}
	restoredRun(t, args...)
	var key string
	for _, k := range list() {
		if !slices.Contains(before, k) {
			key = k
		}
	}
	if key == "" {
		t.Fatalf("no template directory appeared in %s for a new shape", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, key, "state"), []byte("damaged\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, restored := restoredRun(t, args...); out != "fine\n" || restored {
		t.Errorf("run over a damaged template: output %q, restored %v; want fine, booted", out, restored)
	}
	if !strings.Contains(env.daemon.Log(1<<20), "restore from template failed") {
		t.Error("no warning about the damaged template in the daemon log")
	}
	if out, restored := restoredRun(t, args...); out != "fine\n" || !restored {
		t.Errorf("run after the template was made again: output %q, restored %v; want fine, restored", out, restored)
	}
}

// TestMemoryMerge: the shared daemon runs with --memory-merge: a
// restored container's VMM has its whole memory mergeable (KSM's
// ksm_merge_any, Linux 6.4), and docker info says so with the host's
// KSM state. Whether pages merge is the host's choice (KSM off here).
func TestMemoryMerge(t *testing.T) {
	t.Parallel()
	if info := ok(t, "info"); !regexp.MustCompile(`Memory Merge: on \(.*host KSM (running|off|unknown)\)`).MatchString(info) {
		t.Errorf("docker info does not show memory merge on:\n%s", info)
	}
	name := uniqueName(t)
	ok(t, "run", "-d", "--name", name, "busybox", "sleep", "600")
	defer ok(t, "rm", "-f", name)
	id := strings.TrimSpace(ok(t, "inspect", "--format", "{{.Id}}", name))
	pid := strings.TrimSpace(ok(t, "inspect", "--format", "{{.State.Pid}}", name))
	stat, err := os.ReadFile("/proc/" + pid + "/ksm_stat")
	if err != nil {
		t.Skipf("no ksm_stat (kernel before 6.4?): %v", err)
	}
	log := env.daemon.Log(1 << 20)
	restored := strings.Contains(log, `msg="warm VM claimed" component=compute container=`+id) || strings.Contains(log, `msg="vm restored" component=vmtemplate vm=`+id[:12])
	if !restored {
		t.Skip("this container's VM booted (the template was being built): only restored VMs are marked")
	}
	if !strings.Contains(string(stat), "ksm_merge_any: yes") {
		t.Errorf("a restored VM's VMM under --memory-merge: %s", stat)
	}
}

// TestTemplatesOff: a daemon started with --vm-templates=false boots
// every VM, makes no templates and says so in docker info.
func TestTemplatesOff(t *testing.T) {
	t.Parallel()
	need(t)
	dir := t.TempDir()
	d, err := testenv.StartDaemon(dir, "--vm-templates=false")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(60 * time.Second)
	if err := d.LoadBusybox(dir); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		out, err := dockerCmd(t, d.Host, args...).Output()
		if err != nil {
			t.Fatalf("docker %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	if info := run("info"); !strings.Contains(info, "VM Templates: off") || !strings.Contains(info, "Warm VMs: off") {
		t.Errorf("docker info does not show templates and warm VMs off:\n%s", info)
	}
	if out := run("run", "--rm", "busybox", "echo", "cold"); out != "cold\n" {
		t.Errorf("output %q", out)
	}
	log := d.Log(1 << 20)
	if strings.Contains(log, "vm restored") || strings.Contains(log, "template saved") || !strings.Contains(log, "vm started") {
		t.Errorf("with --vm-templates=false the daemon made or used templates:\n%s", log)
	}
	if es, _ := os.ReadDir(filepath.Join(d.Root, "compute", "templates")); len(es) > 0 {
		t.Errorf("templates directory holds %d entries with templates off", len(es))
	}
	// A booted VM's RAM is anonymous memory: what its guest frees goes
	// back to the host as well.
	freedMemoryReturns(t, d.Host)
}

// vmmPSS is the PSS of a container's VMM in MiB (/proc/PID/smaps_rollup
// of the process docker inspect names).
func vmmPSS(t *testing.T, host, name string) float64 {
	t.Helper()
	out, err := dockerCmd(t, host, "inspect", "--format", "{{.State.Pid}}", name).Output()
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return float64(testenv.SmapsRollup(t, strings.TrimSpace(string(out))).Pss) / 1024
}

// freedMemoryReturns fills 150 MiB of a running container's tmpfs on
// host, checks its VMM grew by most of that, removes the file and waits
// for the VMM to shrink back: the guest's free page reporting gave the
// memory to the host. It returns the container's ID.
func freedMemoryReturns(t *testing.T, host string) string {
	t.Helper()
	docker := func(args ...string) string {
		out, err := dockerCmd(t, host, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	name := uniqueName(t)
	docker("run", "-d", "--name", name, "--shm-size", "200m", "busybox", "sleep", "600")
	defer docker("rm", "-f", name)
	id := strings.TrimSpace(docker("inspect", "--format", "{{.Id}}", name))
	docker("exec", name, "true")
	before := vmmPSS(t, host, name)
	docker("exec", name, "sh", "-c", "head -c 150m /dev/zero > /dev/shm/fill")
	used := vmmPSS(t, host, name)
	if used-before < 120 {
		t.Fatalf("VMM PSS %.0f → %.0f MiB after the guest filled 150 MiB: the fill did not reach host memory", before, used)
	}
	docker("exec", name, "rm", "/dev/shm/fill")
	// The guest reports free pages 2 s after they gather; give it 60 s
	// on a loaded host.
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := vmmPSS(t, host, name)
		if now < before+40 {
			t.Logf("VMM PSS %.0f MiB idle, %.0f MiB filled, %.0f MiB after the guest freed it", before, used, now)
			return id
		}
		if time.Now().After(deadline) {
			t.Fatalf("VMM PSS %.0f MiB idle, %.0f MiB filled, still %.0f MiB 60 s after the guest freed it", before, used, now)
		}
		time.Sleep(time.Second)
	}
}

// TestFreedMemoryReturns: memory a container restored from a template
// used and freed goes back to the host, and the template's own memory
// file keeps every page it had (the freed pages are dropped from the
// VM's private copy, never punched out of the file other VMs map).
func TestFreedMemoryReturns(t *testing.T) {
	t.Parallel()
	need(t)
	dir := filepath.Join(env.daemon.Root, "compute", "templates")
	allocated := func() map[string]int64 {
		m := map[string]int64{}
		files, _ := filepath.Glob(filepath.Join(dir, "*", "memory"))
		for _, f := range files {
			var st syscall.Stat_t
			if syscall.Stat(f, &st) == nil {
				m[f] = st.Blocks
			}
		}
		return m
	}
	// The first container of a shape waits for its template; this one
	// makes sure the next is restored.
	restoredRun(t, "busybox", "true")
	before := allocated()
	id := freedMemoryReturns(t, env.daemon.Host)
	if log := env.daemon.Log(1 << 20); !strings.Contains(log, `msg="vm restored" component=vmtemplate vm=`+id[:12]) &&
		!strings.Contains(log, `msg="warm VM claimed" component=compute container=`+id) {
		t.Errorf("container %s was not restored from a template (for it, or as a warm VM)", id[:12])
	}
	for f, blocks := range allocated() {
		if b, ok := before[f]; ok && blocks < b {
			t.Errorf("template memory %s lost %d KiB while a clone freed memory", f, (b-blocks)/2)
		}
	}
}

// warmRun starts a detached container with args until one of them runs
// on a warm VM it claimed (other tests take warm VMs from the shared
// daemon too), removing the others; it returns that container's name.
func warmRun(t *testing.T, args ...string) string {
	t.Helper()
	for i := 0; i < 8; i++ {
		name := uniqueName(t)
		id := strings.TrimSpace(ok(t, append([]string{"run", "-d", "--name", name}, args...)...))
		if strings.Contains(env.daemon.Log(1<<20), `msg="warm VM claimed" component=compute container=`+id) {
			t.Cleanup(func() { docker(t, "rm", "-f", name) })
			return name
		}
		ok(t, "rm", "-f", name)
		time.Sleep(2 * time.Second) // let the pool refill
	}
	t.Fatalf("no container of 8 ran on a warm VM; daemon log:\n%s", env.daemon.Log(4000))
	return ""
}

// TestWarmVM: a container that claims a warm VM (restored and woken
// before the container existed) is wholly its own: the image's files on
// its root disk, which it can write; its own hostname, MAC and address
// on a user network, where it resolves and reaches a peer by name (DNS
// through the claim's handler); its own random bytes; nothing left of
// the warm VM's NIC rehearsal (no link-local address, no template MAC);
// exec works.
func TestWarmVM(t *testing.T) {
	t.Parallel()
	net := uniqueName(t)
	ok(t, "network", "create", net)
	t.Cleanup(func() { docker(t, "network", "rm", net) })
	a := warmRun(t, "--network", net, "busybox", "sleep", "600")
	b := warmRun(t, "--network", net, "busybox", "sleep", "600")
	script := `head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; hostname; cat /sys/class/net/eth0/address; ip -4 -o addr show eth0 | awk '{print $4}'`
	var rand []string
	for _, name := range []string{a, b} {
		f := strings.Fields(ok(t, "exec", name, "sh", "-c", script))
		if len(f) != 4 {
			t.Fatalf("exec in %s: %q, want 4 fields", name, f)
		}
		rand = append(rand, f[0])
		id := strings.TrimSpace(ok(t, "inspect", "--format", "{{.Id}}", name))
		if f[1] != id[:12] {
			t.Errorf("%s: hostname %q, want %q", name, f[1], id[:12])
		}
		mac := strings.TrimSpace(ok(t, "inspect", "--format", "{{(index .NetworkSettings.Networks \""+net+"\").MacAddress}}", name))
		ip := strings.TrimSpace(ok(t, "inspect", "--format", "{{(index .NetworkSettings.Networks \""+net+"\").IPAddress}}", name))
		if f[2] != mac || !strings.HasPrefix(f[3], ip+"/") {
			t.Errorf("%s: eth0 %s %s, inspect says %s %s", name, f[2], f[3], mac, ip)
		}
		links := ok(t, "exec", name, "ip", "addr")
		if strings.Contains(links, "169.254.") || strings.Contains(links, "02:76:63:68") {
			t.Errorf("%s: the warm VM's rehearsal left its marks:\n%s", name, links)
		}
		if got := ok(t, "exec", name, "sh", "-c", "echo written >/data && cat /data && ls /bin/busybox"); got != "written\n/bin/busybox\n" {
			t.Errorf("%s: root disk: %q", name, got)
		}
		// The warm guest rehearsed its root mount on a 16 MiB disk: the
		// container's root must show its own disk's size (≥ 2 GiB).
		df := strings.Fields(ok(t, "exec", name, "sh", "-c", "df -k / | tail -1"))
		if len(df) < 2 {
			t.Fatalf("%s: df: %q", name, df)
		}
		if kb, _ := strconv.Atoi(df[1]); kb < 1<<20 {
			t.Errorf("%s: root filesystem is %d KiB, not the container's disk: %q", name, kb, df)
		}
	}
	if rand[0] == rand[1] {
		t.Errorf("two warm VMs read the same /dev/urandom bytes %s", rand[0])
	}
	info := ok(t, "info")
	m := regexp.MustCompile(`Warm VMs: [01] of 1 ready, [01] being restored; (\d+) starts took one`).FindStringSubmatch(info)
	if m == nil {
		t.Errorf("docker info has no warm VM line of a pool of 1:\n%s", info)
	} else if taken, _ := strconv.Atoi(m[1]); taken < 2 {
		t.Errorf("docker info counts %d warm starts after two:\n%s", taken, info)
	}
	if out := ok(t, "exec", a, "ping", "-c", "1", "-W", "5", b); !strings.Contains(out, "1 packets received") {
		t.Errorf("ping %s from %s by name:\n%s", b, a, out)
	}
}

// qemuByName returns the PIDs of QEMU processes whose -name is vch-<name>
// for a name with prefix, by name.
func qemuByName(prefix string) map[string]int {
	out := map[string]int{}
	ps, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range ps {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		i := slices.Index(args, "-name")
		if i < 0 || i+1 >= len(args) || !strings.HasPrefix(args[i+1], "vch-"+prefix) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		out[strings.TrimPrefix(args[i+1], "vch-")] = pid
	}
	return out
}

// TestWarmVMDaemonKilled: after a kill -9 of its daemon, a container that
// runs on a claimed warm VM is taken back by the next daemon (still
// running, same VMM, exec works), and the warm VM nobody had claimed yet
// is ended, its directory removed; the new daemon makes its own.
func TestWarmVMDaemonKilled(t *testing.T) {
	r := newRestartDaemon(t)
	name := "warm-" + uniqueName(t)
	id := strings.TrimSpace(r.docker("run", "-d", "--name", name, "busybox", "sleep", "600"))
	var claimed string
	for _, line := range strings.Split(r.d.Log(1<<20), "\n") {
		if strings.Contains(line, `msg="warm VM claimed" component=compute container=`+id) {
			if i := strings.Index(line, " vm="); i >= 0 {
				claimed = strings.Fields(line[i+4:])[0]
			}
		}
	}
	if claimed == "" {
		t.Fatalf("the container did not claim a warm VM; log:\n%s", r.d.Log(6000))
	}
	// Wait for the pool to have its next warm VM.
	var unclaimed string
	deadline := time.Now().Add(60 * time.Second)
	for unclaimed == "" && time.Now().Before(deadline) {
		for n := range qemuByName("w") {
			if n != claimed && strings.Contains(r.d.Log(1<<20), `msg="warm VM ready" component=warmpool vm=`+n) {
				unclaimed = n
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if unclaimed == "" {
		t.Fatalf("no unclaimed warm VM appeared; VMMs %v", qemuByName("w"))
	}
	pid := r.inspect(name, "{{.State.Pid}}")
	unclaimedPid := qemuByName("w")[unclaimed]
	r.d.Kill()
	r.start()
	if got := r.inspect(name, "{{.State.Status}} {{.State.Pid}}"); got != "running "+pid {
		t.Errorf("after the restart: %q, want running %s", got, pid)
	}
	if got := strings.TrimSpace(r.docker("exec", name, "echo", "still here")); got != "still here" {
		t.Errorf("exec after the restart: %q", got)
	}
	if syscall.Kill(unclaimedPid, 0) == nil {
		if _, still := qemuByName("w")[unclaimed]; still {
			t.Errorf("the unclaimed warm VM %s (pid %d) still runs after the restart", unclaimed, unclaimedPid)
		}
	}
	if _, err := os.Stat(filepath.Join(r.d.Root, "compute", "warm", unclaimed)); err == nil {
		t.Errorf("the unclaimed warm VM's directory is still there")
	}
	if _, err := os.Stat(filepath.Join(r.d.Root, "compute", "warm", claimed)); err != nil {
		t.Errorf("the claimed warm VM's directory is gone: %v", err)
	}
	r.docker("rm", "-f", name)
	if _, err := os.Stat(filepath.Join(r.d.Root, "compute", "warm", claimed)); err == nil {
		t.Errorf("the claimed warm VM's directory outlives its container")
	}
}
