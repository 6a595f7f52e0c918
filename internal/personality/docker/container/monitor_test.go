package container

import (
	"slices"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParsePsArgs(t *testing.T) {
	tests := []struct {
		args    string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{"-ef", nil, false},
		{"aux", nil, false},
		{"-o pid,comm", []string{"pid", "comm"}, false},
		{"-eo pid,ppid,args", []string{"pid", "ppid", "args"}, false},
		{"-o pid, user", []string{"pid", "user"}, false},
		{"-o", nil, true},
		{"-o pid,vsz", nil, true},
		{"--forest", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			got, err := ParsePsArgs(tt.args)
			if tt.wantErr {
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("ParsePsArgs(%q) = %v, %v; want %v", tt.args, got, err, tt.want)
			}
		})
	}
}
