package vsphere

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// fillVMs is the most VMs the benchmark starts through the driver at
// once. Past about a hundred, vcsim's update stream falls behind for good
// while VMs are created: it collects the whole filter again, with an XML
// deep copy of every VM in it, for each change of any object, so a fill
// of 1,000 queued tens of minutes of work behind its last update (see
// docs/vsphere.md, "Plan past one machine").
const fillVMs = 100

// BenchmarkVCSim measures the driver against vcsim, in process, for
// docs/vsphere.md ("Plan past one machine"); run it once:
//
//	go test -run '^$' -bench VCSim -benchtime 1x ./internal/hypervisor/vsphere/
//
// It prints figures, not assertions: the create rate (Start with fake
// guests, a few concurrencies, against concurrency 1), the power-on rate
// of plain API power-ons, and the event latency (from a power-off through
// the API to the driver's Done closing) with 10 driver VMs, right after
// a fill of fillVMs through the driver, and with VCH_BENCH_VMS (default
// 1000) VMs in the VCH's folder, all in the driver's one update stream
// (filled through the API, in a simulator of their own, before the
// stream starts), with the API's create and power-on rates for them.
func BenchmarkVCSim(b *testing.B) {
	total := 1000
	if s := os.Getenv("VCH_BENCH_VMS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 20 {
			b.Fatalf("VCH_BENCH_VMS=%q: want a number of at least 20", s)
		}
		total = n
	}
	for b.Loop() {
		e := newSim(b)
		e.setDRS(false)
		d := e.driver(func(c *Config) { c.HostLostGrace = time.Minute })
		if err := d.CreateVCH(b.Context()); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), vcsim in process, TLS, 4 hosts, no DRS\n", runtime.NumCPU(), runtime.GOMAXPROCS(0))

		// Create rate.
		const n = 48
		var base float64
		for _, conc := range []int{1, 4, 8, 16} {
			t0 := time.Now()
			vms := e.startMany(d, fmt.Sprintf("c%d", conc), n, conc)
			rate := n / time.Since(t0).Seconds()
			if conc == 1 {
				base = rate
			}
			fmt.Printf("create (Start with fake guest): concurrency %2d: %6.1f VMs/s (x%.2f of concurrency 1)\n", conc, rate, rate/base)
			killAll(b, vms, 8)
		}

		// Power-on rate: plain API VMs, powered on n at a time.
		for _, conc := range []int{1, 8} {
			refs := e.plainVMs(fmt.Sprintf("p%d", conc), n)
			t0 := time.Now()
			e.each(refs, conc, func(ctx context.Context, v *object.VirtualMachine) error {
				t, err := v.PowerOn(ctx)
				if err == nil {
					err = t.Wait(ctx)
				}
				return err
			})
			rate := n / time.Since(t0).Seconds()
			if conc == 1 {
				base = rate
			}
			fmt.Printf("power-on (API task): concurrency %d: %6.1f VMs/s (x%.2f of concurrency 1)\n", conc, rate, rate/base)
			e.each(refs, 8, func(ctx context.Context, v *object.VirtualMachine) error {
				t, err := v.PowerOff(ctx)
				if err == nil {
					err = t.Wait(ctx)
				}
				if err == nil {
					t, err = v.Destroy(ctx)
				}
				if err == nil {
					err = t.Wait(ctx)
				}
				return err
			})
		}

		// Event latency, few VMs, then right after a fill of fillVMs
		// through the driver (the stream is behind, see below).
		few := e.startMany(d, "few", 10, 4)
		lat := e.offLatency(few)
		fmt.Printf("event latency (API power-off to Done), 10 driver VMs: median %s, max %s\n", lat[len(lat)/2], lat[len(lat)-1])
		baseLat := lat[len(lat)/2]
		fill := min(total, fillVMs)
		t0 := time.Now()
		many := e.startMany(d, "many", fill, 16)
		fmt.Printf("fill: %d driver VMs started, 16 at a time: %s (%.1f VMs/s)\n", fill, time.Since(t0).Round(time.Millisecond), float64(fill)/time.Since(t0).Seconds())
		lat = e.offLatency(many[:10])
		fmt.Printf("event latency (API power-off to Done) right after that fill, %d driver VMs: median %s, max %s (x%.1f of 10 VMs)\n", fill, lat[len(lat)/2], lat[len(lat)-1], float64(lat[len(lat)/2])/float64(baseLat))
		t0 = time.Now()
		killAll(b, many[10:], 16)
		fmt.Printf("kill %d VMs, 16 at a time: %s\n", fill-10, time.Since(t0).Round(time.Millisecond))

		// total VMs: a simulator of its own, filled through the API
		// before the driver's stream exists, then the stream's latency
		// with all of them in its filter.
		f := newSim(b)
		f.setDRS(false)
		fd := f.driver(func(c *Config) { c.HostLostGrace = time.Minute })
		if err := fd.CreateVCH(b.Context()); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		refs := f.plainVMs("bulk", total)
		created := time.Since(t0)
		t0 = time.Now()
		f.each(refs, 8, func(ctx context.Context, v *object.VirtualMachine) error {
			t, err := v.PowerOn(ctx)
			if err == nil {
				err = t.Wait(ctx)
			}
			return err
		})
		on := time.Since(t0)
		fmt.Printf("%d VMs in the VCH's folder through the API, 8 at a time: created in %s (%.1f VMs/s), powered on in %s (%.1f VMs/s)\n",
			total, created.Round(time.Millisecond), float64(total)/created.Seconds(), on.Round(time.Millisecond), float64(total)/on.Seconds())
		probes := f.startMany(fd, "probe", 11, 4)
		first := f.offLatency(probes[:1])
		lat = f.offLatency(probes[1:])
		fmt.Printf("event latency (API power-off to Done), %d VMs in the stream's filter: first (the stream's initial report) %s; then median %s, max %s (x%.1f of 10 VMs)\n",
			total+11, first[0], lat[len(lat)/2], lat[len(lat)-1], float64(lat[len(lat)/2])/float64(baseLat))
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("process (driver, two simulators, fake guests): %d goroutines, %d MiB heap in use\n", runtime.NumGoroutine(), ms.HeapInuse>>20)
	}
}

