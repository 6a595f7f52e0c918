package client_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vchproject/vch/internal/portlayer"
	"github.com/vchproject/vch/internal/portlayer/api"
	"github.com/vchproject/vch/internal/portlayer/client"
	"github.com/vchproject/vch/internal/portlayer/compute"
	"github.com/vchproject/vch/internal/portlayer/computetest"
	"github.com/vchproject/vch/internal/tlsfiles"
	"github.com/vchproject/vch/internal/vch/certs"
)

// TestContractOverTCP: the compute contract over TCP with mutual TLS
// (127.0.0.1), streams included; TCP without client verification is
// refused, and a client without a certificate is turned away.
func TestContractOverTCP(t *testing.T) {
	dir := t.TempDir()
	set, err := certs.Generate(dir, certs.Options{Name: "pltest"})
	if err != nil {
		t.Fatal(err)
	}
	insecure, err := certs.ServerTLS("", set.Path(certs.ServerCertFile), set.Path(certs.ServerKeyFile), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Listen("tcp://127.0.0.1:0", insecure); portlayer.ClassOf(err) != portlayer.ClassInvalidArgument {
		t.Errorf("TCP without client verification: %v", err)
	}
	serverTLS, err := certs.ServerTLS(set.Path(certs.CAFile), set.Path(certs.ServerCertFile), set.Path(certs.ServerKeyFile), true)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := tlsfiles.Client(filepath.Join(set.ClientPath(), certs.CAFile), filepath.Join(set.ClientPath(), certs.CertFile), filepath.Join(set.ClientPath(), certs.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New("tcp://127.0.0.1:1", nil); portlayer.ClassOf(err) != portlayer.ClassInvalidArgument {
		t.Errorf("a TCP client without TLS: %v", err)
	}
	// serveTLS serves svc over TCP with mutual TLS and returns the address.
	serveTLS := func(t *testing.T, svc *compute.Service) string {
		h, err := api.Handler(api.Backend{Compute: svc, Pauser: svc, Interaction: svc, Execs: svc.Execs()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := api.Listen("tcp://127.0.0.1:0", serverTLS)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		return "tcp://" + l.Addr().String()
	}
	computetest.Run(t, testImage, func(t *testing.T) computetest.Target {
		addr := serveTLS(t, newCompute(t))
		noCert := clientTLS.Clone()
		noCert.Certificates = nil
		anon, err := client.New(addr, noCert)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anon.List(context.Background()); err == nil {
			t.Error("a client without a certificate was served")
		}
		c, err := client.New(addr, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})

	// A stream over TLS: an exec's stdin (its half-close is the EOF) and
	// output.
	t.Run("ExecStream", func(t *testing.T) {
		c, err := client.New(serveTLS(t, newCompute(t)), clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		ctr, err := c.Create(ctx, portlayer.ContainerSpec{Image: testImage, Args: []string{"sleep", "60s"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx, ctr.ID); err != nil {
			t.Fatal(err)
		}
		id, err := c.CreateExec(ctx, ctr.ID, portlayer.ExecSpec{Args: []string{"cat"}, AttachStdin: true, AttachStdout: true})
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		if err := c.StartExec(ctx, id, portlayer.ExecStartOptions{Stdin: strings.NewReader("over tls\n"), Stdout: &out}); err != nil || out.String() != "over tls\n" {
			t.Errorf("exec cat over TLS: %q, %v", out.String(), err)
		}
	})
}
