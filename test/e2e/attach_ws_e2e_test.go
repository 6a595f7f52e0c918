//go:build e2e

package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// TestAttachWebsocket: GET /containers/{id}/attach/ws carries stdin in
// and output out, unmultiplexed, in binary frames.
func TestAttachWebsocket(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, "run", "-d", "-i", "--name", name, "busybox", "sh", "-c", "while read l; do echo got:$l; done")
	defer docker(t, "rm", "-f", name)
	sock := strings.TrimPrefix(env.host, "unix://")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Skipf("daemon not on a unix socket (%s): %v", env.host, err)
	}
	defer conn.Close()
	cfg, err := websocket.NewConfig("ws://localhost/v1.50/containers/"+name+"/attach/ws?stream=1&stdin=1&stdout=1&stderr=1", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket handshake: %v", err)
	}
	defer ws.Close()
	if _, err := ws.Write([]byte("over-the-socket\n")); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	var got []byte
	for !strings.Contains(string(got), "got:over-the-socket\n") {
		var msg []byte
		if err := websocket.Message.Receive(ws, &msg); err != nil {
			t.Fatalf("receive: %v (so far %q)", err, got)
		}
		got = append(got, msg...)
	}
	if !strings.HasPrefix(string(got), "got:") {
		t.Errorf("output is not raw (multiplexed?): %q", got)
	}
}
