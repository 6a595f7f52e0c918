package compute

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"

	bolt "go.etcd.io/bbolt"

	"github.com/vchproject/vch/internal/portlayer"
)

// recordSchema is the version of the persisted container record; bump it
// with a migration when the shape of portlayer.Container changes.
const recordSchema = 1

var (
	bucketContainers = []byte("containers")
	bucketMeta       = []byte("meta")
	bucketRuns       = []byte("runs")
)

// runState is what compute keeps about a container's current run beyond
// the portlayer record, so that a restarted daemon can take the run back:
// the run's ID (the output log tags each line with it) and the VM's NICs.
type runState struct {
	// RunID is new for every start: 16 hex digits.
	RunID string `json:"run_id"`
	// NICs are the VM's NICs, attached and spare, in the VM's order.
	NICs []nicRecord `json:"nics,omitempty"`
	// VMName and VMDir find the run's VM (hypervisor.Spec Name and
	// RuntimeDir) when it is not the container's own (a warm VM, package
	// warmpool); empty for a VM started for the container.
	VMName string `json:"vm_name,omitempty"`
	VMDir  string `json:"vm_dir,omitempty"`
}

// nicRecord is a persisted nicSlot.
type nicRecord struct {
	Tap     string `json:"tap"`
	BootMAC string `json:"boot_mac"`
	Network string `json:"network,omitempty"`
	Name    string `json:"name,omitempty"`
}

// records persists container records in bbolt, keyed by container ID. Every
// change is written (and fsynced by bbolt) before it is acted on.
type records struct {
	db *bolt.DB
}

func openRecords(path string) (*records, error) {
	// bbolt locks the file; a second daemon on the same root must fail
	// fast rather than wait for the lock.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, portlayer.Errorf(portlayer.ClassFailedPrecondition, "%s is in use by another vch daemon", path)
	}
	if err != nil {
		return nil, fmt.Errorf("compute: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketContainers); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketRuns); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put([]byte("schema"), []byte(fmt.Sprint(recordSchema)))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("compute: init %s: %w", path, err)
	}
	return &records{db: db}, nil
}

func (r *records) put(c portlayer.Container) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("compute: encode %s: %w", c.ID, err)
	}
	err = r.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContainers).Put([]byte(c.ID), b)
	})
	if err != nil {
		return fmt.Errorf("compute: persist %s: %w", c.ID, err)
	}
	return nil
}

func (r *records) delete(id string) error {
	err := r.db.Update(func(tx *bolt.Tx) error {
		_ = tx.Bucket(bucketRuns).Delete([]byte(id))
		return tx.Bucket(bucketContainers).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("compute: delete record %s: %w", id, err)
	}
	return nil
}

func (r *records) all() ([]portlayer.Container, error) {
	var out []portlayer.Container
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			var c portlayer.Container
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("compute: load records: %w", err)
	}
	return out, nil
}

// putRun persists container id's run state.
func (r *records) putRun(id string, rs runState) error {
	b, err := json.Marshal(rs)
	if err != nil {
		return fmt.Errorf("compute: encode run of %s: %w", id, err)
	}
	err = r.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRuns).Put([]byte(id), b)
	})
	if err != nil {
		return fmt.Errorf("compute: persist run of %s: %w", id, err)
	}
	return nil
}

// run returns container id's run state; the zero value if none is kept.
func (r *records) run(id string) (runState, error) {
	var rs runState
	err := r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns).Get([]byte(id))
		if b == nil {
			return nil
		}
		return json.Unmarshal(b, &rs)
	})
	if err != nil {
		return runState{}, fmt.Errorf("compute: load run of %s: %w", id, err)
	}
	return rs, nil
}

func (r *records) close() error { return r.db.Close() }
