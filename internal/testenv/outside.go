package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// Outside is a stand-in for the world beyond a VCH, made of two network
// namespaces of the test run's own (DESIGN.md's network rule): Egress,
// which a daemon started with --egress-netns dials from, and a remote one
// behind a veth pair on TEST-NET-2 (RFC 5737) where an HTTP server answers
// at URL with Body.
type Outside struct {
	Egress string
	URL    string
	Body   string
	remote string
	srv    *http.Server
}

// NewOutside creates the namespaces and starts the server. Needs root and
// iproute2's ip.
func NewOutside(prefix string) (*Outside, error) {
	o := &Outside{Egress: prefix + "-egress", remote: prefix + "-remote", Body: "hello from outside\n"}
	steps := [][]string{
		{"netns", "add", o.Egress},
		{"netns", "add", o.remote},
		{"-n", o.Egress, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", o.remote},
		{"-n", o.Egress, "addr", "add", "198.51.100.1/24", "dev", "up0"},
		{"-n", o.remote, "addr", "add", "198.51.100.2/24", "dev", "up1"},
		{"-n", o.Egress, "link", "set", "up0", "up"},
		{"-n", o.remote, "link", "set", "up1", "up"},
		{"-n", o.remote, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			o.Close()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	l, err := listenIn(o.remote, "198.51.100.2:80")
	if err != nil {
		o.Close()
		return nil, err
	}
	// The port is explicit: busybox-static's wget crashes looking up "http"
	// in /etc/services through static glibc's NSS when it is left out.
	o.URL = "http://198.51.100.2:80/"
	o.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, o.Body) })}
	go o.srv.Serve(l)
	return o, nil
}

// listenIn opens a TCP listener inside the named namespace.
func listenIn(ns, addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- result{err: err}
			return
		}
		l, err := net.Listen("tcp4", addr)
		ch <- result{l, err}
	}()
	r := <-ch
	return r.l, r.err
}

// Close stops the server and deletes both namespaces.
func (o *Outside) Close() {
	if o.srv != nil {
		o.srv.Close()
	}
	for _, ns := range []string{o.Egress, o.remote} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	_ = os.Remove("/run/netns/" + o.remote)
}
