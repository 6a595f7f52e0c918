package computetest

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// ArchiveTarget is the port layer under the archive contract.
type ArchiveTarget interface {
	portlayer.Compute
	portlayer.Pauser
	portlayer.Archives
}

// RunArchives runs the archive contract (portlayer.Archives) on a fresh
// target from newTarget for each case; image is an image ID its
// containers can use.
//
// Only the refusals made before the guest is asked are covered: the fake
// hypervisor's guest (package hvfake) serves no archive requests (it
// refuses the stat request and the archive channels), so the contents of
// a container's filesystem (a tar put, stat and got back, export,
// changes) cannot be checked without a real guest.
func RunArchives(t *testing.T, image string, newTarget func(t *testing.T) ArchiveTarget) {
	cases := []struct {
		name string
		fn   func(t *testing.T, c ArchiveTarget, image string)
	}{
		{"Missing", archivesMissing},
		{"Paused", archivesPaused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newTarget(t), image) })
	}
}

// oneFileTar is a tar holding the file name with content.
func oneFileTar(t *testing.T, name, content string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(tw, content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// eachArchiveOp runs every archive operation on container ref and hands
// each one's error to check, closing any stream that came back.
func eachArchiveOp(t *testing.T, c portlayer.Archives, ref string, check func(op string, err error)) {
	ctx := t.Context()
	closeIf := func(rc io.ReadCloser) {
		if rc != nil {
			_ = rc.Close()
		}
	}
	_, err := c.StatPath(ctx, ref, "/etc/hostname")
	check("StatPath", err)
	_, rc, err := c.GetArchive(ctx, ref, "/etc")
	closeIf(rc)
	check("GetArchive", err)
	err = c.PutArchive(ctx, ref, "/tmp", bytes.NewReader(oneFileTar(t, "hello.txt", "hello\n")), portlayer.PutArchiveOptions{})
	check("PutArchive", err)
	rc, err = c.Export(ctx, ref)
	closeIf(rc)
	check("Export", err)
	_, err = c.Changes(ctx, ref)
	check("Changes", err)
	_, rc, err = c.ChangesLayer(ctx, ref)
	closeIf(rc)
	check("ChangesLayer", err)
}

// archivesMissing: every archive operation on an unknown container is
// NotFound with the reference asked for.
func archivesMissing(t *testing.T, c ArchiveTarget, _ string) {
	eachArchiveOp(t, c, "nosuch", func(op string, err error) {
		wantError(t, op+"(nosuch)", err, errdefs.IsNotFound, portlayer.KindContainer, "nosuch", "")
	})
}

// archivesPaused: a paused container's filesystem is refused to every
// archive operation (op "copy", reason paused), and it stays paused.
func archivesPaused(t *testing.T, c ArchiveTarget, image string) {
	ctx := t.Context()
	a := startSleeper(t, c, image, "ap")
	if err := c.Pause(ctx, "ap"); err != nil {
		if errdefs.IsNotImplemented(err) {
			t.Skip("this hypervisor cannot pause")
		}
		t.Fatal(err)
	}
	eachArchiveOp(t, c, "ap", func(op string, err error) {
		wantError(t, op+" of a paused container", err, errdefs.IsConflict, portlayer.KindContainer, a.ID, portlayer.ReasonPaused)
		wantOp(t, op+" of a paused container", err, "copy")
	})
	if got, err := c.Inspect(ctx, "ap"); err != nil || got.State.Status != portlayer.StatusPaused {
		t.Errorf("after the refused operations: %+v, %v; want paused", got.State, err)
	}
	if err := c.Unpause(ctx, "ap"); err != nil {
		t.Fatal(err)
	}
}
