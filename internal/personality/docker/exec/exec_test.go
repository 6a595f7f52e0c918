package exec

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/portlayer"
)

// stubExecs records the spec of CreateExec; the other methods are unused.
type stubExecs struct {
	portlayer.Execs
	created []portlayer.ExecSpec
}

func (s *stubExecs) CreateExec(_ context.Context, _ string, spec portlayer.ExecSpec) (string, error) {
	s.created = append(s.created, spec)
	return "e1", nil
}

type stubInspector struct{}

func (stubInspector) Inspect(_ context.Context, id string) (portlayer.Container, error) {
	return portlayer.Container{ID: id, State: portlayer.State{Status: portlayer.StatusRunning}}, nil
}

// TestCreateWorkingDir checks that exec refuses a relative working
// directory (the guest would resolve it outside the container's root) and
// passes an absolute one on cleaned.
func TestCreateWorkingDir(t *testing.T) {
	tests := []struct {
		name, dir string
		code      int
		want      string // the dir the port layer gets, or the error message
	}{
		{name: "none", dir: "", code: 201, want: ""},
		{name: "absolute", dir: "/tmp", code: 201, want: "/tmp"},
		{name: "cleaned", dir: "/tmp/../etc/", code: 201, want: "/etc"},
		{name: "above root", dir: "/../..", code: 201, want: "/"},
		{name: "relative", dir: "tmp", code: 400, want: "the working directory 'tmp' is invalid, it needs to be an absolute path"},
		{name: "dotdot", dir: "../..", code: 400, want: "the working directory '../..' is invalid, it needs to be an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execs := &stubExecs{}
			rt := NewRouter(execs, stubInspector{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			body, _ := json.Marshal(map[string]any{"Cmd": []string{"pwd"}, "WorkingDir": tt.dir})
			req := httptest.NewRequest("POST", "/containers/c1/exec", strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			err := rt.postCreate(rec, req, map[string]string{"name": "c1"})
			if tt.code != 201 {
				if err == nil || !errdefs.IsInvalidArgument(err) || err.Error() != tt.want {
					t.Fatalf("err %v, want InvalidArgument %q", err, tt.want)
				}
				if len(execs.created) != 0 {
					t.Fatalf("port layer got %+v", execs.created)
				}
				return
			}
			if err != nil || rec.Code != 201 {
				t.Fatalf("code %d, err %v", rec.Code, err)
			}
			if len(execs.created) != 1 || execs.created[0].WorkingDir != tt.want {
				t.Fatalf("port layer got %+v, want dir %q", execs.created, tt.want)
			}
		})
	}
}

// TestStartErr: an exec the guest could not start (the port layer's
// StartFailed) gets the OCI runtime's "exec failed" text around the
// guest's; another InvalidArgument keeps its own.
func TestStartErr(t *testing.T) {
	const guest = `exec: "nosuch": executable file not found in $PATH`
	got := startErr("e1", portlayer.StartFailed(portlayer.KindExec, "e1", guest, 127))
	if want := "OCI runtime exec failed: exec failed: unable to start container process: " + guest + ": unknown"; got.Error() != want || !errdefs.IsInvalidArgument(got) {
		t.Errorf("startErr = %q, want %q", got, want)
	}
	other := portlayer.Errorf(portlayer.ClassInvalidArgument, "bad size")
	if got := startErr("e1", other); strings.Contains(got.Error(), "OCI runtime") {
		t.Errorf("startErr(%v) = %q", other, got)
	}
}
