package deploy

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/hypervisor/vsphere"
	"github.com/vchproject/vch/internal/vch/certs"
)

// update rewrites the golden files: go test ./internal/vch/deploy -update
var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func golden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "_")+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func sampleConfig() Config {
	return Config{
		Name: "team1", Created: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), VCHVersion: "1.2.3",
		Binary: "/usr/local/bin/vch", Host: "tcp://127.0.0.1:2376",
		TLS:    TLS{Enabled: true, Verify: true, CertDir: "/var/lib/vch/team1/certs", CNames: []string{"vch.example.com"}, Generated: true, CertDirCreated: true},
		Accel:  "tcg",
		Limits: Limits{Containers: 20, MemoryMiB: 8192, CPUs: 4, DefaultContainerMemoryMiB: 512, DefaultContainerCPUs: 2},
		Registries: Registries{
			Insecure: []string{"reg.example.com:5000"}, Whitelist: []string{"docker.io", "*.example.com"},
		},
		Service: ServiceProcess, LogLevel: "debug",
	}
}

func TestConfigRoundTrip(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	if _, err := LoadConfig(l); !errdefs.IsNotFound(err) {
		t.Fatalf("LoadConfig of an empty dir: %v, want NotFound", err)
	}
	c := sampleConfig()
	if err := SaveConfig(l, c); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(l.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config.json mode %v, want 0600", st.Mode().Perm())
	}
	got, err := LoadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	c.Schema = configSchema
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, c)
	}
	b, _ := os.ReadFile(l.ConfigFile())
	golden(t, string(b))

	t.Run("newer schema", func(t *testing.T) {
		if err := os.WriteFile(l.ConfigFile(), []byte(`{"schema": 99, "name": "x"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(l); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "upgrade vch") {
			t.Errorf("LoadConfig: %v, want InvalidArgument asking for an upgrade", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		if err := os.WriteFile(l.ConfigFile(), []byte(`{`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(l); !errdefs.IsInvalidArgument(err) {
			t.Errorf("LoadConfig: %v, want InvalidArgument", err)
		}
	})
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"team1", true}, {"a", true}, {"Team_1.prod-2", true}, {strings.Repeat("a", 63), true},
		{"", false}, {"-x", false}, {".x", false}, {"a/b", false}, {"..", false}, {"a b", false}, {strings.Repeat("a", 64), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateName(tc.name)
			if (err == nil) != tc.ok {
				t.Errorf("ValidateName(%q) = %v, want ok %v", tc.name, err, tc.ok)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("class of %v", err)
			}
		})
	}
}

func TestValidateLimits(t *testing.T) {
	tests := []struct {
		name string
		l    Limits
		want string // "" for valid, else a piece of the message
	}{
		{name: "none", l: Limits{}},
		{name: "all", l: Limits{Containers: 10, MemoryMiB: 4096, CPUs: 4, DefaultContainerMemoryMiB: 512, DefaultContainerCPUs: 2}},
		{name: "negative containers", l: Limits{Containers: -1}, want: "--containers -1"},
		{name: "tiny memory", l: Limits{MemoryMiB: 10}, want: "at least 64 MiB"},
		{name: "negative cpus", l: Limits{CPUs: -2}, want: "--cpu -2"},
		{name: "default memory too small", l: Limits{DefaultContainerMemoryMiB: 32}, want: "want 64 to 65536 MiB"},
		{name: "default cpus too many", l: Limits{DefaultContainerCPUs: 65}, want: "want 1 to 64"},
		{name: "default above budget", l: Limits{MemoryMiB: 256, DefaultContainerMemoryMiB: 512}, want: "exceeds --memory"},
		{name: "default cpus above budget", l: Limits{CPUs: 1, DefaultContainerCPUs: 2}, want: "exceeds --cpu"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateLimits(tc.l)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidateLimits: %v", err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ValidateLimits: %v, want InvalidArgument with %q", err, tc.want)
			}
		})
	}
}

func TestDaemonArgs(t *testing.T) {
	l := Layout{Dir: "/var/lib/vch/team1"}
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{name: "mutual TLS with limits", change: func(c *Config) {
			c.Registries.CAFiles = []string{"/etc/vch/corp-ca.pem"}
			c.VolumeStores = []string{"fast:/srv/vch/fast"}
			c.Limits.StorageQuotaBytes = 20 << 30
		}},
		{name: "TLS without verify", change: func(c *Config) { c.TLS.Verify = false }},
		{name: "cold VMs and memory merge", change: func(c *Config) { c.Limits.NoVMTemplates, c.Limits.MemoryMerge = true, true }},
		{name: "default logging", change: func(c *Config) {
			c.LogDriver, c.LogOpts = "local", map[string]string{"max-size": "50m", "max-file": "5"}
		}},
		{name: "vSphere", change: func(c *Config) {
			c.VSphere = &VSphere{Target: "https://vc.example.com/sdk", Datacenter: "/DC0", ComputeResource: "/DC0/host/C0", ImageStore: "ds1", BridgeNetwork: "vch-bridge", BridgeInterface: "ens224"}
			c.VolumeStores = []string{"fast:/srv/vch/fast", "vmfs:ds://ds1/volumes"}
		}},
		{name: "unix socket without TLS", change: func(c *Config) {
			c.TLS = TLS{}
			c.Host = "unix:///var/lib/vch/team1/docker.sock"
			c.Limits, c.Registries, c.Accel, c.LogLevel = Limits{}, Registries{}, "", ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := sampleConfig()
			tc.change(&c)
			golden(t, strings.Join(DaemonArgs(c, l), "\n")+"\n")
		})
	}
}

// TestSaveConfigVSphere: a vSphere VCH's daemon gets its driver's
// configuration from a file of its own, without the credentials, which
// goes when the VCH is no longer on vSphere.
func TestSaveConfigVSphere(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	c := sampleConfig()
	c.VSphere = &VSphere{Target: "https://vc.example.com/sdk", Datacenter: "/DC0", ComputeResource: "/DC0/host/C0", ImageStore: "ds1", ChannelListen: "10.0.0.5:2377"}
	if err := SaveConfig(l, c); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(l.VSphereConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	var got vsphere.Config
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.URL != "https://vc.example.com/sdk" || got.ResourcePool != c.Name || got.VMFolder != c.Name || got.ImageStore != "ds1/"+c.Name || got.ChannelListen != "10.0.0.5:2377" {
		t.Errorf("driver config %+v", got)
	}
	c.VSphere = nil
	if err := SaveConfig(l, c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.VSphereConfigFile()); !os.IsNotExist(err) {
		t.Errorf("driver config of a local VCH: %v; want none", err)
	}
}

func TestUnit(t *testing.T) {
	c := sampleConfig()
	c.Service = ServiceSystemd
	golden(t, Unit(c, Layout{Dir: "/var/lib/vch/team1"}))
}

func TestSystemdQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":      "plain",
		"a b":        `"a b"`,
		`q"uote`:     `"q\"uote"`,
		"100%":       "100%%",
		"$HOME":      `"$$HOME"`,
		`back\slash`: `"back\\slash"`,
	} {
		if got := systemdQuote(in); got != want {
			t.Errorf("systemdQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestSystemdService drives the systemd service with a recording
// systemctl: the unit is written, enabled and started, then disabled and
// removed.
func TestSystemdService(t *testing.T) {
	dir := t.TempDir()
	var calls []string
	m := &Manager{Base: filepath.Join(dir, "state"), UnitDir: filepath.Join(dir, "units"),
		run: func(ctx context.Context, name string, args ...string) error {
			calls = append(calls, name+" "+strings.Join(args, " "))
			return nil
		}}
	if err := os.MkdirAll(m.UnitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := sampleConfig()
	c.Service = ServiceSystemd
	l := m.Layout(c.Name)
	svc := m.service(l, c)
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(filepath.Join(m.UnitDir, "vch-team1.service"))
	if err != nil {
		t.Fatal(err)
	}
	if string(unit) != Unit(c, l) {
		t.Error("unit file differs from Unit()")
	}
	if err := svc.Uninstall(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(m.UnitDir, "vch-team1.service")); !os.IsNotExist(err) {
		t.Errorf("unit left after Uninstall: %v", err)
	}
	want := []string{
		"systemctl daemon-reload",
		"systemctl enable --now vch-team1.service",
		"systemctl disable --now vch-team1.service",
		"systemctl daemon-reload",
	}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("systemctl calls:\n got %q\nwant %q", calls, want)
	}
}

func TestClientLines(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		ep   Endpoint
	}{
		{name: "mutual TLS", c: Config{Name: "team1"}, ep: Endpoint{DockerHost: "tcp://127.0.0.1:2376", TLS: true, TLSVerify: true, CertPath: "/var/lib/vch/team1/certs/client"}},
		{name: "operator certificates", c: Config{Name: "team1"}, ep: Endpoint{DockerHost: "tcp://vch.example.com:2376", TLS: true, TLSVerify: true}},
		{name: "unix socket", c: Config{Name: "dev"}, ep: Endpoint{DockerHost: "unix:///var/lib/vch/dev/docker.sock"}},
		{name: "path with a space", c: Config{Name: "default"}, ep: Endpoint{DockerHost: "tcp://127.0.0.1:2377", TLS: true, CertPath: "/srv/my vchs/default/certs/client"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, ctx := ClientLines(tc.c, tc.ep)
			golden(t, env+"\n"+ctx+"\n")
		})
	}
}

func TestDialHost(t *testing.T) {
	hn, _ := os.Hostname()
	tests := []struct {
		host   string
		cnames []string
		want   string
	}{
		{host: "tcp://127.0.0.1:2376", want: "tcp://127.0.0.1:2376"},
		{host: "tcp://192.0.2.5:2376", cnames: []string{"vch.example.com"}, want: "tcp://192.0.2.5:2376"},
		{host: "tcp://0.0.0.0:2376", cnames: []string{"vch.example.com", "192.0.2.5"}, want: "tcp://vch.example.com:2376"},
		{host: "tcp://[::]:2376", cnames: []string{"2001:db8::5"}, want: "tcp://[2001:db8::5]:2376"},
		{host: "tcp://:2376", want: "tcp://" + net.JoinHostPort(hn, "2376")},
		{host: "unix:///var/lib/vch/x/docker.sock", want: "unix:///var/lib/vch/x/docker.sock"},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			if got := DialHost(Config{Host: tc.host, TLS: TLS{CNames: tc.cnames}}); got != tc.want {
				t.Errorf("DialHost = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPickHost(t *testing.T) {
	m := &Manager{Base: t.TempDir()}
	other := m.Layout("other")
	if err := os.MkdirAll(other.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	oc := sampleConfig()
	oc.Name, oc.Host = "other", "tcp://127.0.0.1:2376"
	if err := SaveConfig(other, oc); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	l := m.Layout("new")
	tests := []struct {
		name    string
		o       CreateOptions
		want    string
		wantErr func(error) bool
	}{
		{name: "unix default without TLS", o: CreateOptions{}, want: "unix://" + l.AdminSocket()},
		{name: "explicit unix", o: CreateOptions{Host: "unix:///run/vch/new.sock"}, want: "unix:///run/vch/new.sock"},
		{name: "bare address", o: CreateOptions{TLS: true, Host: "127.0.0.1:45999"}, want: "tcp://127.0.0.1:45999"},
		{name: "claimed by another VCH", o: CreateOptions{TLS: true, Host: "tcp://127.0.0.1:2376"}, wantErr: errdefs.IsFailedPrecondition},
		{name: "port in use", o: CreateOptions{TLS: true, Host: "tcp://" + busy.Addr().String()}, wantErr: errdefs.IsFailedPrecondition},
		{name: "port zero", o: CreateOptions{TLS: true, Host: "tcp://127.0.0.1:0"}, wantErr: errdefs.IsInvalidArgument},
		{name: "non-loopback without TLS", o: CreateOptions{Host: "tcp://192.0.2.1:2376"}, wantErr: errdefs.IsInvalidArgument},
		{name: "scheme", o: CreateOptions{TLS: true, Host: "http://127.0.0.1:2376"}, wantErr: errdefs.IsInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.pickHost(tc.o, l)
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("pickHost = %q, %v; want a classified error", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("pickHost = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("default skips claimed ports", func(t *testing.T) {
		got, err := m.pickHost(CreateOptions{TLS: true}, l)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(got[strings.LastIndex(got, ":")+1:])
		if !strings.HasPrefix(got, "tcp://127.0.0.1:") || port <= DefaultPort || port >= DefaultPort+portSearch {
			t.Errorf("default host %s: want 127.0.0.1 on a port in %d..%d", got, DefaultPort+1, DefaultPort+portSearch-1)
		}
	})
}

func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	m := &Manager{Base: dir, Binary: "/usr/local/bin/vch", Service: ServiceProcess}
	if err := os.MkdirAll(m.Layout("exists").Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	long := &Manager{Base: filepath.Join(dir, strings.Repeat("d", 90)), Binary: "/usr/local/bin/vch", Service: ServiceProcess}
	tests := []struct {
		name string
		m    *Manager
		o    CreateOptions
		want func(error) bool
	}{
		{name: "bad name", m: m, o: CreateOptions{Name: "a/b"}, want: errdefs.IsInvalidArgument},
		{name: "relative binary", m: &Manager{Base: dir, Binary: "bin/vch"}, o: CreateOptions{Name: "x"}, want: errdefs.IsInvalidArgument},
		{name: "bad service", m: &Manager{Base: dir, Binary: "/vch", Service: "init"}, o: CreateOptions{Name: "x"}, want: errdefs.IsInvalidArgument},
		{name: "bad accel", m: m, o: CreateOptions{Name: "x", Accel: "hvf"}, want: errdefs.IsInvalidArgument},
		{name: "bad log level", m: m, o: CreateOptions{Name: "x", LogLevel: "loud"}, want: errdefs.IsInvalidArgument},
		{name: "bad log driver", m: m, o: CreateOptions{Name: "x", LogDriver: "syslog"}, want: errdefs.IsInvalidArgument},
		{name: "bad log opt", m: m, o: CreateOptions{Name: "x", LogOpts: map[string]string{"max-size": "huge"}}, want: errdefs.IsInvalidArgument},
		{name: "bad limits", m: m, o: CreateOptions{Name: "x", Limits: Limits{Containers: -1}}, want: errdefs.IsInvalidArgument},
		{name: "bad registry", m: m, o: CreateOptions{Name: "x", Registries: Registries{Whitelist: []string{"https://r"}}}, want: errdefs.IsInvalidArgument},
		{name: "socket path too long", m: long, o: CreateOptions{Name: strings.Repeat("n", 20)}, want: errdefs.IsInvalidArgument},
		{name: "exists", m: m, o: CreateOptions{Name: "exists"}, want: errdefs.IsAlreadyExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.m.Create(t.Context(), tc.o)
			if !tc.want(err) {
				t.Fatalf("Create: %v, want a classified error", err)
			}
		})
	}
	if _, err := os.Stat(m.Layout("x").Dir); !os.IsNotExist(err) {
		t.Errorf("a refused create left its state directory: %v", err)
	}
}

// TestCreateRollsBack: a daemon that never answers (the "binary" exits at
// once) makes Create fail with Unavailable, show the logs and leave
// nothing behind, generated certificates included.
func TestCreateRollsBack(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "vch")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'no daemon here' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := &Manager{Base: filepath.Join(dir, "state"), Binary: bin, Service: ServiceProcess}
	_, err := m.Create(t.Context(), CreateOptions{Name: "broken", TLS: true, TLSVerify: true, Host: "tcp://127.0.0.1:" + freePort(t)})
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "no daemon here") {
		t.Fatalf("Create: %v, want Unavailable with the supervisor's output", err)
	}
	ents, _ := os.ReadDir(m.Base)
	if len(ents) != 0 {
		t.Errorf("left behind in the base directory: %v", ents)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// deployByHand lays out a stopped VCH as Create would, without a daemon.
func deployByHand(t *testing.T, m *Manager, name, certDir string) (Layout, Config) {
	t.Helper()
	l := m.Layout(name)
	for _, d := range []string{l.Dir, l.Logs(), filepath.Join(l.Root(), "images")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(l.DaemonLog(), []byte("log\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := sampleConfig()
	c.Name, c.Service = name, ServiceProcess
	c.TLS.CertDir, c.TLS.CertDirCreated = certDir, false
	if _, err := os.Stat(certDir); os.IsNotExist(err) {
		c.TLS.CertDirCreated = true
	}
	if _, err := certs.Generate(certDir, certs.Options{Name: name}); err != nil {
		t.Fatal(err)
	}
	if err := SaveConfig(l, c); err != nil {
		t.Fatal(err)
	}
	return l, c
}

func TestDeleteRemovesOnlyWhatItMade(t *testing.T) {
	dir := t.TempDir()
	m := &Manager{Base: filepath.Join(dir, "state")}

	t.Run("certificates in the state directory", func(t *testing.T) {
		l, _ := deployByHand(t, m, "a", m.Layout("a").CertDir())
		if err := m.Delete(t.Context(), "a", false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
			t.Errorf("state directory left: %v", err)
		}
	})
	t.Run("foreign files stay", func(t *testing.T) {
		ext := filepath.Join(dir, "operator-certs")
		if err := os.MkdirAll(ext, 0o700); err != nil {
			t.Fatal(err)
		}
		mine := filepath.Join(ext, "README")
		if err := os.WriteFile(mine, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		l, _ := deployByHand(t, m, "b", ext)
		notes := filepath.Join(l.Dir, "operator-notes.txt")
		if err := os.WriteFile(notes, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := m.Delete(t.Context(), "b", false); err != nil {
			t.Fatal(err)
		}
		for _, keep := range []string{mine, notes} {
			if _, err := os.Stat(keep); err != nil {
				t.Errorf("%s was removed: %v", keep, err)
			}
		}
		ents, _ := os.ReadDir(l.Dir)
		if len(ents) != 1 {
			t.Errorf("state directory holds %d entries, want only the operator's file", len(ents))
		}
		ents, _ = os.ReadDir(ext)
		if len(ents) != 1 {
			t.Errorf("cert directory holds %d entries, want only the operator's file", len(ents))
		}
	})
	t.Run("unknown VCH", func(t *testing.T) {
		if err := m.Delete(t.Context(), "nope", false); !errdefs.IsNotFound(err) {
			t.Errorf("Delete: %v, want NotFound", err)
		}
	})
}

// TestDeleteStrayVMs: a process using the VCH's root after its daemon is
// gone (a container VM left running) blocks Delete until --force kills it.
func TestDeleteStrayVMs(t *testing.T) {
	m := &Manager{Base: t.TempDir()}
	l, _ := deployByHand(t, m, "stray", m.Layout("stray").CertDir())
	cmd := exec.Command("/bin/sh", "-c", "sleep 60", filepath.Join(l.Root(), "disk.qcow2"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer cmd.Process.Kill()
	err := m.Delete(t.Context(), "stray", false)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("Delete: %v, want FailedPrecondition naming pid %d", err, cmd.Process.Pid)
	}
	if _, err := os.Stat(l.ConfigFile()); err != nil {
		t.Fatalf("a refused delete removed the config: %v", err)
	}
	if err := m.Delete(t.Context(), "stray", true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stray process survived delete --force")
	}
}

// TestSupervise restarts a daemon that keeps dying and stops on cancel.
func TestSupervise(t *testing.T) {
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	bin := filepath.Join(dir, "vch")
	script := "#!/bin/sh\necho $$ >> " + starts + "\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	l := Layout{Dir: filepath.Join(dir, "s")}
	if err := os.MkdirAll(l.Logs(), 0o700); err != nil {
		t.Fatal(err)
	}
	c := sampleConfig()
	c.Binary = bin
	if err := SaveConfig(l, c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Supervise(ctx, l, discardLogger()) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(starts)
		if strings.Count(string(b), "\n") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon was not restarted; starts: %q", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pid := readPID(l.SupervisorPIDFile()); pid != os.Getpid() {
		t.Errorf("supervise.pid holds %d, want %d", pid, os.Getpid())
	}
	if err := Supervise(t.Context(), l, discardLogger()); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second supervisor: %v, want FailedPrecondition", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Supervise: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Supervise did not return after cancel")
	}
	if _, err := os.Stat(l.SupervisorPIDFile()); !os.IsNotExist(err) {
		t.Errorf("supervise.pid left: %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fakeDaemon answers on a VCH's admin socket like a daemon with one
// running container.
func fakeDaemon(t *testing.T, l Layout) {
	t.Helper()
	ln, err := net.Listen("unix", l.AdminSocket())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/containers/json", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `[{"Id":"abc","Names":["/web"],"State":"running"}]`)
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"Version":"9.9.9","ApiVersion":"1.50"}`)
	})
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"Containers":3,"ContainersRunning":1,"NCPU":4,"MemTotal":8589934592}`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// fakeSupervisor starts a process whose command line names the VCH as a
// supervisor's does, and records it in supervise.pid.
func fakeSupervisor(t *testing.T, l Layout, name string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "sleep 60", "supervise", name)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	t.Cleanup(func() { cmd.Process.Kill() })
	if err := os.WriteFile(l.SupervisorPIDFile(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRunningContainersBlock(t *testing.T) {
	m := &Manager{Base: t.TempDir(), Version: "2.0.0"}
	l, _ := deployByHand(t, m, "busy", m.Layout("busy").CertDir())
	fakeDaemon(t, l)
	fakeSupervisor(t, l, "busy")

	st, err := m.Inspect(t.Context(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateRunning || st.Versions.Daemon != "9.9.9" || st.Usage == nil || *st.Usage != (Usage{Containers: 3, Running: 1, NCPU: 4, MemTotalMiB: 8192}) || st.SupervisorPid == 0 {
		t.Errorf("Inspect: %+v usage %+v", st, st.Usage)
	}
	err = m.Delete(t.Context(), "busy", false)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "1 running container(s) (web)") {
		t.Errorf("Delete: %v, want FailedPrecondition naming web", err)
	}
	_, err = m.Configure(t.Context(), "busy", false, func(c *Config) error { c.Limits.CPUs = 8; return nil })
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "configure restarts the daemon") {
		t.Errorf("Configure: %v, want FailedPrecondition", err)
	}
	if c, _ := m.Config("busy"); c.Limits.CPUs != 4 {
		t.Errorf("a refused configure changed the config: cpus %d", c.Limits.CPUs)
	}
}

func TestConfigureStopped(t *testing.T) {
	m := &Manager{Base: t.TempDir(), Version: "2.0.0"}
	deployByHand(t, m, "idle", m.Layout("idle").CertDir())
	tests := []struct {
		name   string
		change func(*Config) error
		want   func(error) bool
	}{
		{name: "bad limit", change: func(c *Config) error { c.Limits.MemoryMiB = 1; return nil }, want: errdefs.IsInvalidArgument},
		{name: "endpoint is fixed", change: func(c *Config) error { c.Host = "tcp://127.0.0.1:1"; return nil }, want: errdefs.IsInvalidArgument},
		{name: "bad registry", change: func(c *Config) error { c.Registries.Insecure = []string{"a b"}; return nil }, want: errdefs.IsInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := m.Configure(t.Context(), "idle", false, tc.change); !tc.want(err) {
				t.Errorf("Configure: %v", err)
			}
		})
	}
	st, err := m.Configure(t.Context(), "idle", false, func(c *Config) error {
		c.Limits.MemoryMiB, c.Registries.Whitelist = 16384, nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := m.Config("idle")
	if st.State != StateStopped || c.Limits.MemoryMiB != 16384 || c.Registries.Whitelist != nil || c.VCHVersion != "2.0.0" {
		t.Errorf("after configure: state %s, config %+v", st.State, c)
	}
}
