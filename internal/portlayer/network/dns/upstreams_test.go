package dns

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestHostUpstreams(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{
			name:    "plain",
			content: "nameserver 192.0.2.1\nnameserver 192.0.2.2\n",
			want:    []string{"192.0.2.1:53", "192.0.2.2:53"},
		},
		{
			name: "comments, other directives, blanks",
			content: "# generated\n; also a comment\n\nsearch example.com\noptions ndots:2\n" +
				"nameserver 192.0.2.1 # trailing\n  nameserver\t192.0.2.2\n#nameserver 192.0.2.9\n",
			want: []string{"192.0.2.1:53", "192.0.2.2:53"},
		},
		{
			name:    "loopback kept (the daemon forwards from the host)",
			content: "nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\n",
			want:    []string{"127.0.0.53:53", "[::1]:53", "192.0.2.1:53"},
		},
		{
			name:    "IPv6",
			content: "nameserver 2001:db8::1\nnameserver fe80::1%eth0\n",
			want:    []string{"[2001:db8::1]:53", "[fe80::1%eth0]:53"},
		},
		{
			name:    "invalid and incomplete lines",
			content: "nameserver\nnameserver bogus\nnameserver 192.0.2.300\nnameservers 192.0.2.5\nnameserver 192.0.2.1\n",
			want:    []string{"192.0.2.1:53"},
		},
		{
			name:    "only systemd-resolved stub",
			content: "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
			want:    []string{"127.0.0.53:53"},
		},
		{name: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := HostUpstreams(path); !slices.Equal(got, tt.want) {
				t.Errorf("HostUpstreams = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if got := HostUpstreams(filepath.Join(t.TempDir(), "nope")); got != nil {
			t.Errorf("HostUpstreams = %q, want nil", got)
		}
	})
}
