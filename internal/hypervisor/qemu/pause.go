package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/digitalocean/go-qemu/qmp"
)

// qmpTimeout bounds connecting to the VM's QMP monitor.
const qmpTimeout = 5 * time.Second

// monitor reaches a VM's QMP socket.
type monitor struct{ qmpPath string }

// run sends one QMP command (QEMU QMP reference: "stop", "cont") on a
// fresh monitor connection and returns its reply.
func (v *monitor) run(ctx context.Context, command string) error {
	mon, err := qmp.NewSocketMonitor("unix", v.qmpPath, qmpTimeout)
	if err != nil {
		return fmt.Errorf("qemu: QMP %s: %w: %w", command, err, errdefs.ErrUnavailable)
	}
	if err := mon.Connect(); err != nil {
		return fmt.Errorf("qemu: QMP connect: %w: %w", err, errdefs.ErrUnavailable)
	}
	defer mon.Disconnect()
	cmd, _ := json.Marshal(qmp.Command{Execute: command})
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		_, err := mon.Run(cmd)
		done <- result{err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return fmt.Errorf("qemu: QMP %s: %w", command, r.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qemu: QMP %s: %w: %w", command, ctx.Err(), errdefs.ErrUnavailable)
	}
}

// Pause implements hypervisor.Pauser: QMP "stop" freezes every vCPU.
func (v *monitor) Pause(ctx context.Context) error { return v.run(ctx, "stop") }

// Resume implements hypervisor.Pauser: QMP "cont".
func (v *monitor) Resume(ctx context.Context) error { return v.run(ctx, "cont") }
