// Package deploy is the operator's side of a VCH: it deploys one on this
// host, keeps it running as a service, reports on it and removes it, as
// vic-machine did for vSphere. Its verbs are Create, List, Inspect,
// Configure, Start, Stop and Delete on a [Manager], and [Supervise], the
// loop that keeps a VCH's daemon running where systemd does not.
//
// Each VCH lives in its own state directory, BASE/NAME (BASE defaults to
// /var/lib/vch), mode 0700:
//
//	config.json        the VCH's [Config]: endpoint, TLS, limits, registries
//	certs/             CA, server and client certificates (package certs),
//	  client/          unless --tls-cert-path put them elsewhere; client/
//	                   is the DOCKER_CERT_PATH to hand to the team
//	root/              the daemon's --root: images, containers, disks
//	docker.sock        the daemon's local admin socket (root only, no TLS)
//	daemon.pid         the daemon's PID while it runs
//	supervise.pid      the supervisor's PID (when not under systemd)
//	logs/daemon.log    the daemon's output
//	logs/supervise.log the supervisor's output
//	target.json        a vSphere VCH's target credentials, mode 0600
//
// Under systemd the unit is /etc/systemd/system/vch-NAME.service. Delete
// removes exactly these (and generated certificates wherever they were
// written), nothing else.
//
// A vSphere VCH (CreateOptions.VSphere, vch create --target) also has a
// resource pool, a VM folder, an image store directory and datastore
// volume store directories on its target, made by Create through the
// vsphere driver and removed by Delete; its credentials are in
// target.json alone. Its daemon runs the container VMs there, with the
// driver configuration SaveConfig writes to vsphere.json.
//
// It does not serve the Engine API (package vch and the personality do);
// it runs `vch daemon` with flags built from the Config ([DaemonArgs]).
package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/containerd/errdefs"
)

// Defaults, each with its reason.
const (
	// DefaultBaseDir holds one state directory per VCH, like dockerd's
	// /var/lib/docker.
	DefaultBaseDir = "/var/lib/vch"
	// DefaultPort is Docker's registered port for the API over TLS.
	DefaultPort = 2376
	// portSearch is how many ports above DefaultPort are tried when it is
	// taken: enough for a host full of VCHs.
	portSearch = 100
	// maxSocketPath is the longest unix socket path Linux accepts
	// (sun_path is 108 bytes, NUL included).
	maxSocketPath = 107
	// configSchema is config.json's schema version; a newer file is refused.
	configSchema = 1
)

// nameRE is what a VCH name may be: it becomes a directory, a systemd unit
// name and a docker context name.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ValidateName returns InvalidArgument unless name is 1 to 63 letters,
// digits, '_', '.' or '-', starting with a letter or digit.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("vch: invalid VCH name %q: use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Config is one VCH as deployed, persisted as config.json.
type Config struct {
	// Schema is config.json's schema version.
	Schema int `json:"schema"`
	// Name is the VCH's name.
	Name string `json:"name"`
	// Created is when `vch create` made it.
	Created time.Time `json:"created"`
	// VCHVersion is the version of the vch that created or last configured it.
	VCHVersion string `json:"vch_version"`
	// Binary is the absolute path of the vch binary the service runs.
	Binary string `json:"binary"`
	// Host is the endpoint handed to users (DOCKER_HOST):
	// tcp://ADDR:PORT or unix:///PATH.
	Host string `json:"host"`
	// TLS is the endpoint's TLS setup.
	TLS TLS `json:"tls"`
	// Accel is the accelerator: auto, kvm or tcg.
	Accel string `json:"accel"`
	// Limits are the VCH's resource limits.
	Limits Limits `json:"limits"`
	// Registries is the pull policy.
	Registries Registries `json:"registries"`
	// VolumeStores are the --volume-store values: "NAME:PATH" (PATH
	// absolute, on this host) and, on a vSphere VCH, "NAME:ds://DATASTORE/PATH"
	// (resolved in VSphere.VolumeStores; the daemon gets only the local
	// ones: it has no volumes on datastores yet).
	// Delete leaves local directories (and the volumes in them); see
	// Manager.Delete for datastore ones.
	VolumeStores []string `json:"volume_stores,omitempty"`
	// VSphere is the vSphere deployment of a VCH made with --target; nil
	// for a local VCH. Its daemon runs the container VMs there
	// (VSphereConfigFile).
	VSphere *VSphere `json:"vsphere,omitempty"`
	// Service is how the daemon is kept running: "systemd" or "process".
	Service string `json:"service"`
	// LogLevel is the daemon's --log-level.
	LogLevel string `json:"log_level"`
	// LogDriver and LogOpts are the daemon's --log-driver and --log-opt:
	// the logging driver and options of containers that name none
	// (vch.Config.LogDriver); empty: json-file with vch's bounds.
	LogDriver string            `json:"log_driver,omitempty"`
	LogOpts   map[string]string `json:"log_opts,omitempty"`
}

// TLS is a VCH's TLS setup.
type TLS struct {
	// Enabled serves TCP endpoints over TLS.
	Enabled bool `json:"enabled"`
	// Verify requires and verifies client certificates (mutual TLS).
	Verify bool `json:"verify"`
	// CertDir holds the certificates (see package certs).
	CertDir string `json:"cert_dir,omitempty"`
	// CNames are extra names in the server certificate (--tls-cname).
	CNames []string `json:"cnames,omitempty"`
	// Generated reports that vch generated the certificates (so Delete
	// removes them); false when the operator supplied them.
	Generated bool `json:"generated"`
	// CertDirCreated reports that vch created CertDir itself.
	CertDirCreated bool `json:"cert_dir_created"`
}

