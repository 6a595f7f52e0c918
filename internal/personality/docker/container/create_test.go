package container

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/moby/moby/api/types/container"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

func TestMergeConfigEntrypointCmd(t *testing.T) {
	img := ocispec.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"img-cmd", "x"}}
	noEntry := ocispec.ImageConfig{Cmd: []string{"sh"}}
	tests := []struct {
		name       string
		img        ocispec.ImageConfig
		entrypoint []string
		cmd        []string
		wantArgs   []string
		wantErr    string
	}{
		{name: "image defaults", img: img, wantArgs: []string{"/entry", "img-cmd", "x"}},
		{name: "user cmd keeps image entrypoint", img: img, cmd: []string{"hi"}, wantArgs: []string{"/entry", "hi"}},
		{name: "user entrypoint drops image cmd", img: img, entrypoint: []string{"/bin/echo"}, wantArgs: []string{"/bin/echo"}},
		{name: "user entrypoint and cmd", img: img, entrypoint: []string{"/bin/echo"}, cmd: []string{"a", "b"}, wantArgs: []string{"/bin/echo", "a", "b"}},
		{name: "empty entrypoint resets and uses image cmd", img: img, entrypoint: []string{""}, wantErr: "no command specified"},
		{name: "empty entrypoint with cmd", img: img, entrypoint: []string{""}, cmd: []string{"ls", "-l"}, wantArgs: []string{"ls", "-l"}},
		{name: "non-nil empty entrypoint keeps it empty and takes image cmd", img: img, entrypoint: []string{}, wantArgs: []string{"img-cmd", "x"}},
		{name: "image without entrypoint", img: noEntry, wantArgs: []string{"sh"}},
		{name: "image without entrypoint, user cmd", img: noEntry, cmd: []string{"echo", "hi"}, wantArgs: []string{"echo", "hi"}},
		{name: "nothing at all", img: ocispec.ImageConfig{}, wantErr: "no command specified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, args, err := MergeConfig(container.Config{Entrypoint: tt.entrypoint, Cmd: tt.cmd}, tt.img)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(args, tt.wantArgs) {
				t.Errorf("args = %q, want %q", args, tt.wantArgs)
			}
		})
	}
}

