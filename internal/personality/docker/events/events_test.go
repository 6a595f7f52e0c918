package events

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
)

// TestMessageLegacyFields: container and image events carry dockerd's
// deprecated status, id and from fields (moby 28), others do not; the
// JSON keys come in dockerd's order.
func TestMessageLegacyFields(t *testing.T) {
	at := time.Unix(1700000000, 5)
	for _, tc := range []struct {
		e    portlayer.Event
		want string
	}{
		{portlayer.Event{Type: "container", Action: "start", ID: "c1", Attributes: map[string]string{"image": "busybox", "name": "x"}, Time: at},
			`{"status":"start","id":"c1","from":"busybox","Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"image":"busybox","name":"x"}},"scope":"local","time":1700000000,"timeNano":1700000000000000005}`},
		{portlayer.Event{Type: "image", Action: "tag", ID: "sha256:ab", Attributes: map[string]string{"name": "busybox:x"}, Time: at},
			`{"status":"tag","id":"sha256:ab","Type":"image","Action":"tag","Actor":{"ID":"sha256:ab","Attributes":{"name":"busybox:x"}},"scope":"local","time":1700000000,"timeNano":1700000000000000005}`},
		{portlayer.Event{Type: "volume", Action: "create", ID: "v", Attributes: map[string]string{"driver": "local"}, Time: at},
			`{"Type":"volume","Action":"create","Actor":{"ID":"v","Attributes":{"driver":"local"}},"scope":"local","time":1700000000,"timeNano":1700000000000000005}`},
	} {
		b, err := json.Marshal(Message(tc.e))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s %s:\n got %s\nwant %s", tc.e.Type, tc.e.Action, b, tc.want)
		}
	}
}
