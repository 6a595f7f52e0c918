package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/spf13/pflag"
)

// run executes the vch command line with a private state directory.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--state-dir", t.TempDir()}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestFlagValidation(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // a piece of the error
	}{
		{name: "create needs a name", args: []string{"create"}, want: "accepts 1 arg"},
		{name: "create bad name", args: []string{"create", "a/b"}, want: "invalid VCH name"},
		{name: "cname without TLS", args: []string{"create", "x", "--no-tls", "--tls-cname", "vch.example.com"}, want: "need TLS"},
		{name: "cert path without TLS", args: []string{"create", "x", "--tls=false", "--tls-cert-path", "/tmp"}, want: "need TLS"},
		{name: "no verify without TLS", args: []string{"create", "x", "--no-tls", "--no-tlsverify"}, want: "need TLS"},
		{name: "bad memory", args: []string{"create", "x", "--memory", "lots"}, want: `--memory "lots"`},
		{name: "negative memory", args: []string{"create", "x", "--memory", "-5"}, want: `--memory "-5"`},
		{name: "memory below minimum", args: []string{"create", "x", "--memory", "32m"}, want: "at least 64 MiB"},
		{name: "bad default memory", args: []string{"create", "x", "--default-container-memory", "1k"}, want: `--default-container-memory "1k": less than 1 MiB`},
		{name: "bad service", args: []string{"create", "x", "--service", "init"}, want: `--service "init"`},
		{name: "bad accel", args: []string{"create", "x", "--accel", "hvf"}, want: `--accel "hvf"`},
		{name: "non-loopback without TLS", args: []string{"create", "x", "--no-tls", "-H", "tcp://0.0.0.0:2375"}, want: "loopback addresses only"},
		{name: "bad registry CA", args: []string{"create", "x", "--registry-ca", "/nonexistent/ca.pem"}, want: "--registry-ca"},
		{name: "bad volume store", args: []string{"create", "x", "--volume-store", "fast"}, want: "want NAME:PATH"},
		{name: "bad whitelist", args: []string{"create", "x", "--whitelist-registry", "https://r.example.com"}, want: "want host, host:port"},
		{name: "configure nothing", args: []string{"configure", "x"}, want: "nothing to change"},
		{name: "configure unknown", args: []string{"configure", "x", "--cpu", "2"}, want: "no such VCH: x"},
		{name: "inspect unknown", args: []string{"inspect", "x"}, want: "no such VCH: x"},
		{name: "delete unknown", args: []string{"delete", "x"}, want: "no such VCH: x"},
		{name: "daemon needs root and host", args: []string{"daemon"}, want: `required flag(s) "host", "root" not set`},
		{name: "create bad log driver", args: []string{"create", "x", "--log-driver", "syslog"}, want: `failed to set log opts: logging driver "syslog" is not supported by vch`},
		{name: "create bad log opt", args: []string{"create", "x", "--log-opt", "max-size"}, want: `--log-opt "max-size": want KEY=VALUE`},
		{name: "daemon unknown log opt", args: []string{"daemon", "--root", "/nonexistent/vch-root", "-H", "unix:///nonexistent/vch.sock", "--log-opt", "bogus=1"}, want: "failed to set log opts: unknown log opt 'bogus' for json-file log driver"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("vch %s: %v (output %q), want an error with %q", strings.Join(tc.args, " "), err, out, tc.want)
			}
		})
	}
}

func TestParseMiB(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "", want: 0},
		{in: "4096", want: 4096},
		{in: "512m", want: 512},
		{in: "4g", want: 4096},
		{in: "4GiB", want: 4096},
		{in: "1.5g", want: 1536},
		{in: "-1", wantErr: true},
		{in: "100k", wantErr: true},
		{in: "four", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseMiB("--memory", tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseMiB(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("class of %v", err)
			}
		})
	}
}

func TestEmptyList(t *testing.T) {
	out, err := run(t, "ls")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "NAME   STATE   DOCKER_HOST   VERSION" {
		t.Errorf("ls of an empty state dir: %q", out)
	}
}

func TestHelp(t *testing.T) {
	for _, c := range []string{"create", "ls", "inspect", "configure", "start", "stop", "delete", "supervise", "daemon", "version"} {
		t.Run(c, func(t *testing.T) {
			out, err := run(t, c, "--help")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "Usage:") {
				t.Errorf("vch %s --help printed no usage:\n%s", c, out)
			}
		})
	}
}

// TestDaemonTLSFlags: dockerd's rules for --tls and --tlsverify.
func TestDaemonTLSFlags(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name    string
		args    []string
		wantTLS bool
	}{
		{name: "no TLS", args: nil},
		{name: "tls implies verify", args: []string{"--tls", "--tlscacert", missing}, wantTLS: true},
		{name: "tlsverify", args: []string{"--tlsverify", "--tlscacert", missing}, wantTLS: true},
		{name: "tlsverify=false still TLS", args: []string{"--tlsverify=false", "--tlscert", missing}, wantTLS: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Unsetenv("DOCKER_TLS_VERIFY")
			fs := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
			var tf tlsFlags
			tf.install(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := tf.config(fs)
			if !tc.wantTLS {
				if cfg != nil || err != nil {
					t.Fatalf("config = %v, %v; want no TLS", cfg, err)
				}
				return
			}
			// The files are missing, so asking for TLS must fail on them.
			if err == nil || !strings.Contains(err.Error(), "missing.pem") && !strings.Contains(err.Error(), "key pair") {
				t.Fatalf("config: %v, want an error about the missing files", err)
			}
		})
	}
}