// offLatency powers each VM off through the API, one after another, and
// returns the times from the call to Done closing, sorted.
func (e *sim) offLatency(vms []started) []time.Duration {
	e.t.Helper()
	ctx := e.t.Context()
	var lat []time.Duration
	for _, s := range vms {
		v := e.vm(vmName(s))
		t0 := time.Now()
		t, err := v.PowerOff(ctx)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			e.t.Fatal(err)
		}
		if !closedWithin(s.vm.Done(), time.Minute) {
			e.t.Fatalf("VM not ended a minute after its power-off; driver's log (tail):\n%s", tail(e.logs.String(), 3000))
		}
		lat = append(lat, time.Since(t0).Round(100*time.Microsecond))
	}
	slices.Sort(lat)
	return lat
}

// vmName is the name of the driver's VM.
func vmName(s started) string { return s.vm.(*vm).name }

// plainVMs creates n powered-off VMs through the API (no driver) in the
// VCH's folder and pool, 8 at a time.
func (e *sim) plainVMs(prefix string, n int) []*object.VirtualMachine {
	e.t.Helper()
	ctx := e.t.Context()
	folder := object.NewFolder(e.c, e.vmFolderRef())
	pool := e.poolRef()
	refs := make([]*object.VirtualMachine, n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			t, err := folder.CreateVM(ctx, types.VirtualMachineConfigSpec{
				Name: fmt.Sprintf("%s-%d", prefix, i), NumCPUs: 1, MemoryMB: 256,
				GuestId: string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
				Files:   &types.VirtualMachineFileInfo{VmPathName: "[" + simDS + "]"},
			}, pool, nil)
			var info *types.TaskInfo
			if err == nil {
				info, err = t.WaitForResult(ctx)
			}
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			refs[i] = object.NewVirtualMachine(e.c, info.Result.(types.ManagedObjectReference))
		})
	}
	wg.Wait()
	if firstErr != nil {
		e.t.Fatal(firstErr)
	}
	return refs
}

// each runs f on every VM, conc at a time.
func (e *sim) each(vms []*object.VirtualMachine, conc int, f func(context.Context, *object.VirtualMachine) error) {
	e.t.Helper()
	ctx := e.t.Context()
	sem := make(chan struct{}, conc)
	errs := make(chan error, len(vms))
	var wg sync.WaitGroup
	for _, v := range vms {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := f(ctx, v); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
}

// vmFolderRef and poolRef are the VCH's folder and pool.
func (e *sim) vmFolderRef() types.ManagedObjectReference {
	e.t.Helper()
	ref, err := object.NewSearchIndex(e.c).FindByInventoryPath(e.t.Context(), "/"+simDC+"/vm/"+testVCH)
	if err != nil || ref == nil {
		e.t.Fatalf("VCH folder: %v", err)
	}
	return ref.Reference()
}

func (e *sim) poolRef() *object.ResourcePool {
	e.t.Helper()
	ref, err := object.NewSearchIndex(e.c).FindByInventoryPath(e.t.Context(), simCluster+"/Resources/"+testVCH)
	if err != nil || ref == nil {
		e.t.Fatalf("VCH pool: %v", err)
	}
	return object.NewResourcePool(e.c, ref.Reference())
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
