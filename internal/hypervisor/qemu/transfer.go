package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor"
)

// The transfer disk's QMP node names: the raw node under the device, and
// the file nodes its image is, the first one argv's (over the runtime
// directory's placeholder), each later one LoadTransfer's with a suffix.
const (
	transferNode = "xfer"
	transferFile = "xfer-img"
)

// transferSlot is one VM's transfer disk, shared by the copies of its
// monitor.
type transferSlot struct {
	// placeholder is the empty image (RuntimeDir/transfer.img).
	placeholder string
	mu          sync.Mutex // one image change at a time
}

var (
	_ hypervisor.Transferrer = (*vm)(nil)
	_ hypervisor.Transferrer = (*adopted)(nil)
)

// transferArgs are argv's transfer disk: a read-only raw node over the
// placeholder's file node, on a virtio-blk device with serial
// hypervisor.TransferDiskSerial, after every other device.
func transferArgs(placeholder string) []string {
	return []string{
		"-blockdev", fmt.Sprintf("driver=file,node-name=%s,filename=%s,read-only=on", transferFile, escape(placeholder)),
		"-blockdev", fmt.Sprintf("driver=raw,node-name=%s,file=%s,read-only=on", transferNode, transferFile),
		"-device", fmt.Sprintf("virtio-blk-device,drive=%s,serial=%s", transferNode, hypervisor.TransferDiskSerial),
	}
}

// LoadTransfer implements hypervisor.Transferrer: QMP blockdev-add of the
// file as a new read-only file node, blockdev-reopen of the raw node
// "xfer" with it as its file child, and blockdev-del of every other file
// node the transfer disk had (found with query-named-block-nodes, so a VM
// adopted by a new daemon sheds its earlier images too). A VM whose QEMU
// has no node "xfer" has no transfer disk (FailedPrecondition).
func (v *monitor) LoadTransfer(ctx context.Context, path string) error {
	if v.transfer == nil {
		return fmt.Errorf("qemu: no transfer disk: %w", errdefs.ErrFailedPrecondition)
	}
	v.transfer.mu.Lock()
	defer v.transfer.mu.Unlock()
	if path == "" {
		path = v.transfer.placeholder
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("qemu: transfer image: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if st.Size() > hypervisor.TransferDiskBytes {
		return fmt.Errorf("qemu: transfer image of %d bytes, more than %d: %w", st.Size(), hypervisor.TransferDiskBytes, errdefs.ErrInvalidArgument)
	}
	if st.Size() != hypervisor.TransferDiskBytes {
		if err := os.Truncate(path, hypervisor.TransferDiskBytes); err != nil {
			return fmt.Errorf("qemu: transfer image: %w", err)
		}
	}
	nodes, err := v.namedNodes(ctx)
	if err != nil {
		return err
	}
	if !nodes[transferNode] {
		return fmt.Errorf("qemu: the VM has no transfer disk (started before drivers had one): %w", errdefs.ErrFailedPrecondition)
	}
	node := transferFile + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	add := map[string]any{"driver": "file", "node-name": node, "filename": path, "read-only": true}
	if _, err := v.execute(ctx, "blockdev-add", add); err != nil {
		return fmt.Errorf("qemu: transfer image: %w", err)
	}
	reopen := map[string]any{"options": []map[string]any{{"driver": "raw", "node-name": transferNode, "file": node, "read-only": true}}}
	if _, err := v.execute(ctx, "blockdev-reopen", reopen); err != nil {
		_, _ = v.execute(ctx, "blockdev-del", map[string]string{"node-name": node})
		return fmt.Errorf("qemu: transfer image: %w", err)
	}
	for name := range nodes {
		if name == transferFile || strings.HasPrefix(name, transferFile+"-") {
			if _, err := v.execute(ctx, "blockdev-del", map[string]string{"node-name": name}); err != nil {
				return fmt.Errorf("qemu: transfer image: drop the one before: %w", err)
			}
		}
	}
	return nil
}

// namedNodes lists the VM's block node names (QMP
// query-named-block-nodes, flat).
func (v *monitor) namedNodes(ctx context.Context) (map[string]bool, error) {
	raw, err := v.execute(ctx, "query-named-block-nodes", map[string]bool{"flat": true})
	if err != nil {
		return nil, err
	}
	var list []struct {
		NodeName string `json:"node-name"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("qemu: query-named-block-nodes: %w", err)
	}
	names := make(map[string]bool, len(list))
	for _, n := range list {
		names[n.NodeName] = true
	}
	return names, nil
}
