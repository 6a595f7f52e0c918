package deploy

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

const (
	secretUser = "op-4d1e"
	secretPass = "S3cr3t-77ab"
)

func TestParseTarget(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	good := []struct{ in, want string }{
		{"https://" + secretUser + ":" + secretPass + "@vc.example.com/sdk", "https://vc.example.com/sdk"},
		{"https://" + secretUser + ":" + secretPass + "@vc.example.com", "https://vc.example.com/sdk"},
		{"https://" + secretUser + ":" + secretPass + "@10.0.0.1:8443/", "https://10.0.0.1:8443/sdk"},
	}
	for _, tc := range good {
		got, c, err := ParseTarget(tc.in, getenv)
		if err != nil || got != tc.want || c.Username != secretUser || c.Password != secretPass {
			t.Errorf("ParseTarget(%q) = %q, %v, %v; want %q with the credentials", redactTarget(tc.in), got, c, err, tc.want)
		}
	}
	// From the environment when the URL has none.
	if _, _, err := ParseTarget("https://vc.example.com/sdk", getenv); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), TargetUsernameEnv) {
		t.Errorf("no credentials: %v", err)
	}
	env[TargetUsernameEnv], env[TargetPasswordEnv] = secretUser, secretPass
	if _, c, err := ParseTarget("https://vc.example.com/sdk", getenv); err != nil || c != (Credentials{secretUser, secretPass}) {
		t.Errorf("credentials from the environment: %v, %v", c == (Credentials{secretUser, secretPass}), err)
	}
	if _, c, err := ParseTarget("https://other:pw@vc.example.com/sdk", getenv); err != nil || c.Username != "other" || c.Password != "pw" {
		t.Errorf("the URL's credentials come first: %v", err)
	}
	for _, bad := range []string{
		"http://" + secretUser + ":" + secretPass + "@vc.example.com/sdk",
		"https:///sdk", "vc.example.com", "https://" + secretUser + ":" + secretPass + "@vc.example.com/DC1",
		"https://" + secretUser + ":" + secretPass + "@vc.example.com/sdk?x=1",
		"https://" + secretUser + ":" + secretPass + "@vc ex:ample/sdk", "::",
	} {
		_, _, err := ParseTarget(bad, getenv)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseTarget(%q): %v, want InvalidArgument", redactTarget(bad), err)
		}
		if err != nil && (strings.Contains(err.Error(), secretPass) || strings.Contains(err.Error(), secretUser)) {
			t.Errorf("the error holds the credentials: %v", err)
		}
	}
}

func TestParseDatastoreVolumeStore(t *testing.T) {
	s, err := ParseDatastoreVolumeStore("vols:ds://datastore1/vch/vols/")
	if err != nil || fmt.Sprint(s) != fmt.Sprint(DatastoreVolumeStore{Name: "vols", URL: "ds://datastore1/vch/vols", Path: "[datastore1] vch/vols"}) {
		t.Errorf("ParseDatastoreVolumeStore = %+v, %v", s, err)
	}
	for _, bad := range []string{"vols:ds://datastore1", "vols:ds://datastore1/", "vols:ds:///x", ":ds://d/x", "a b:ds://d/x", "v:ds://d/../x", "v:ds://d//x", "v:ds://[d]/x", "v:/local"} {
		if _, err := ParseDatastoreVolumeStore(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseDatastoreVolumeStore(%q): %v, want InvalidArgument", bad, err)
		}
	}
	if !IsDatastoreVolumeStore("v:ds://d/x") || IsDatastoreVolumeStore("v:/srv/x") {
		t.Error("IsDatastoreVolumeStore")
	}
}