func TestMergeConfigDefaults(t *testing.T) {
	img := ocispec.ImageConfig{User: "nobody", WorkingDir: "/srv", StopSignal: "SIGQUIT", Cmd: []string{"sh"},
		Env: []string{"PATH=/bin", "A=img", "B=img"}, Labels: map[string]string{"l1": "img", "l2": "img"}}
	tests := []struct {
		name string
		user container.Config
		want func(c container.Config) bool
	}{
		{"user/workdir/stopsignal from image", container.Config{}, func(c container.Config) bool {
			return c.User == "nobody" && c.WorkingDir == "/srv" && c.StopSignal == "SIGQUIT"
		}},
		{"user/workdir/stopsignal from config", container.Config{User: "1000:1000", WorkingDir: "/w", StopSignal: "9"}, func(c container.Config) bool {
			return c.User == "1000:1000" && c.WorkingDir == "/w" && c.StopSignal == "9"
		}},
		{"labels merged, user wins", container.Config{Labels: map[string]string{"l2": "user"}}, func(c container.Config) bool {
			return c.Labels["l1"] == "img" && c.Labels["l2"] == "user"
		}},
		{"env: user first, image extras after", container.Config{Env: []string{"B=user", "C=user"}}, func(c container.Config) bool {
			return reflect.DeepEqual(c.Env, []string{"B=user", "C=user", "PATH=/bin", "A=img"})
		}},
		{"env: image only", container.Config{}, func(c container.Config) bool {
			return reflect.DeepEqual(c.Env, []string{"PATH=/bin", "A=img", "B=img"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := MergeConfig(tt.user, img)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(got) {
				t.Errorf("merged = %+v", got)
			}
		})
	}
}

func TestProcessEnv(t *testing.T) {
	tests := []struct {
		name      string
		user, img []string
		want      []string
	}{
		{"image only", nil, []string{"A=1", "B=2"}, []string{"A=1", "B=2"}},
		{"user overrides by key, image first", []string{"B=u", "C=u"}, []string{"A=1", "B=2"}, []string{"A=1", "B=u", "C=u"}},
		{"key without value", []string{"A"}, []string{"A=1"}, []string{"A"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := processEnv(tt.user, tt.img); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("processEnv = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"", true}, {"ab", true}, {"/ab", true}, {"a_b.c-d", true}, {"0x", true},
		{"a", false}, {"_ab", false}, {"a b", false}, {"a/b", false}, {"ab!", false}, {"//ab", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "Invalid container name ("+tt.name+"), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed") {
				t.Errorf("text = %q", err)
			}
		})
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"SIGTERM", 15, true}, {"TERM", 15, true}, {"sigkill", 9, true}, {"15", 15, true}, {"9", 9, true},
		{"SIGUSR1", 10, true}, {"HUP", 1, true}, {"SIGRTMIN+3", 37, true}, {"RTMAX", 64, true},
		{"FOO", 0, false}, {"0", 0, false}, {"65", 0, false}, {"", 0, false},
		// dockerd's aliases and real-time names.
		{"IOT", 6, true}, {"SIGIOT", 6, true}, {"ABRT", 6, true}, {"POLL", 29, true}, {"IO", 29, true},
		{"CLD", 17, true}, {"sigcld", 17, true}, {"STKFLT", 16, true}, {"PWR", 30, true},
		{"RTMIN", 34, true}, {"RTMIN+15", 49, true}, {"SIGRTMAX-14", 50, true}, {"rtmax-1", 63, true},
		// Not in dockerd's table.
		{"RTMIN+16", 0, false}, {"RTMAX-15", 0, false}, {"RTMIN+0", 0, false}, {"UNUSED", 0, false},
		{"SIG", 0, false}, {" TERM", 0, false}, {"SIGSIGTERM", 0, false}, {"-1", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSignal(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseSignal(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
			if err != nil && err.Error() != "Invalid signal: "+tt.in {
				t.Errorf("text = %q", err)
			}
		})
	}
}

func TestStatusText(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		state portlayer.State
		want  string
	}{
		{"created", portlayer.State{Status: portlayer.StatusCreated}, "Created"},
		{"running", portlayer.State{Status: portlayer.StatusRunning, StartedAt: now.Add(-3 * time.Second)}, "Up 3 seconds"},
		{"running long", portlayer.State{Status: portlayer.StatusRunning, StartedAt: now.Add(-2 * time.Hour)}, "Up 2 hours"},
		{"paused", portlayer.State{Status: portlayer.StatusPaused, StartedAt: now.Add(-time.Minute)}, "Up About a minute (Paused)"},
		{"exited", portlayer.State{Status: portlayer.StatusExited, ExitCode: 3, StartedAt: now.Add(-time.Minute), FinishedAt: now.Add(-2 * time.Second)}, "Exited (3) 2 seconds ago"},
		{"failed start", portlayer.State{Status: portlayer.StatusCreated, ExitCode: 127}, "Created"},
		{"dead", portlayer.State{Status: portlayer.StatusDead}, "Dead"},
		{"removing", portlayer.State{Status: portlayer.StatusRemoving}, "Removal In Progress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StatusText(tt.state, now); got != tt.want {
				t.Errorf("StatusText = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"", time.Time{}, true},
		{"1700000000", time.Unix(1700000000, 0), true},
		{"1700000000.5", time.Unix(1700000000, 500000000), true},
		{"1700000000.000000001", time.Unix(1700000000, 1), true},
		{"2023-11-14T22:13:20Z", time.Unix(1700000000, 0), true},
		{"yesterday", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTimestamp(tt.in)
			if (err == nil) != tt.ok || !got.Equal(tt.want) {
				t.Fatalf("ParseTimestamp(%q) = %v, %v", tt.in, got, err)
			}
		})
	}
}

func TestCleanWorkingDir(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  string
	}{
		{in: "", want: ""},
		{in: "/", want: "/"},
		{in: "/srv/app/", want: "/srv/app"},
		{in: "/a/../b", want: "/b"},
		{in: "/../..", want: "/"},
		{in: "tmp", wantErr: "the working directory 'tmp' is invalid, it needs to be an absolute path"},
		{in: "../..", wantErr: "the working directory '../..' is invalid, it needs to be an absolute path"},
		{in: "./x", wantErr: "the working directory './x' is invalid, it needs to be an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := CleanWorkingDir(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("CleanWorkingDir(%q) = %q, %v; want InvalidArgument %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("CleanWorkingDir(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestApplyLogConfigKeys checks --log-opt keys as dockerd's json-file and
// local drivers do: known keys pass, an unknown one is a 400 with dockerd's
// text.
func TestApplyLogConfigKeys(t *testing.T) {
	tests := []struct {
		name    string
		lc      container.LogConfig
		wantErr string
		size    int64
		files   int
		noLog   bool
	}{
		{name: "unset", lc: container.LogConfig{}},
		{name: "driver none", lc: container.LogConfig{Type: "none"}, noLog: true},
		{name: "driver none takes any option", lc: container.LogConfig{Type: "none", Config: map[string]string{"bogus": "1", "max-size": "abc"}}, noLog: true},
		{name: "other driver", lc: container.LogConfig{Type: "syslog"}, wantErr: `logging driver "syslog" is not supported by vch: use json-file, local or none`},
		{name: "size and files", lc: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "1k", "max-file": "2"}}, size: 1024, files: 2},
		{name: "common keys", lc: container.LogConfig{Config: map[string]string{"tag": "x", "labels": "a", "env": "B", "compress": "false"}}},
		{name: "unknown json-file", lc: container.LogConfig{Config: map[string]string{"bogus": "1"}}, wantErr: "unknown log opt 'bogus' for json-file log driver"},
		{name: "unknown local", lc: container.LogConfig{Type: "local", Config: map[string]string{"max-size": "1k", "zzz": "1"}}, wantErr: "unknown log opt 'zzz' for log driver local"},
		{name: "bad size", lc: container.LogConfig{Config: map[string]string{"max-size": "abc"}}, wantErr: "invalid value for max-size: abc"},
		{name: "bad files", lc: container.LogConfig{Config: map[string]string{"max-file": "0"}}, wantErr: "max-file cannot be less than 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var spec portlayer.ContainerSpec
			err := applyLogConfig(&spec, tt.lc)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err %v, want InvalidArgument %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || spec.LogMaxSizeBytes != tt.size || spec.LogMaxFiles != tt.files || spec.NoLog != tt.noLog {
				t.Fatalf("err %v, size %d files %d no log %v; want %d %d %v", err, spec.LogMaxSizeBytes, spec.LogMaxFiles, spec.NoLog, tt.size, tt.files, tt.noLog)
			}
		})
	}
}

func TestValidateRestartPolicy(t *testing.T) {
	tests := []struct {
		name       string
		policy     container.RestartPolicy
		autoRemove bool
		want       string // "" accepted
	}{
		{name: "unset", policy: container.RestartPolicy{}},
		{name: "unset with a count (pre-v25 clients)", policy: container.RestartPolicy{MaximumRetryCount: 3}},
		{name: "no", policy: container.RestartPolicy{Name: "no"}},
		{name: "always", policy: container.RestartPolicy{Name: "always"}},
		{name: "unless-stopped", policy: container.RestartPolicy{Name: "unless-stopped"}},
		{name: "on-failure", policy: container.RestartPolicy{Name: "on-failure"}},
		{name: "on-failure:5", policy: container.RestartPolicy{Name: "on-failure", MaximumRetryCount: 5}},
		{name: "always:3", policy: container.RestartPolicy{Name: "always", MaximumRetryCount: 3},
			want: "invalid restart policy: maximum retry count can only be used with 'on-failure'"},
		{name: "unless-stopped:-1", policy: container.RestartPolicy{Name: "unless-stopped", MaximumRetryCount: -1},
			want: "invalid restart policy: maximum retry count can only be used with 'on-failure' and cannot be negative"},
		{name: "on-failure:-1", policy: container.RestartPolicy{Name: "on-failure", MaximumRetryCount: -1},
			want: "invalid restart policy: maximum retry count cannot be negative"},
		{name: "unknown", policy: container.RestartPolicy{Name: "sometimes"},
			want: "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"},
		{name: "rm with always", policy: container.RestartPolicy{Name: "always"}, autoRemove: true,
			want: "can't create 'AutoRemove' container with restart policy"},
		{name: "rm with no", policy: container.RestartPolicy{Name: "no"}, autoRemove: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateRestartPolicy(tt.policy, tt.autoRemove)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want || !errdefs.IsInvalidArgument(err)):
				t.Errorf("got %v, want InvalidArgument %q", err, tt.want)
			}
		})
	}
}

