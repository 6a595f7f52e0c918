package image

import (
	"reflect"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseChanges(t *testing.T) {
	tests := []struct {
		name    string
		changes []string
		want    ocispec.ImageConfig
		wantErr string
	}{
		{name: "cmd exec form", changes: []string{`CMD ["sh"]`}, want: ocispec.ImageConfig{Cmd: []string{"sh"}}},
		{name: "cmd shell form", changes: []string{`CMD echo hi`}, want: ocispec.ImageConfig{Cmd: []string{"/bin/sh", "-c", "echo hi"}}},
		{name: "entrypoint", changes: []string{`ENTRYPOINT ["/bin/app","-v"]`}, want: ocispec.ImageConfig{Entrypoint: []string{"/bin/app", "-v"}}},
		{name: "env forms", changes: []string{`ENV A=b`, `ENV C d e`, `ENV X="1 2" Y=3`, `ENV A=z`}, want: ocispec.ImageConfig{Env: []string{"A=z", "C=d e", "X=1 2", "Y=3"}}},
		{name: "workdir user stopsignal", changes: []string{"WORKDIR /srv", "USER nobody", "STOPSIGNAL SIGQUIT"}, want: ocispec.ImageConfig{WorkingDir: "/srv", User: "nobody", StopSignal: "SIGQUIT"}},
		{name: "expose label", changes: []string{"EXPOSE 80 53/udp", `LABEL a=b`}, want: ocispec.ImageConfig{ExposedPorts: map[string]struct{}{"80/tcp": {}, "53/udp": {}}, Labels: map[string]string{"a": "b"}}},
		{name: "lowercase instruction", changes: []string{`cmd ["sh"]`}, want: ocispec.ImageConfig{Cmd: []string{"sh"}}},
		{name: "unsupported", changes: []string{"RUN true"}, wantErr: "run is not a valid change command"},
		{name: "env expands against the env so far", changes: []string{"ENV PATH=/x", "ENV PATH=/y:$PATH Q=${PATH}"}, want: ocispec.ImageConfig{Env: []string{"PATH=/y:/x", "Q=/x"}}},
		{name: "single quotes do not expand", changes: []string{"ENV A=1", `ENV B='$A' C="$A"`}, want: ocispec.ImageConfig{Env: []string{"A=1", "B=$A", "C=1"}}},
		{name: "relative workdir", changes: []string{"WORKDIR /srv", "WORKDIR app"}, want: ocispec.ImageConfig{WorkingDir: "/srv/app"}},
		{name: "volume", changes: []string{`VOLUME ["/data", "/logs"]`, "VOLUME /cache"}, want: ocispec.ImageConfig{Volumes: map[string]struct{}{"/data": {}, "/logs": {}, "/cache": {}}}},
		{name: "stopsignal number and alias", changes: []string{"STOPSIGNAL 9", "STOPSIGNAL SIGIOT"}, want: ocispec.ImageConfig{StopSignal: "SIGIOT"}},
		{name: "stopsignal invalid", changes: []string{"STOPSIGNAL NOPE"}, wantErr: "Invalid signal: NOPE"},
		{name: "stopsignal empty", changes: []string{"STOPSIGNAL"}, wantErr: "STOPSIGNAL requires exactly one argument"},
		{name: "expose range and protocols", changes: []string{"EXPOSE 8000-8002/udp 9/SCTP 7/"},
			want: ocispec.ImageConfig{ExposedPorts: map[string]struct{}{"8000/udp": {}, "8001/udp": {}, "8002/udp": {}, "9/sctp": {}, "7/tcp": {}}}},
		{name: "expose not a number", changes: []string{"EXPOSE abc"}, wantErr: "invalid containerPort: abc"},
		{name: "expose too large", changes: []string{"EXPOSE 99999"}, wantErr: "invalid containerPort: 99999"},
		{name: "expose negative", changes: []string{"EXPOSE -1"}, wantErr: "invalid containerPort: -1"},
		{name: "expose reversed range", changes: []string{"EXPOSE 90-80"}, wantErr: "invalid containerPort: 90-80"},
		{name: "expose bad protocol", changes: []string{"EXPOSE 80/icmp"}, wantErr: "invalid proto: icmp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := ParseChanges(tt.changes)
			var got ocispec.ImageConfig
			if err == nil {
				err = ch.Apply(&got)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestJoinRef(t *testing.T) {
	tests := []struct{ repo, tag, want string }{
		{"busybox", "", "busybox:latest"},
		{"busybox", "1.36", "busybox:1.36"},
		{"docker.io/library/busybox", "latest", "busybox:latest"},
		{"127.0.0.1:5000/busybox", "v1", "127.0.0.1:5000/busybox:v1"},
		{"busybox", "sha256:" + "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2", "busybox@sha256:a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2"},
	}
	for _, tt := range tests {
		got, err := joinRef(tt.repo, tt.tag)
		if err != nil || got != tt.want {
			t.Errorf("joinRef(%q, %q) = %q, %v; want %q", tt.repo, tt.tag, got, err, tt.want)
		}
	}
	if _, err := joinRef("UPPER", ""); err == nil || err.Error() != "invalid reference format" {
		t.Errorf("joinRef(UPPER) err = %v", err)
	}
}
