package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vchproject/vch/internal/vch"
)

// VCH states, as `vch ls` shows them.
const (
	// StateRunning: the daemon answers on its admin socket.
	StateRunning = "running"
	// StateStarting: the service runs but the daemon does not answer yet
	// (it is starting, or restarting after it died).
	StateStarting = "starting"
	// StateStopped: neither the service nor the daemon runs.
	StateStopped = "stopped"
)

// pingTimeout bounds one question to a daemon for ls and inspect: a
// daemon that answers slower than this is reported as not answering.
const pingTimeout = 3 * time.Second

// Status is what `vch inspect` reports about one VCH.
type Status struct {
	Name    string    `json:"Name"`
	State   string    `json:"State"`
	Created time.Time `json:"Created"`
	// Pid is the daemon's PID while it runs, else 0; SupervisorPid the
	// supervisor's (process service only).
	Pid           int `json:"Pid"`
	SupervisorPid int `json:"SupervisorPid,omitempty"`
	Endpoint      Endpoint
	Versions      Versions
	Limits        LimitsInfo
	// Usage is nil when the daemon does not answer.
	Usage      *Usage
	Registries RegistriesInfo
	// Logging is the default logging of containers that name none.
	Logging LoggingInfo
	// VolumeStores are the extra volume stores, "NAME:PATH" and
	// "NAME:ds://DATASTORE/PATH".
	VolumeStores []string `json:",omitempty"`
	// VSphere is a vSphere VCH's deployment; nil for a local VCH.
	VSphere *VSphereInfo `json:",omitempty"`
	Service ServiceInfo
	Paths   Paths
}

// VSphereInfo is what inspect shows of a vSphere VCH: never its
// credentials.
type VSphereInfo struct {
	// Target is the SDK endpoint, "https://HOST[:PORT]/sdk".
	Target string
	// Thumbprint is the trusted certificate's SHA-1 thumbprint, if given;
	// Insecure says the certificate is not checked.
	Thumbprint string `json:",omitempty"`
	Insecure   bool
	// ComputeResource, ResourcePool and VMFolder are inventory paths.
	ComputeResource string
	ResourcePool    string
	VMFolder        string
	// ImageStore is the image store's directory, "[DATASTORE] PATH".
	ImageStore string
	// VolumeStores are the datastore volume stores,
	// "NAME:[DATASTORE] PATH".
	VolumeStores []string `json:",omitempty"`
	// BridgeNetwork and PublicNetwork are portgroup names.
	BridgeNetwork string `json:",omitempty"`
	PublicNetwork string `json:",omitempty"`
	// CPULimitMHz and MemoryLimitMiB are the pool's limits; 0 is none.
	CPULimitMHz    int64
	MemoryLimitMiB int64
	// Containers says where container VMs run: "local QEMU" in this
	// release (the daemon does not use vSphere yet).
	Containers string
}

// vsphereInfo is v for inspect; nil for nil.
func vsphereInfo(v *VSphere) *VSphereInfo {
	if v == nil {
		return nil
	}
	in := &VSphereInfo{
		Target: v.Target, Thumbprint: v.Thumbprint, Insecure: v.Insecure,
		ComputeResource: v.ComputeResource, ResourcePool: v.ResourcePool, VMFolder: v.VMFolder,
		ImageStore: v.ImageStorePath, BridgeNetwork: v.BridgeNetwork, PublicNetwork: v.PublicNetwork,
		CPULimitMHz: v.CPULimitMHz, MemoryLimitMiB: v.MemoryLimitMiB,
		Containers: "local QEMU (the daemon does not run containers on vSphere yet)",
	}
	for _, s := range v.VolumeStores {
		in.VolumeStores = append(in.VolumeStores, s.Name+":"+s.Path)
	}
	return in
}

// Endpoint is how clients reach the VCH.
type Endpoint struct {
	// DockerHost is the DOCKER_HOST value.
	DockerHost string
	TLS        bool
	TLSVerify  bool
	// CertPath is the DOCKER_CERT_PATH value ("" without TLS or without a
	// generated client bundle).
	CertPath string `json:",omitempty"`
	// AdminSocket is the local root-only socket (no TLS).
	AdminSocket string
}

