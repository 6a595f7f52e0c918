package image

import (
	"encoding/base64"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/portlayer"
)

func TestHistory(t *testing.T) {
	t0 := time.Unix(1000, 0)
	img := portlayer.Image{
		ID: "sha256:top", RepoTags: []string{"a:1"}, Layers: []string{"sha256:l1", "sha256:l2"}, LayerSizes: []int64{10, 20},
		Config: ocispec.Image{History: []ocispec.History{
			{Created: &t0, CreatedBy: "ADD base"},
			{Created: &t0, CreatedBy: "ENV x=1", EmptyLayer: true},
			{Created: &t0, CreatedBy: "RUN make", Comment: "c"},
		}},
	}
	h, err := History(img)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id, by string
		size   int64
	}{{"sha256:top", "RUN make", 20}, {"<missing>", "ENV x=1", 0}, {"<missing>", "ADD base", 10}}
	if len(h) != len(want) {
		t.Fatalf("%d entries", len(h))
	}
	for i, w := range want {
		if h[i].ID != w.id || h[i].CreatedBy != w.by || h[i].Size != w.size || h[i].Created != 1000 {
			t.Errorf("entry %d = %+v, want %+v", i, h[i], w)
		}
	}
	if len(h[0].Tags) != 1 || h[0].Comment != "c" {
		t.Errorf("top entry %+v", h[0])
	}
	img.Config.History = append(img.Config.History, ocispec.History{CreatedBy: "one too many"})
	if _, err := History(img); err == nil {
		t.Error("more non-empty history entries than layers: no error")
	}
}

func TestSharedSizes(t *testing.T) {
	imgs := []portlayer.Image{
		{ID: "a", Layers: []string{"l1", "l2"}, LayerSizes: []int64{100, 5}},
		{ID: "b", Layers: []string{"l1", "l3"}, LayerSizes: []int64{100, 7}},
		{ID: "c", Layers: []string{"l4"}, LayerSizes: []int64{1}},
	}
	shared, total := SharedSizes(imgs)
	if shared["a"] != 100 || shared["b"] != 100 || shared["c"] != 0 || total != 113 {
		t.Fatalf("shared %v total %d", shared, total)
	}
}

func TestRegistryAuth(t *testing.T) {
	enc := func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, header string
		want         portlayer.RegistryAuth
		wantErr      bool
	}{
		{name: "empty", header: ""},
		{name: "user and password", header: enc(`{"username":"u","password":"p","serveraddress":"r"}`), want: portlayer.RegistryAuth{Username: "u", Password: "p"}},
		{name: "legacy auth field", header: enc(`{"auth":"` + base64.StdEncoding.EncodeToString([]byte("u:p:q")) + `"}`), want: portlayer.RegistryAuth{Username: "u", Password: "p:q"}},
		{name: "token", header: enc(`{"identitytoken":"tok"}`), want: portlayer.RegistryAuth{IdentityToken: "tok"}},
		{name: "not base64", header: "%%%", wantErr: true},
		{name: "not json", header: enc("nope"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RegistryAuth(tc.header)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}
}