// TestCredentialsHidden: the types that carry credentials do not show
// them, the config and the daemon's command line and unit do not hold
// them, and scrub takes them out of an error, keeping its class.
func TestCredentialsHidden(t *testing.T) {
	c := Credentials{secretUser, secretPass}
	o := VSphereOptions{Target: "https://" + secretUser + ":" + secretPass + "@vc.example.com/sdk", ComputeResource: "/DC/host/C"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o)} {
		if strings.Contains(s, secretPass) || strings.Contains(s, secretUser) {
			t.Errorf("shown: %s", s)
		}
	}
	err := scrub(fmt.Errorf("login as %s with %s: %w", secretUser, secretPass, errdefs.ErrUnauthenticated), c)
	if !errdefs.IsUnauthorized(err) || strings.Contains(err.Error(), secretPass) || strings.Contains(err.Error(), secretUser) {
		t.Errorf("scrub: %v", err)
	}
	plain := errors.New("nothing secret")
	if scrub(plain, c) != plain {
		t.Error("scrub rebuilt an error holding no credential")
	}

	l := Layout{Dir: t.TempDir()}
	cfg := sampleConfig()
	cfg.VolumeStores = []string{"local:/srv/vols", "vols:ds://ds1/vols"}
	cfg.VSphere = &VSphere{Target: "https://vc.example.com/sdk", Datacenter: "/DC", ComputeResource: "/DC/host/C",
		ResourcePool: "/DC/host/C/Resources/team1", VMFolder: "/DC/vm/team1", ImageStore: "ds1", ImageStorePath: "[ds1] team1",
		VolumeStores: []DatastoreVolumeStore{{Name: "vols", URL: "ds://ds1/vols", Path: "[ds1] vols", Made: []string{"[ds1] vols"}}}}
	if err := SaveConfig(l, cfg); err != nil {
		t.Fatal(err)
	}
	if err := saveCredentials(l, c); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(l.CredentialsFile()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", st, err)
	}
	got, err := loadCredentials(l, func(string) string { return "" })
	if err != nil || got != c {
		t.Errorf("loadCredentials: %v", err)
	}
	got, _ = loadCredentials(l, func(k string) string {
		if k == TargetPasswordEnv {
			return "rotated"
		}
		return ""
	})
	if got != (Credentials{secretUser, "rotated"}) {
		t.Error("the environment's password does not take precedence over the file's")
	}
	b, _ := os.ReadFile(l.ConfigFile())
	args := DaemonArgs(cfg, l)
	for _, s := range []string{string(b), strings.Join(args, " "), Unit(cfg, l)} {
		if strings.Contains(s, secretPass) || strings.Contains(s, secretUser) {
			t.Errorf("holds the credentials: %s", s)
		}
	}
	if !slices.Contains(args, "local:/srv/vols") || !slices.Contains(args, "vols:ds://ds1/vols") {
		t.Errorf("daemon args %v: want the local and the datastore volume stores", args)
	}
	if !slices.Contains(l.entries(), "target.json") {
		t.Error("delete does not remove target.json")
	}
	if _, err := loadCredentials(Layout{Dir: t.TempDir()}, func(string) string { return "" }); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("no credentials anywhere: %v", err)
	}
	env := withoutCredentials([]string{"PATH=/bin", TargetUsernameEnv + "=" + secretUser, TargetPasswordEnv + "=" + secretPass})
	if !slices.Equal(env, []string{"PATH=/bin"}) {
		t.Errorf("withoutCredentials = %v", env)
	}
}

func TestConfigureVSphereRefuses(t *testing.T) {
	m := &Manager{Base: t.TempDir(), Version: "2.0.0"}
	_, _ = deployByHand(t, m, "vs", m.Layout("vs").CertDir())
	if err := addVSphere(m, "vs"); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Config){
		"target":          func(c *Config) { c.VSphere.Target = "https://other/sdk" },
		"image store":     func(c *Config) { c.VSphere.ImageStore = "ds2" },
		"no vsphere":      func(c *Config) { c.VSphere = nil },
		"drop ds store":   func(c *Config) { c.VolumeStores = nil },
		"ds without ds":   func(c *Config) { c.VolumeStores = append(c.VolumeStores, "x:ds://d") },
		"ds in the image": func(c *Config) { c.VolumeStores = append(c.VolumeStores, "x:ds://ds1/vs/x") },
	} {
		t.Run(name, func(t *testing.T) {
			_, err := m.Configure(t.Context(), "vs", false, func(c *Config) error { change(c); return nil })
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Configure: %v, want InvalidArgument", err)
			}
		})
	}
	c, _ := m.Config("vs")
	if c.VSphere.Target != "https://vc.example.com/sdk" || len(c.VolumeStores) != 1 {
		t.Errorf("a refused configure changed the config: %+v", c.VSphere)
	}
}

// addVSphere makes the hand-deployed VCH name a vSphere one.
func addVSphere(m *Manager, name string) error {
	l := m.Layout(name)
	c, err := LoadConfig(l)
	if err != nil {
		return err
	}
	c.VolumeStores = []string{"vols:ds://ds1/vols"}
	c.VSphere = &VSphere{Target: "https://vc.example.com/sdk", Datacenter: "/DC", ComputeResource: "/DC/host/C",
		ResourcePool: "/DC/host/C/Resources/" + name, VMFolder: "/DC/vm/" + name, ImageStore: "ds1", ImageStorePath: "[ds1] " + name,
		VolumeStores: []DatastoreVolumeStore{{Name: "vols", URL: "ds://ds1/vols", Path: "[ds1] vols"}}}
	return SaveConfig(l, c)
}