func TestValidateEnv(t *testing.T) {
	for _, ok := range [][]string{nil, {"A=1", "B=", "C", "D=x=y"}} {
		if err := ValidateEnv(ok); err != nil {
			t.Errorf("ValidateEnv(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "=", "=foo"} {
		err := ValidateEnv([]string{"A=1", bad})
		if want := "invalid environment variable: " + bad; err == nil || err.Error() != want || !errdefs.IsInvalidArgument(err) {
			t.Errorf("ValidateEnv(%q) = %v; want InvalidArgument %q", bad, err, want)
		}
	}
}

func TestValidateHostModes(t *testing.T) {
	for _, tc := range []struct {
		hc      container.HostConfig
		wantErr string
	}{
		{container.HostConfig{}, ""},
		{container.HostConfig{IpcMode: "private", PidMode: "host", UTSMode: "host"}, ""},
		{container.HostConfig{IpcMode: "container:abc", PidMode: "container:abc"}, ""},
		{container.HostConfig{IpcMode: "invalid"}, "invalid IPC mode: invalid"},
		{container.HostConfig{PidMode: "invalid"}, "invalid PID mode: invalid"},
		{container.HostConfig{PidMode: "container"}, "invalid PID mode: container"},
		{container.HostConfig{UTSMode: "invalid"}, "invalid UTS mode: invalid"},
		{container.HostConfig{Annotations: map[string]string{"": "a"}}, "invalid Annotations: the empty string is not permitted as an annotation key"},
	} {
		err := ValidateHostModes(&tc.hc)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%+v: %v", tc.hc, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr || !errdefs.IsInvalidArgument(err)):
			t.Errorf("%+v: err %v, want InvalidArgument %q", tc.hc, err, tc.wantErr)
		}
	}
}

func TestLinkRendering(t *testing.T) {
	if got := renderLinks([]string{"a", "b:db", "/c:/x/c"}, "web"); !reflect.DeepEqual(got, []string{"/a:/web/a", "/b:/web/db", "/c:/web/c"}) {
		t.Errorf("renderLinks = %q", got)
	}
	hc := func(links ...string) map[string][]byte {
		b, _ := json.Marshal(container.HostConfig{Links: links})
		return map[string][]byte{AnnotationHostConfig: b}
	}
	cs := []portlayer.Container{
		{ID: "aaaa", Spec: portlayer.ContainerSpec{Name: "first"}},
		{ID: "bbbb", Spec: portlayer.ContainerSpec{Name: "second", Annotations: hc("first")}},
		{ID: "cccc", Spec: portlayer.ContainerSpec{Name: "third", Annotations: hc("first:db", "bbbb:s")}},
	}
	got := linkNames(cs)
	if !reflect.DeepEqual(got["aaaa"], []string{"/second/first", "/third/db"}) || !reflect.DeepEqual(got["bbbb"], []string{"/third/s"}) || len(got["cccc"]) != 0 {
		t.Errorf("linkNames = %q", got)
	}
}

func TestParseSecurityOpts(t *testing.T) {
	for _, tc := range []struct {
		opts    []string
		want    SecurityOpts
		wantErr string
	}{
		{nil, SecurityOpts{}, ""},
		{[]string{"no-new-privileges", "writable-cgroups"}, SecurityOpts{NoNewPrivileges: true, WritableCgroups: true}, ""},
		{[]string{"writable-cgroups=true", "no-new-privileges:true"}, SecurityOpts{NoNewPrivileges: true, WritableCgroups: true}, ""},
		{[]string{"writable-cgroups", "writable-cgroups=false"}, SecurityOpts{}, ""},
		{[]string{"seccomp=unconfined", "apparmor=unconfined", "label=disable", "disable"}, SecurityOpts{}, ""},
		{[]string{"label"}, SecurityOpts{}, `invalid --security-opt 1: "label"`},
		{[]string{"writeable-cgroups=true"}, SecurityOpts{}, `invalid --security-opt 2: "writeable-cgroups=true"`},
		{[]string{"writable-cgroups=potato"}, SecurityOpts{}, `invalid --security-opt 2: "writable-cgroups=potato"`},
		{[]string{"seccomp={not json"}, SecurityOpts{}, "Decoding seccomp profile failed"},
	} {
		got, err := ParseSecurityOpts(tc.opts)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) || !errdefs.IsInvalidArgument(err) {
				t.Errorf("%q: err %v, want %q", tc.opts, err, tc.wantErr)
			}
		case err != nil || !reflect.DeepEqual(got, tc.want):
			t.Errorf("%q: %+v, %v; want %+v", tc.opts, got, err, tc.want)
		}
	}
}

func TestParseSeccompProfile(t *testing.T) {
	o, err := ParseSecurityOpts([]string{`seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chown"],"action":"SCMP_ACT_ERRNO"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	var prof struct {
		DefaultAction string
		Syscalls      []struct {
			Names  []string
			Action string
		}
	}
	if err := json.Unmarshal(o.Seccomp, &prof); err != nil || prof.DefaultAction != "SCMP_ACT_ALLOW" || len(prof.Syscalls) != 1 || prof.Syscalls[0].Names[0] != "chown" {
		t.Errorf("profile %s: %v", o.Seccomp, err)
	}
	if o, err := ParseSecurityOpts([]string{"seccomp=unconfined"}); err != nil || o.Seccomp != nil {
		t.Errorf("unconfined: %+v, %v", o, err)
	}
}
