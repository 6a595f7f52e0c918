package client_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/portlayer/events"
	"github.com/vchproject/vch/internal/portlayer/volume"
)

// TestVolumesAndEventsOverAPI: volumes and the event log in process and
// through the client and a real server (validated against the
// document), the same cases. (Networks
// need the VCH's namespace; the e2e suite covers them.)
func TestVolumesAndEventsOverAPI(t *testing.T) {
	t.Run("InProcess", func(t *testing.T) {
		vols, evlog := newVolumes(t)
		volumesContract(t, vols, evlog)
	})
	t.Run("OverAPI", func(t *testing.T) {
		vols, evlog := newVolumes(t)
		c, err := client.New("unix://"+serve(t, api.Backend{Compute: newCompute(t), Volumes: vols, Events: evlog}), nil)
		if err != nil {
			t.Fatal(err)
		}
		volumesContract(t, c, c)
	})
}

// newVolumes is a volume store publishing into a new event log.
func newVolumes(t *testing.T) (*volume.Store, *events.Log) {
	t.Helper()
	evlog := events.New(100)
	vols, err := volume.New(volume.Config{Root: t.TempDir(), Events: evlog}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return vols, evlog
}

// volumesContract is the volume store's and event log's contract, run in
// process and through the API with the same results.
func volumesContract(t *testing.T, c portlayer.Volumes, ev portlayer.Events) {
	ctx := t.Context()
	start := time.Now().Add(-time.Second)
	_, live := ev.Subscribe(ctx, time.Time{}, true)
	v, err := c.CreateVolume(ctx, portlayer.VolumeSpec{Name: "data", Labels: map[string]string{"k": "v"}, Options: map[string]string{"size": "64m"}})
	if err != nil || v.Name != "data" || v.SizeBytes != 64<<20 || v.Labels["k"] != "v" {
		t.Fatalf("CreateVolume = %+v, %v", v, err)
	}
	if _, err := c.CreateVolume(ctx, portlayer.VolumeSpec{Name: "other", Options: map[string]string{"colour": "red"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("CreateVolume with an unknown option: %v", err)
	}
	if got, err := c.InspectVolume(ctx, "data"); err != nil || got.Name != "data" {
		t.Errorf("InspectVolume = %+v, %v", got, err)
	}
	if all, err := c.ListVolumes(ctx); err != nil || len(all) != 1 {
		t.Errorf("ListVolumes = %+v, %v", all, err)
	}
	if err := c.RemoveVolume(ctx, "data", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InspectVolume(ctx, "data"); !errdefs.IsNotFound(err) {
		t.Errorf("InspectVolume after RemoveVolume: %v", err)
	}
	// The live subscription saw the create and the destroy, in order.
	var actions []string
	for len(actions) < 2 {
		select {
		case e, ok := <-live:
			if !ok {
				t.Fatalf("live events closed after %v", actions)
			}
			if e.Type == "volume" && e.ID == "data" {
				actions = append(actions, e.Action)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("live events: %v, want create and destroy", actions)
		}
	}
	if actions[0] != "create" || actions[1] != "destroy" {
		t.Errorf("live volume events %v", actions)
	}
	logged, _ := ev.Subscribe(ctx, start, false)
	if len(logged) < 2 {
		t.Errorf("logged events since the start: %+v", logged)
	}
}
