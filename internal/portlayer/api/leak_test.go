package api_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/client"
)

// usage is what a stream may leave behind: goroutines (all of them, and
// those of the server: the api package's and net/http's connections),
// and open file descriptors.
type usage struct{ goroutines, server, fds int }

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines (%d of the server), %d fds", u.goroutines, u.server, u.fds)
}

// measure counts the process's goroutines and open descriptors now.
func measure(t *testing.T) usage {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return usage{goroutines: runtime.NumGoroutine(), server: len(serverStacks()), fds: len(fds)}
}

// allStacks is every goroutine's stack.
func allStacks() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// serverStacks are the stacks of the goroutines serving requests: those
// in the api package (its handlers and streams) or in a net/http server
// connection, but not the accept loop (api.Serve).
func serverStacks() []string {
	var out []string
	for _, g := range strings.Split(allStacks(), "\n\n") {
		if (strings.Contains(g, "portlayer/api.") || strings.Contains(g, "net/http.(*conn).serve")) && !strings.Contains(g, "portlayer/api.Serve") {
			out = append(out, g)
		}
	}
	return out
}

// settled measures once the counts have stopped changing (goroutines
// of earlier work ending), or after a few seconds.
func settled(t *testing.T) usage {
	t.Helper()
	last := measure(t)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		now := measure(t)
		if now == last {
			return now
		}
		last = now
	}
	return last
}

// backTo waits, polling, until the process is back within base (every
// count, or with exec only the server's and the descriptors), failing
// the test with every goroutine's stack and the descriptors if it is
// not within the deadline.
func backTo(t *testing.T, base usage, serverOnly bool) {
	t.Helper()
	var now usage
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		now = measure(t)
		if now.server <= base.server && now.fds <= base.fds && (serverOnly || now.goroutines <= base.goroutines) {
			return
		}
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	var links []string
	for _, fd := range fds {
		l, _ := os.Readlink("/proc/self/fd/" + fd.Name())
		links = append(links, fd.Name()+" -> "+l)
	}
	t.Errorf("after the client went: %v, before the stream: %v\nserver goroutines:\n%s\n\nfds:\n%s\n\nall goroutines:\n%s",
		now, base, strings.Join(serverStacks(), "\n\n"), strings.Join(links, "\n"), allStacks())
}

// chanWriter sends what is written to it on a channel (dropped when
// nobody listens).
type chanWriter chan string

func (c chanWriter) Write(p []byte) (int, error) {
	select {
	case c <- string(p):
	default:
	}
	return len(p), nil
}

// await waits for s on ch.
func await(t *testing.T, ch chanWriter, s string) {
	t.Helper()
	var got strings.Builder
	timeout := time.After(10 * time.Second)
	for !strings.Contains(got.String(), s) {
		select {
		case p := <-ch:
			got.WriteString(p)
		case <-timeout:
			t.Fatalf("stream output %q, want %q", got.String(), s)
		}
	}
}

