// Package vcsimtest starts govmomi's vCenter simulator for tests: a VPX
// model with one cluster (DC0_C0) of 4 hosts in datacenter DC0, served
// over TLS with credentials of the test's own so that a wrong password
// fails, and keeping the disks NFC uploads send (keepNFCUploads). It is
// for tests only.
package vcsimtest

import (
	"crypto/tls"
	"net/url"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

// Sim is a running simulator and a session on it.
type Sim struct {
	Model  *simulator.Model
	Server *simulator.Server
	// Client is logged in; Finder is set to the datacenter.
	Client     *vim25.Client
	Datacenter *object.Datacenter
	Finder     *find.Finder
}

// Start creates the model (mutate may change it first: more datastores,
// portgroups, VMs), serves it with the credentials user and pass until t
// ends, and logs in. It fails t on any error.
func Start(t testing.TB, user, pass string, mutate ...func(*simulator.Model)) *Sim {
	t.Helper()
	m := simulator.VPX()
	m.Host = 0
	m.ClusterHost = 4
	for _, f := range mutate {
		f(m)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	keepNFCUploads(m)
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{User: url.UserPassword(user, pass)}
	s := m.Service.NewServer()
	t.Cleanup(func() { s.Close(); m.Remove() })
	ctx := t.Context()
	gc, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	f := find.NewFinder(gc.Client, false)
	dc, err := f.Datacenter(ctx, "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	return &Sim{Model: m, Server: s, Client: gc.Client, Datacenter: dc, Finder: f}
}
