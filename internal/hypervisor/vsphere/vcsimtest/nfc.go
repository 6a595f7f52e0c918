package vcsimtest

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	_ "unsafe" // go:linkname

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"
)

// keepNFCUploads makes the simulator keep what an NFC upload (an OVF
// import's disk, as the vsphere driver imports image and volume disks)
// sends, as an ESX host does: the simulator itself only hashes it. The
// upload (a streamOptimized VMDK) is converted with qemu-img into the
// flat extent of the disk the import's VM has on the simulated
// datastore, so the disk the driver then moves into place holds the
// bytes it uploaded and a QEMU stand-in reads them. The simulator's own
// handler then serves the request, for its lease's bookkeeping.
//
// Registered on m's ServeMux before the simulator's "/nfc/" pattern: the
// method patterns are the more specific.
func keepNFCUploads(m *simulator.Model) {
	if m.Service.ServeMux == nil {
		m.Service.ServeMux = http.NewServeMux()
	}
	h := func(w http.ResponseWriter, r *http.Request) {
		body, err := os.CreateTemp("", "vcsim-nfc-")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer os.Remove(body.Name())
		defer body.Close()
		if _, err := io.Copy(body, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := keepUpload(m, r.URL.Path, body.Name()); err != nil {
			log.Printf("vcsimtest: keep NFC upload %s: %v", r.URL.Path, err)
			http.Error(w, "vcsimtest: keep NFC upload: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		r.Body = body
		simulator.ServeNFC(w, r)
	}
	m.Service.ServeMux.HandleFunc("PUT /nfc/", h)
	m.Service.ServeMux.HandleFunc("POST /nfc/", h)
}

// nfcLeases is the simulator's own table of NFC leases by reference
// (they live in their session's registry, out of a test's reach; the
// NFC handler finds them here, as keepUpload must).
//
//go:linkname nfcLeases github.com/vmware/govmomi/simulator.nfcLease
var nfcLeases sync.Map

// keepUpload writes the VMDK host file upload into the flat extent of the
// disk that the NFC URL path "/nfc/LEASE/FILE" names: FILE is the base
// name of a disk of the lease's VM.
func keepUpload(m *simulator.Model, urlPath, upload string) error {
	parts := strings.Split(strings.Trim(urlPath, "/"), "/")
	if len(parts) != 3 {
		return fmt.Errorf("path %q: want /nfc/LEASE/FILE", urlPath)
	}
	reg := m.Service.Context.Map
	v, _ := nfcLeases.Load(types.ManagedObjectReference{Type: "HttpNfcLease", Value: parts[1]})
	lease, ok := v.(*simulator.HttpNfcLease)
	if !ok || lease.Info == nil {
		return fmt.Errorf("no NFC lease %s", parts[1])
	}
	vm, ok := reg.Get(lease.Info.Entity).(*simulator.VirtualMachine)
	if !ok {
		return fmt.Errorf("lease %s: no VM %v", parts[1], lease.Info.Entity)
	}
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		fb := b.GetVirtualDeviceFileBackingInfo()
		var p object.DatastorePath
		if !p.FromString(fb.FileName) || path.Base(p.Path) != parts[2] || fb.Datastore == nil {
			continue
		}
		ds, ok := reg.Get(*fb.Datastore).(*simulator.Datastore)
		if !ok {
			return fmt.Errorf("disk %s: no datastore %v", fb.FileName, *fb.Datastore)
		}
		file := filepath.Join(ds.Summary.Url, p.Path)
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		desc, err := vmdk.ParseDescriptor(f)
		f.Close()
		if err != nil || len(desc.Extent) != 1 {
			return fmt.Errorf("disk %s: descriptor: %v (%d extents)", file, err, len(desc.Extent))
		}
		flat := filepath.Join(filepath.Dir(file), desc.Extent[0].Info)
		if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "vmdk", "-O", "raw", upload, flat).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img convert into %s: %s: %w", flat, out, err)
		}
		return nil
	}
	return fmt.Errorf("lease %s: its VM has no disk %s", parts[1], parts[2])
}