// TestStreamLeaks: a client that goes away in the middle of a stream —
// an attach (quiet, or with stdin), an exec start (quiet, or with
// stdin), logs with follow, live events, a wait — leaves nothing behind
// in the server: its goroutines end and the connection's descriptor is
// closed, within a bounded time. A quiet exec's process runs on (as in
// Docker, a client's leaving does not end it), so for it only the
// server's goroutines are counted.
func TestStreamLeaks(t *testing.T) {
	b, svc := fullBackend(t)
	h, err := api.Handler(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := serveUnix(t, h)
	c, err := client.New("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := unixHTTP(sock)
	ctx := t.Context()
	for _, spec := range []portlayer.ContainerSpec{
		{Name: "quiet", Image: testImage, Args: []string{"sleep"}},
		{Name: "ticker", Image: testImage, Args: []string{"ticks", "20ms"}},
		{Name: "talk", Image: testImage, Args: []string{"cat"}, OpenStdin: true},
	} {
		if _, err := svc.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
		if err := svc.Start(ctx, spec.Name); err != nil {
			t.Fatal(err)
		}
	}

	// get opens a GET (a new connection, no keep-alive) and returns its
	// answer, whose status must be 200.
	get := func(ctx context.Context, path string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", "http://portlayer"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return resp
	}

	// Each case opens its stream, sees it flowing, and leaves abruptly:
	// the client's connection is closed (by the client package on
	// cancel or Close, or by net/http on cancel) without a half-close.
	cases := []struct {
		name       string
		serverOnly bool
		run        func(t *testing.T)
	}{
		{"attach", false, func(t *testing.T) {
			att, err := c.Attach(ctx, "quiet", portlayer.AttachOptions{Stdout: io.Discard, Stderr: io.Discard, Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the server is attached
			_ = att.Close()
		}},
		{"attach output", false, func(t *testing.T) {
			out := make(chanWriter, 16)
			att, err := c.Attach(ctx, "ticker", portlayer.AttachOptions{Stdout: out, Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			await(t, out, "\n")
			_ = att.Close()
		}},
		{"attach stdin", false, func(t *testing.T) {
			pr, pw := io.Pipe()
			out := make(chanWriter, 16)
			att, err := c.Attach(ctx, "talk", portlayer.AttachOptions{Stdin: pr, Stdout: out, Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(pw, "hello\n")
			await(t, out, "hello\n")
			_ = att.Close()
			_ = pw.Close() // ends the client's copy of stdin
		}},
		{"exec", true, func(t *testing.T) {
			id, err := svc.Execs().CreateExec(ctx, "quiet", portlayer.ExecSpec{Args: []string{"sleep"}, AttachStdout: true, AttachStderr: true})
			if err != nil {
				t.Fatal(err)
			}
			sctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- c.StartExec(sctx, id, portlayer.ExecStartOptions{Stdout: io.Discard, Stderr: io.Discard})
			}()
			waitRunning(t, svc.Execs(), id)
			cancel()
			<-done
		}},
		{"exec stdin", false, func(t *testing.T) {
			id, err := svc.Execs().CreateExec(ctx, "quiet", portlayer.ExecSpec{Args: []string{"cat"}, AttachStdin: true, AttachStdout: true})
			if err != nil {
				t.Fatal(err)
			}
			pr, pw := io.Pipe()
			out := make(chanWriter, 16)
			sctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- c.StartExec(sctx, id, portlayer.ExecStartOptions{Stdin: pr, Stdout: out}) }()
			_, _ = io.WriteString(pw, "hello\n")
			await(t, out, "hello\n")
			cancel()
			<-done
			_ = pw.Close()
		}},
		{"logs follow", false, func(t *testing.T) {
			sctx, cancel := context.WithCancel(ctx)
			resp := get(sctx, "/v1/containers/ticker/logs?follow=true&stdout=true&tail=0")
			if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			cancel()
			resp.Body.Close()
		}},
		{"events live", false, func(t *testing.T) {
			sctx, cancel := context.WithCancel(ctx)
			resp := get(sctx, "/v1/events?live=true")
			if l, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || !strings.Contains(l, `"live":true`) {
				t.Fatalf("events: %q, %v", l, err)
			}
			cancel()
			resp.Body.Close()
		}},
		{"wait", false, func(t *testing.T) {
			sctx, cancel := context.WithCancel(ctx)
			ch, err := c.Wait(sctx, "quiet", portlayer.WaitNextExit)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the server waits
			cancel()
			<-ch
		}},
	}
	// Once each first: what a first use starts for good (a container's
	// output fan-out, the event log's) is not the stream's.
	for _, tc := range cases {
		tc.run(t)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := settled(t)
			tc.run(t)
			backTo(t, base, tc.serverOnly)
		})
	}
	// The server still serves streams.
	id, err := svc.Execs().CreateExec(ctx, "quiet", portlayer.ExecSpec{Args: []string{"echo", "still", "here"}, AttachStdout: true})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := c.StartExec(ctx, id, portlayer.ExecStartOptions{Stdout: &out}); err != nil || out.String() != "still here\n" {
		t.Errorf("exec after the abandoned streams: %q, %v", out.String(), err)
	}
}

// waitRunning waits until the exec runs.
func waitRunning(t *testing.T, svc interface {
	InspectExec(context.Context, string) (portlayer.ExecInfo, error)
}, id string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if info, err := svc.InspectExec(context.Background(), id); err == nil && info.Running {
			return
		}
	}
	t.Fatalf("exec %s did not start", id)
}

// TestStreamHalfClose: a client's half-close is its stdin's EOF, not
// its leaving: the stream goes on past several hang-up checks, the
// output still coming, for an exec and for an attach; only the full
// close (the context's end, here) ends it.
func TestStreamHalfClose(t *testing.T) {
	b, svc := fullBackend(t)
	h, err := api.Handler(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New("unix://"+serveUnix(t, h), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := svc.Create(ctx, portlayer.ContainerSpec{Name: "ticker", Image: testImage, Args: []string{"ticks", "20ms"}, OpenStdin: true}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx, "ticker"); err != nil {
		t.Fatal(err)
	}
	// The client package half-closes once the stdin given ends: at once.
	t.Run("exec", func(t *testing.T) {
		id, err := svc.Execs().CreateExec(ctx, "ticker", portlayer.ExecSpec{Args: []string{"ticks", "20ms"}, AttachStdin: true, AttachStdout: true})
		if err != nil {
			t.Fatal(err)
		}
		out := make(chanWriter, 1024)
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			_ = c.StartExec(sctx, id, portlayer.ExecStartOptions{Stdin: strings.NewReader("x"), Stdout: out})
		}()
		await(t, out, "\n40\n") // 800 ms after the half-close
	})
	t.Run("attach", func(t *testing.T) {
		out := make(chanWriter, 1024)
		att, err := c.Attach(ctx, "ticker", portlayer.AttachOptions{Stdin: strings.NewReader("x"), Stdout: out, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		defer att.Close()
		var first string
		select {
		case first = <-out:
		case <-time.After(10 * time.Second):
			t.Fatal("no output")
		}
		n := 0
		if _, err := fmt.Sscan(first, &n); err != nil {
			t.Fatalf("first output %q", first)
		}
		await(t, out, fmt.Sprintf("\n%d\n", n+40))
		select {
		case <-att.Done():
			t.Fatal("the attach ended after the half-close")
		default:
		}
	})
}
