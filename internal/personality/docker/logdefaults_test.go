package docker_test

import (
	"encoding/json"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/system"

	"github.com/vchproject/vch/internal/personality/docker"
	"github.com/vchproject/vch/internal/personality/docker/dockertest"
)

// TestLogDefaults: the VCH's default logging driver and options
// (--log-driver, --log-opt) as dockerd applies its own: a container that
// names no driver gets the default one, a container of the default
// driver each default option it does not set, one of another driver
// none of them; docker info shows the driver; with the default "none",
// docker logs is dockerd's 501.
func TestLogDefaults(t *testing.T) {
	f := dockertest.New()
	cfg := docker.Config{Version: "0.0.0-test", LogDriver: "none", LogOpts: map[string]string{"max-size": "1m"}}
	if err := cfg.CheckLogDefaults(); err != nil {
		t.Fatal(err)
	}
	h := docker.New(cfg, docker.Backend{Compute: f, Interaction: f, Images: f.Images(), System: f}, nil).Handler()

	var info system.Info
	if rec := do(t, h, "GET", "/info", ""); rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &info) != nil || info.LoggingDriver != "none" {
		t.Fatalf("info: %d LoggingDriver %q", rec.Code, info.LoggingDriver)
	}
	for _, tt := range []struct {
		name, body string
		want       container.LogConfig
	}{
		{"default", `{"Image":"busybox","Cmd":["true"]}`, container.LogConfig{Type: "none", Config: map[string]string{"max-size": "1m"}}},
		{"own option kept", `{"Image":"busybox","Cmd":["true"],"HostConfig":{"LogConfig":{"Type":"none","Config":{"max-size":"5m","tag":"x"}}}}`,
			container.LogConfig{Type: "none", Config: map[string]string{"max-size": "5m", "tag": "x"}}},
		{"other driver", `{"Image":"busybox","Cmd":["true"],"HostConfig":{"LogConfig":{"Type":"json-file","Config":{"max-file":"2"}}}}`,
			container.LogConfig{Type: "json-file", Config: map[string]string{"max-file": "2"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, h, "POST", "/containers/create", tt.body)
			var created container.CreateResponse
			if rec.Code != 201 || json.Unmarshal(rec.Body.Bytes(), &created) != nil {
				t.Fatalf("create: %d %s", rec.Code, rec.Body)
			}
			var insp container.InspectResponse
			if rec := do(t, h, "GET", "/containers/"+created.ID+"/json", ""); json.Unmarshal(rec.Body.Bytes(), &insp) != nil || insp.HostConfig == nil {
				t.Fatalf("inspect: %d %s", rec.Code, rec.Body)
			}
			got := insp.HostConfig.LogConfig
			if got.Type != tt.want.Type || len(got.Config) != len(tt.want.Config) {
				t.Fatalf("LogConfig %+v, want %+v", got, tt.want)
			}
			for k, v := range tt.want.Config {
				if got.Config[k] != v {
					t.Errorf("LogConfig %+v, want %+v", got, tt.want)
				}
			}
			rec = do(t, h, "GET", "/containers/"+created.ID+"/logs?stdout=1", "")
			if none := tt.want.Type == "none"; none != (rec.Code == 501) {
				t.Errorf("logs: %d %s", rec.Code, rec.Body)
			} else if none && message(t, rec) != "configured logging driver does not support reading" {
				t.Errorf("logs: %q", message(t, rec))
			}
		})
	}

	for _, bad := range []docker.Config{
		{LogDriver: "syslog"},
		{LogOpts: map[string]string{"bogus": "1"}},
		{LogDriver: "local", LogOpts: map[string]string{"max-size": "huge"}},
	} {
		if err := bad.CheckLogDefaults(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("CheckLogDefaults(%s %v) = %v, want InvalidArgument", bad.LogDriver, bad.LogOpts, err)
		}
	}
}