// Versions are the VCH's versions.
type Versions struct {
	// VCH is the version of the vch that created or last configured it.
	VCH string
	// Daemon and APIVersion are what the running daemon reports ("" when
	// it does not answer).
	Daemon     string `json:",omitempty"`
	APIVersion string `json:",omitempty"`
}

// LimitsInfo are the limits in force; 0 means no limit, and the container
// defaults are filled in.
type LimitsInfo struct {
	Containers                int
	MemoryMiB                 int
	CPUs                      int
	DefaultContainerMemoryMiB int
	DefaultContainerCPUs      int
	StorageQuotaBytes         int64 `json:",omitempty"`
	// VMTemplates: container VMs are restored from templates.
	VMTemplates bool
	// MemoryMerge: restored VMs' memory is mergeable for the host's KSM.
	MemoryMerge bool `json:",omitempty"`
}

// LoggingInfo is the containers' default logging (the daemon's
// --log-driver and --log-opt).
type LoggingInfo struct {
	// Driver is json-file, local or none.
	Driver string
	// Opts are the default driver's options; absent: none.
	Opts map[string]string `json:",omitempty"`
}

// RegistriesInfo is the pull policy in force.
type RegistriesInfo struct {
	Insecure  []string
	Whitelist []string
	// CAFiles are the extra registry CAs (--registry-ca).
	CAFiles []string `json:",omitempty"`
}

// Usage is what the VCH's containers hold now.
type Usage struct {
	Containers int
	Running    int
	// MemTotalMiB and NCPU are the totals docker info reports (the
	// budget when one is set, else the host's).
	MemTotalMiB int
	NCPU        int
	// StorageUsedBytes is the host disk space the VCH's images,
	// containers and volumes take (what the quota counts).
	StorageUsedBytes int64
}

// ServiceInfo says how the VCH is kept running.
type ServiceInfo struct {
	Kind string
	// Unit is the systemd unit file (systemd only).
	Unit string `json:",omitempty"`
}

// Paths are the VCH's files.
type Paths struct {
	StateDir string
	Config   string
	Root     string
	CertDir  string `json:",omitempty"`
	Logs     string
	// Credentials is a vSphere VCH's credentials file (mode 0600).
	Credentials string `json:",omitempty"`
}

// DialHost is the DOCKER_HOST clients use: the endpoint, except that an
// unspecified listen address (0.0.0.0, ::) becomes the first --tls-cname,
// or else this host's name, which the server certificate also names.
func DialHost(c Config) string {
	u, err := url.Parse(c.Host)
	if err != nil || u.Scheme != "tcp" {
		return c.Host
	}
	ip := net.ParseIP(u.Hostname())
	if u.Hostname() != "" && (ip == nil || !ip.IsUnspecified()) {
		return c.Host
	}
	name := ""
	if len(c.TLS.CNames) > 0 {
		name = c.TLS.CNames[0]
	} else if hn, err := os.Hostname(); err == nil {
		name = hn
	}
	if name == "" {
		return c.Host
	}
	return "tcp://" + net.JoinHostPort(name, u.Port())
}

// apiClient speaks to a daemon's admin socket.
type apiClient struct{ http *http.Client }

func newAPIClient(socket string) apiClient {
	return apiClient{http: &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		},
		Timeout: pingTimeout,
	}}
}

// get GETs path and decodes the JSON answer into v (nil: discard it).
// Unavailable if the daemon does not answer.
func (c apiClient) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://vch"+path, nil)
	if err != nil {
		return fmt.Errorf("vch: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("vch: the daemon does not answer: %w: %w", err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("vch: read %s: %w: %w", path, err, errdefs.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("vch: GET %s: %s: %s: %w", path, resp.Status, strings.TrimSpace(string(body)), errdefs.ErrUnavailable)
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("vch: decode %s: %w", path, err)
	}
	return nil
}

// apiContainer is the part of GET /containers/json that vch reads.
type apiContainer struct {
	ID    string   `json:"Id"`
	Names []string `json:"Names"`
	State string   `json:"State"`
}

