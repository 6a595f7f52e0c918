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
type monitor struct {
	qmpPath string
	// transfer is the VM's transfer disk (transfer.go).
	transfer *transferSlot
}

// run sends one QMP command (QEMU QMP reference: "stop", "cont") on a
// fresh monitor connection and returns its reply.
func (v *monitor) run(ctx context.Context, command string) error {
	_, err := v.query(ctx, command)
	return err
}

// query is run returning the reply's "return" value (raw JSON).
func (v *monitor) query(ctx context.Context, command string) (json.RawMessage, error) {
	return v.execute(ctx, command, nil)
}

// execute sends one QMP command with its arguments (nil for none; QEMU
// QMP reference) and returns the reply's "return" value (raw JSON).
func (v *monitor) execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	mon, err := qmp.NewSocketMonitor("unix", v.qmpPath, qmpTimeout)
	if err != nil {
		return nil, fmt.Errorf("qemu: QMP %s: %w: %w", command, err, errdefs.ErrUnavailable)
	}
	if err := mon.Connect(); err != nil {
		return nil, fmt.Errorf("qemu: QMP connect: %w: %w", err, errdefs.ErrUnavailable)
	}
	defer mon.Disconnect()
	cmd, err := json.Marshal(qmp.Command{Execute: command, Args: args})
	if err != nil {
		return nil, fmt.Errorf("qemu: QMP %s: %w", command, err)
	}
	type result struct {
		raw []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		raw, err := mon.Run(cmd)
		done <- result{raw, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("qemu: QMP %s: %w", command, r.err)
		}
		var reply struct {
			Return json.RawMessage `json:"return"`
		}
		_ = json.Unmarshal(r.raw, &reply)
		return reply.Return, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("qemu: QMP %s: %w: %w", command, ctx.Err(), errdefs.ErrUnavailable)
	}
}

// paused reports whether the VM is stopped by a QMP "stop" (QMP
// query-status: status "paused").
func (v *monitor) paused(ctx context.Context) (bool, error) {
	st, err := v.runState(ctx)
	return st == "paused", err
}

// DiskStalled implements hypervisor.DiskStaller: QEMU stops a VM whose
// disk write failed with ENOSPC (the drives' werror=enospc default) in
// run state "io-error" (QMP query-status).
func (v *monitor) DiskStalled(ctx context.Context) (bool, error) {
	st, err := v.runState(ctx)
	return st == "io-error", err
}

// runState is QMP query-status's status: "running", "paused",
// "io-error", …
func (v *monitor) runState(ctx context.Context) (string, error) {
	raw, err := v.query(ctx, "query-status")
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("qemu: QMP query-status: %w", err)
	}
	return st.Status, nil
}

// Pause implements hypervisor.Pauser: QMP "stop" freezes every vCPU.
func (v *monitor) Pause(ctx context.Context) error { return v.run(ctx, "stop") }

// Resume implements hypervisor.Pauser: QMP "cont".
func (v *monitor) Resume(ctx context.Context) error { return v.run(ctx, "cont") }
