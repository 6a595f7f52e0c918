package seccomp

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const chownProfile = `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chown","chown32","fchownat","lchown","fchown"],"action":"SCMP_ACT_ERRNO"}]}`

func TestPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, profile, wantErr string
	}{
		{"deny chown", chownProfile, ""},
		{"allow list", `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}`, ""},
		{"args", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_NE"}]}]}`, ""},
		{"one-bit mask", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":268435456,"valueTwo":268435456,"op":"SCMP_CMP_MASKED_EQ"}]}]}`, ""},
		{"only unknown names", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chown32"],"action":"SCMP_ACT_ERRNO"}]}`, ""},
		{"wide mask", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":3,"valueTwo":1,"op":"SCMP_CMP_MASKED_EQ"}]}]}`, "SCMP_CMP_MASKED_EQ of mask 0x3 to 0x1 is not supported"},
		{"bad action", `{"defaultAction":"SCMP_ACT_NOTIFY"}`, `action "SCMP_ACT_NOTIFY" is not supported`},
		{"bad index", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}`, "argument index 7"},
		{"not JSON", `{`, "seccomp profile:"},
	} {
		_, err := Policy([]byte(tc.profile))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestLoad installs the chown-denying profile in a child process (a
// filter cannot be taken back) and checks that chown now fails with EPERM
// while other calls work.
func TestLoad(t *testing.T) {
	if path := os.Getenv("SECCOMP_TEST_FILE"); path != "" {
		p, err := Policy([]byte(chownProfile))
		if err != nil {
			t.Fatal(err)
		}
		if err := Load(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 0, 0); !errors.Is(err, syscall.EPERM) {
			t.Fatalf("chown under the filter: %v, want EPERM", err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("stat under the filter: %v", err)
		}
		return
	}
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("installing a filter without no_new_privs needs CAP_SYS_ADMIN")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoad$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SECCOMP_TEST_FILE="+f)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