// runningContainers returns the names of the containers that run.
func (c apiClient) runningContainers(ctx context.Context) ([]string, error) {
	var cs []apiContainer
	if err := c.get(ctx, "/containers/json", &cs); err != nil {
		return nil, err
	}
	var names []string
	for _, ct := range cs {
		n := ct.ID
		if len(ct.Names) > 0 {
			n = strings.TrimPrefix(ct.Names[0], "/")
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// status gathers one VCH's Status; the daemon is asked only if it answers.
func (m *Manager) status(ctx context.Context, l Layout, c Config) Status {
	st := Status{
		Name: c.Name, Created: c.Created, State: StateStopped,
		Endpoint: Endpoint{
			DockerHost: DialHost(c), TLS: c.TLS.Enabled && strings.HasPrefix(c.Host, "tcp://"),
			TLSVerify:   c.TLS.Enabled && c.TLS.Verify && strings.HasPrefix(c.Host, "tcp://"),
			AdminSocket: "unix://" + l.AdminSocket(),
		},
		Versions: Versions{VCH: c.VCHVersion},
		Limits: LimitsInfo{
			Containers: c.Limits.Containers, MemoryMiB: c.Limits.MemoryMiB, CPUs: c.Limits.CPUs,
			DefaultContainerMemoryMiB: cmp.Or(c.Limits.DefaultContainerMemoryMiB, vch.DefaultMemoryMiB),
			DefaultContainerCPUs:      cmp.Or(c.Limits.DefaultContainerCPUs, 1),
			StorageQuotaBytes:         c.Limits.StorageQuotaBytes,
			VMTemplates:               !c.Limits.NoVMTemplates,
			MemoryMerge:               c.Limits.MemoryMerge,
		},
		Registries:   RegistriesInfo{Insecure: c.Registries.Insecure, Whitelist: c.Registries.Whitelist, CAFiles: c.Registries.CAFiles},
		Logging:      LoggingInfo{Driver: cmp.Or(c.LogDriver, "json-file"), Opts: c.LogOpts},
		VolumeStores: c.VolumeStores,
		VSphere:      vsphereInfo(c.VSphere),
		Service:      ServiceInfo{Kind: c.Service},
		Paths: Paths{
			StateDir: l.Dir, Config: l.ConfigFile(), Root: l.Root(), Logs: l.Logs(),
		},
	}
	if c.VSphere != nil {
		st.Paths.Credentials = l.CredentialsFile()
	}
	if c.TLS.Enabled {
		st.Paths.CertDir = c.TLS.CertDir
		if _, err := os.Stat(filepath.Join(c.TLS.CertDir, "client")); err == nil && st.Endpoint.TLS {
			st.Endpoint.CertPath = filepath.Join(c.TLS.CertDir, "client")
		}
	}
	svc := m.service(l, c)
	if s, ok := svc.(*systemdService); ok {
		st.Service.Unit = s.unitPath()
	}
	if pid := readPID(l.SupervisorPIDFile()); pid > 0 && isOurs(pid, "supervise", c.Name) {
		st.SupervisorPid = pid
	}
	active, _ := svc.Active()
	api := newAPIClient(l.AdminSocket())
	var ver struct {
		Version    string `json:"Version"`
		APIVersion string `json:"ApiVersion"`
	}
	if err := api.get(ctx, "/version", &ver); err != nil {
		if active {
			st.State = StateStarting
		}
		return st
	}
	st.State = StateRunning
	st.Versions.Daemon, st.Versions.APIVersion = ver.Version, ver.APIVersion
	if pid := readPID(l.DaemonPIDFile()); pid > 0 && isOurs(pid, "daemon", l.Root()) {
		st.Pid = pid
	}
	var info struct {
		Containers        int   `json:"Containers"`
		ContainersRunning int   `json:"ContainersRunning"`
		NCPU              int   `json:"NCPU"`
		MemTotal          int64 `json:"MemTotal"`
		DriverStatus      [][2]string
	}
	if err := api.get(ctx, "/info", &info); err == nil {
		st.Usage = &Usage{Containers: info.Containers, Running: info.ContainersRunning, NCPU: info.NCPU, MemTotalMiB: int(info.MemTotal >> 20)}
		for _, kv := range info.DriverStatus {
			if kv[0] == "Storage Used Bytes" {
				st.Usage.StorageUsedBytes, _ = strconv.ParseInt(kv[1], 10, 64)
			}
		}
	}
	return st
}
