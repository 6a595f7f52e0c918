//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// httpdCmd serves "hello from NAME" on port 8080 with busybox httpd.
func httpdCmd(name string) []string {
	return []string{"sh", "-c", "mkdir -p /www && echo hello from " + name + " > /www/index.html && exec httpd -f -p 8080 -h /www"}
}

// getURL fetches url until it answers (the container VM may still be
// booting) or 60 s pass.
func getURL(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	c := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == 200 {
				return string(b)
			}
			err = fmt.Errorf("status %d, %v", resp.StatusCode, rerr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestPublishedPort: a busybox httpd in a container VM is reached from the
// host through -p on 127.0.0.1; docker port and docker ps show the random
// host port; a taken port fails like Docker; stop frees the port.
func TestPublishedPort(t *testing.T) {
	t.Parallel()
	name := uniqueName(t)
	ok(t, append([]string{"run", "-d", "--name", name, "-p", "127.0.0.1::8080", "-p", "127.0.0.1::5353/udp", "--expose", "7000", "-P", "busybox"}, httpdCmd(name)...)...)
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	ports := ok(t, "port", name)
	for _, want := range []string{"5353/udp -> 127.0.0.1:", "7000/tcp -> 0.0.0.0:"} {
		if !strings.Contains(ports, want) {
			t.Errorf("docker port lacks %q:\n%s", want, ports)
		}
	}
	hostPort := strings.TrimSpace(ok(t, "port", name, "8080"))
	if !strings.HasPrefix(hostPort, "127.0.0.1:") {
		t.Fatalf("docker port = %q, want 127.0.0.1:<port>", hostPort)
	}
	if body := getURL(t, "http://"+hostPort+"/"); strings.TrimSpace(body) != "hello from "+name {
		t.Fatalf("body = %q", body)
	}
	// Its NIC sends without transmit interrupts (tether loads virtio_net
	// with napi_tx=0: the published port's throughput under TCG).
	if v := strings.TrimSpace(ok(t, "exec", name, "cat", "/sys/module/virtio_net/parameters/napi_tx")); v != "N" {
		t.Errorf("virtio_net napi_tx = %q in the guest, want N", v)
	}
	if ps := ok(t, "ps", "--filter", "name="+name, "--format", "{{.Ports}}"); !strings.Contains(ps, hostPort+"->8080/tcp") {
		t.Errorf("docker ps ports = %q, want %s->8080/tcp", ps, hostPort)
	}
	var ip string
	ip = strings.TrimSpace(ok(t, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name))
	if !strings.HasPrefix(ip, "172.17.") {
		t.Errorf("default bridge address = %q, want 172.17.x.x", ip)
	}

	// The same host port again: Docker's refusal, exit 125.
	port := strings.TrimPrefix(hostPort, "127.0.0.1:")
	r := docker(t, "run", "--rm", "-p", hostPort+":80", "busybox", "true")
	if r.code != 125 || !(strings.Contains(r.stderr, "port is already allocated") || strings.Contains(r.stderr, "address already in use")) {
		t.Errorf("taken port: exit %d, stderr %q", r.code, r.stderr)
	}

	if netio := ok(t, "stats", "--no-stream", "--format", "{{.NetIO}}", name); strings.HasPrefix(strings.TrimSpace(netio), "0B /") {
		t.Errorf("docker stats NetIO = %q after serving a request", netio)
	}

	ok(t, "stop", "-t", "1", name)
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("port %s not freed after stop: %v", port, err)
	}
	l.Close()
}

// TestUserNetworkDNS: containers on a user network reach each other by
// name and alias through the embedded DNS; a container on the default
// bridge cannot resolve them; inspect shows the endpoint; a network in use
// cannot be removed.
func TestUserNetworkDNS(t *testing.T) {
	t.Parallel()
	net1 := uniqueName(t) + "-net"
	ok(t, "network", "create", "--subnet", "10.231.0.0/24", net1)
	t.Cleanup(func() { docker(t, "network", "rm", net1) })
	srv := uniqueName(t) + "-srv"
	ok(t, append([]string{"run", "-d", "--name", srv, "--network", net1, "--network-alias", "db", "--ip", "10.231.0.50", "busybox"}, httpdCmd(srv)...)...)
	t.Cleanup(func() { docker(t, "rm", "-f", srv) })

	var nets map[string]struct {
		IPAddress   string
		IPPrefixLen int
		Gateway     string
		MacAddress  string
		Aliases     []string
		DNSNames    []string
	}
	if err := json.Unmarshal([]byte(ok(t, "inspect", "-f", "{{json .NetworkSettings.Networks}}", srv)), &nets); err != nil {
		t.Fatal(err)
	}
	ep, found := nets[net1]
	if !found || ep.IPAddress != "10.231.0.50" || ep.IPPrefixLen != 24 || ep.Gateway != "10.231.0.1" {
		t.Fatalf("inspect networks = %+v", nets)
	}
	if !strings.HasPrefix(ep.MacAddress, "02:42:0a:e7:00:") {
		t.Errorf("MAC = %q, want Docker's 02:42 + address", ep.MacAddress)
	}

	// By name and by alias, from a second container VM on the network.
	out := ok(t, "run", "--rm", "--network", net1, "--link", srv+":lnk", "busybox", "sh", "-c",
		"nslookup "+srv+" && nslookup db && nslookup lnk && wget -qO- http://db:8080/ && cat /etc/resolv.conf && ip route && wget -qO- "+env.outside.URL)
	for _, want := range []string{"Address: " + ep.IPAddress, "Name:\tlnk", "hello from " + srv, "nameserver 127.0.0.11", "default via 10.231.0.1", env.outside.Body} {
		if !strings.Contains(out, want) {
			t.Errorf("client output lacks %q:\n%s", want, out)
		}
	}
	// Not from the default bridge.
	r := docker(t, "run", "--rm", "busybox", "nslookup", srv)
	if r.code == 0 || strings.Contains(r.stdout, ep.IPAddress) {
		t.Errorf("default bridge resolved %s: exit %d\n%s", srv, r.code, r.stdout)
	}

	r = docker(t, "network", "rm", net1)
	if r.code == 0 || !strings.Contains(r.stderr, "has active endpoints") {
		t.Errorf("rm of a network in use: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestInternalNetwork: a container on an --internal network has no default
// route.
func TestInternalNetwork(t *testing.T) {
	t.Parallel()
	n := uniqueName(t)
	ok(t, "network", "create", "--internal", n)
	t.Cleanup(func() { docker(t, "network", "rm", n) })
	out := ok(t, "run", "--rm", "--network", n, "--hostname", "h1", "--add-host", "extra.example:192.0.2.7",
		"--dns", "192.0.2.53", "--dns-search", "corp.example", "busybox", "sh", "-c",
		"ip -4 addr show eth0 && ip route && cat /etc/hosts /etc/resolv.conf && hostname && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 198.51.100.2 80 | grep -q outside && echo EGRESS-OK; true")
	if strings.Contains(out, "default") {
		t.Errorf("internal network has a default route:\n%s", out)
	}
	if strings.Contains(out, "EGRESS-OK") {
		t.Errorf("an internal network reached the outside:\n%s", out)
	}
	// On a user network the embedded DNS stays the nameserver with --dns,
	// as Docker's does, so that container names keep resolving.
	for _, want := range []string{"192.0.2.7\textra.example", "nameserver 127.0.0.11", "search corp.example", "\th1\n", "\nh1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "inet 172.") && !strings.Contains(out, "inet 192.168.") {
		t.Errorf("no address on eth0:\n%s", out)
	}
	if out := ok(t, "run", "--rm", "--network", "none", "busybox", "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("--network none has eth0:\n%s", out)
	}
}

// TestConnectRunning: docker network connect/disconnect on a running
// container VM: the guest gains eth1 with the endpoint's address, and a
// container on that network resolves it; disconnect takes it away.
func TestConnectRunning(t *testing.T) {
	t.Parallel()
	n := uniqueName(t) + "-net"
	ok(t, "network", "create", n)
	t.Cleanup(func() { docker(t, "network", "rm", n) })
	name := uniqueName(t)
	ok(t, append([]string{"run", "-d", "--name", name, "busybox"}, httpdCmd(name)...)...)
	t.Cleanup(func() { docker(t, "rm", "-f", name) })

	if links := ok(t, "exec", name, "ip", "-o", "link"); strings.Count(links, "\n") != 2 || strings.Contains(links, "spare") {
		t.Errorf("the container sees more than lo and eth0:\n%s", links)
	}
	ok(t, "network", "connect", "--alias", "web", n, name)
	ip := strings.TrimSpace(ok(t, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+n+"\").IPAddress}}", name))
	if ip == "" || ip == "<no value>" {
		t.Fatalf("no address on %s after connect", n)
	}
	if out := ok(t, "exec", name, "ip", "-4", "addr", "show", "eth1"); !strings.Contains(out, "inet "+ip+"/") {
		t.Errorf("eth1 after connect:\n%s", out)
	}
	// A rename while it runs: the new name resolves (docker rename).
	ok(t, "rename", name, name+"-r")
	if out := ok(t, "run", "--rm", "--network", n, "busybox", "sh", "-c", "nslookup web && nslookup "+name+"-r && wget -qO- http://"+ip+":8080/"); !strings.Contains(out, "hello from "+name) || strings.Count(out, "Address: "+ip) != 2 {
		t.Errorf("peer on %s:\n%s", n, out)
	}
	ok(t, "rename", name+"-r", name)

	ok(t, "network", "disconnect", n, name)
	if r := docker(t, "exec", name, "ip", "-4", "addr", "show", "eth1"); r.code == 0 {
		t.Errorf("eth1 still present after disconnect:\n%s", r.stdout)
	}
	// The NIC is reusable: connect again, disconnect again.
	ok(t, "network", "connect", n, name)
	if out := ok(t, "exec", name, "ip", "-o", "-4", "addr"); !strings.Contains(out, "eth1") {
		t.Errorf("no eth1 after the second connect:\n%s", out)
	}
	ok(t, "network", "disconnect", n, name)
	if out := ok(t, "inspect", "-f", "{{json .NetworkSettings.Networks}}", name); strings.Contains(out, n) {
		t.Errorf("inspect still shows %s: %s", n, out)
	}
}

// TestNetworkCommands: create with --subnet/--gateway/--ip-range/--label,
// inspect shows them, duplicates and predefined networks are refused like
// Docker, prune removes unused networks.
func TestNetworkCommands(t *testing.T) {
	t.Parallel()
	n := uniqueName(t)
	ok(t, "network", "create", "--subnet", "10.232.0.0/16", "--gateway", "10.232.0.254", "--ip-range", "10.232.1.0/24", "--label", "team=a", n)
	out := ok(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}} {{.IPRange}}{{end}} {{.Labels}} {{.Driver}}", n)
	if strings.TrimSpace(out) != "10.232.0.0/16 10.232.0.254 10.232.1.0/24 map[team:a] bridge" {
		t.Errorf("inspect = %q", out)
	}
	if r := docker(t, "network", "create", n); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("duplicate: exit %d %q", r.code, r.stderr)
	}
	if r := docker(t, "network", "rm", "bridge"); r.code == 0 || !strings.Contains(r.stderr, "pre-defined network") {
		t.Errorf("rm bridge: exit %d %q", r.code, r.stderr)
	}
	if ls := ok(t, "network", "ls", "--filter", "label=team=a", "--format", "{{.Name}}"); strings.TrimSpace(ls) != n {
		t.Errorf("ls by label = %q", ls)
	}
	ok(t, "network", "prune", "-f", "--filter", "label=team=a")
	if r := docker(t, "network", "inspect", n); r.code == 0 {
		t.Errorf("%s survived prune", n)
	}
}
