# vch — see README.md. Every target installs what it needs (as root).
# Go 1.26 lives in /usr/local/go on our machines; a docker client unpacked
# by scripts/deps.sh (Debian's 20.10) sits in bin/docker-20.10 and serves
# where no other docker CLI is installed.
export PATH := /usr/local/go/bin:$(PATH):$(CURDIR)/bin/docker-20.10
GO        ?= go
BIN       := bin
KERNELDIR := $(BIN)/guest/kernel
# The generic kernel serves containers with host bind mounts (virtio-9p).
GENERICKERNELDIR := $(BIN)/guest/kernel-generic
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null)
# Compose v2, built from its Go module into the CLI plugin directory.
COMPOSE_VERSION := v5.6.0
LDFLAGS   := -X github.com/vchproject/vch/internal/vch.Version=$(VERSION) -X github.com/vchproject/vch/internal/vch.GitCommit=$(COMMIT)

.PHONY: all deps guest build demo test unit e2e vet bench compat chaos fuzz clean

all: build

deps:
	@command -v $(GO) >/dev/null || { echo "Go 1.26.8 or newer is required (expected in /usr/local/go/bin)" >&2; exit 1; }
	@sh scripts/deps.sh

guest: deps
	@sh scripts/guest-kernel.sh $(KERNELDIR) cloud
	@sh scripts/guest-kernel.sh $(GENERICKERNELDIR) generic

build: deps
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/vch ./cmd/vch
	CGO_ENABLED=0 $(GO) build -ldflags '-s -w' -o $(BIN)/tether ./cmd/tether
	$(GO) build -o $(BIN)/busybox-image ./cmd/busybox-image
	$(CC) -O2 -Wall -Wextra -shared -fPIC -o $(BIN)/vch-ramshim.so internal/hypervisor/qemu/ramshim/ramshim.c
	sh scripts/compose.sh $(COMPOSE_VERSION) $(BIN)/cli-plugins/docker-compose

# demo: start a VCH, load a busybox image built from Debian's busybox-static
# and run `docker run --rm busybox uname -r` in its own VM.
demo: guest build
	@sh scripts/demo.sh

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

unit:
	$(GO) test -count=1 ./...

# e2e: real daemon, real VMs, the real docker CLI and the Go client.
e2e: guest build
	VCH_REQUIRE_E2E=1 $(GO) test -tags e2e -count=1 -timeout 25m ./...

# test: everything CI runs.
# The chaos suite runs after the rest, not beside it: three packages
# booting VMs at once on a 2-core host push boots past their timeout.
test: guest build vet
	VCH_REQUIRE_E2E=1 $(GO) test -tags e2e -count=1 -timeout 25m $$($(GO) list -tags e2e ./... | grep -v /test/chaos)
	VCH_REQUIRE_E2E=1 $(GO) test -tags e2e -count=1 -timeout 15m ./test/chaos/
	@$(MAKE) --no-print-directory fuzz

# chaos: the fault, load and leak suite at full size (test/chaos; make test
# runs its short part): kill -9 of VMMs and of the daemon mid-operation,
# 200 containers churned 8 at a time, each case ending with a leak check.
chaos: guest build
	VCH_REQUIRE_E2E=1 VCH_CHAOS_FULL=1 $(GO) test -tags e2e -count=1 -v -timeout 40m ./test/chaos/

# fuzz: each fuzz target for FUZZTIME (their seed corpora also run in every
# `go test`): the Engine API's request decoding, tether's link framing and
# the DNS decoders. A failing input is written under the package's
# testdata/fuzz/ to replay.
FUZZTIME ?= 10s
FUZZ_TARGETS := ./internal/personality/docker:FuzzEngineAPI ./internal/agent/link:FuzzReadFrame \
	./internal/agent/link:FuzzServerStream ./internal/agent/link:FuzzFrames ./internal/tether/dnsrelay:FuzzMessage ./internal/portlayer/network/dns:FuzzAnswer \
	./internal/portlayer/api:FuzzRequest
fuzz:
	@GO="$(GO)" sh scripts/fuzz.sh $(FUZZTIME) $(FUZZ_TARGETS)

bench: guest build
	VCH_REQUIRE_E2E=1 $(GO) test -tags e2e -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/bench/

# compat: moby v28.2.2's own integration tests (container, image, network,
# system, volume) against a VCH; prints PASS/FAIL/SKIP per test and a summary.
# A measurement, not part of `make test`: it exits 0 whatever the tests do.
# Env: DOCKER_HOST, MOBY_SRC, VCH_COMPAT_DIR, COMPAT_PKGS, COMPAT_RUN, ... (docs/notes.md, "Fidelity to moby's integration suite").
compat: guest build
	bash scripts/compat.sh

clean:
	rm -rf $(BIN)