// Limits are a VCH's resource limits; 0 means none (or the default).
type Limits struct {
	// Containers caps how many containers may exist.
	Containers int `json:"containers"`
	// MemoryMiB is the guest RAM all running container VMs share, MiB.
	MemoryMiB int `json:"memory_mib"`
	// CPUs is the vCPUs all running container VMs share.
	CPUs int `json:"cpus"`
	// DefaultContainerMemoryMiB is a VM's RAM without -m; default 256.
	DefaultContainerMemoryMiB int `json:"default_container_memory_mib"`
	// DefaultContainerCPUs is a VM's vCPUs without --cpus; default 1.
	DefaultContainerCPUs int `json:"default_container_cpus"`
	// StorageQuotaBytes caps the host disk space of images, containers
	// and volumes together (--storage-quota).
	StorageQuotaBytes int64 `json:"storage_quota_bytes,omitempty"`
	// NoVMTemplates boots every container VM cold (--vm-templates=false).
	NoVMTemplates bool `json:"no_vm_templates,omitempty"`
	// MemoryMerge marks restored VMs' memory mergeable for the host's
	// KSM (--memory-merge; the daemon's flag of that name).
	MemoryMerge bool `json:"memory_merge,omitempty"`
}

// Registries is a VCH's pull policy (see storage.Registries for the
// entry syntax).
type Registries struct {
	// Insecure registries are used without verified TLS.
	Insecure []string `json:"insecure,omitempty"`
	// Whitelist, when non-empty, is the only registries pulls may use.
	Whitelist []string `json:"whitelist,omitempty"`
	// CAFiles are PEM files of extra CAs trusted for TLS registries
	// (--registry-ca), absolute paths.
	CAFiles []string `json:"ca_files,omitempty"`
}

// Layout names the files of one VCH's state directory.
type Layout struct {
	// Dir is the state directory, BASE/NAME.
	Dir string
}

// Files and directories of a state directory.
func (l Layout) ConfigFile() string    { return filepath.Join(l.Dir, "config.json") }
func (l Layout) Root() string          { return filepath.Join(l.Dir, "root") }
func (l Layout) CertDir() string       { return filepath.Join(l.Dir, "certs") }
func (l Layout) Logs() string          { return filepath.Join(l.Dir, "logs") }
func (l Layout) DaemonLog() string     { return filepath.Join(l.Dir, "logs", "daemon.log") }
func (l Layout) SuperviseLog() string  { return filepath.Join(l.Dir, "logs", "supervise.log") }
func (l Layout) AdminSocket() string   { return filepath.Join(l.Dir, "docker.sock") }
func (l Layout) DaemonPIDFile() string { return filepath.Join(l.Dir, "daemon.pid") }
func (l Layout) SupervisorPIDFile() string {
	return filepath.Join(l.Dir, "supervise.pid")
}

// CredentialsFile holds a vSphere VCH's target credentials (JSON
// {"username", "password"}), mode 0600; nothing else vch writes holds
// them.
func (l Layout) CredentialsFile() string { return filepath.Join(l.Dir, "target.json") }

// VSphereConfigFile holds a vSphere VCH's driver configuration for its
// daemon (--vsphere-config; DriverConfig), without the credentials;
// SaveConfig writes it.
func (l Layout) VSphereConfigFile() string { return filepath.Join(l.Dir, "vsphere.json") }

// entries are the names Delete removes from a state directory (the cert
// directory only when vch generated it there).
func (l Layout) entries() []string {
	return []string{"config.json", "root", "logs", "docker.sock", "daemon.pid", "supervise.pid", "target.json", "target.json.tmp", "vsphere.json", "vsphere.json.tmp"}
}

// LoadConfig reads dir's config.json. NotFound if there is none;
// InvalidArgument if it does not parse or has a newer schema.
func LoadConfig(l Layout) (Config, error) {
	b, err := os.ReadFile(l.ConfigFile())
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("vch: no VCH in %s: %w", l.Dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return Config{}, fmt.Errorf("vch: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("vch: %s: %w: %w", l.ConfigFile(), err, errdefs.ErrInvalidArgument)
	}
	if c.Schema > configSchema {
		return Config{}, fmt.Errorf("vch: %s has schema %d; this vch reads up to %d (upgrade vch): %w", l.ConfigFile(), c.Schema, configSchema, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// SaveConfig writes c to dir's config.json atomically (mode 0600) and,
// for a vSphere VCH, its daemon's driver configuration to
// VSphereConfigFile (removed for a local one).
func SaveConfig(l Layout, c Config) error {
	c.Schema = configSchema
	if c.VSphere != nil {
		if err := writeJSON(l.VSphereConfigFile(), DriverConfig(c.Name, c.VSphere)); err != nil {
			return err
		}
	} else if err := os.Remove(l.VSphereConfigFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vch: %w", err)
	}
	return writeJSON(l.ConfigFile(), c)
}

// writeJSON writes v to path atomically (mode 0600).
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("vch: encode %s: %w", filepath.Base(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("vch: write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("vch: write %s: %w", filepath.Base(path), err)
	}
	return nil
}
