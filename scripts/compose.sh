#!/bin/sh
# Builds the Docker Compose v2 CLI plugin from the docker/compose Go module
# at the given version, as that module builds itself (its own go.mod and
# go.sum, fetched through the Go module proxy into the module cache), into
# the given path. The docker CLI finds it under $DOCKER_CONFIG/cli-plugins
# or ~/.docker/cli-plugins (see README).
set -eu
version=$1
out=$2
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
dir=$(go mod download -json "github.com/docker/compose/v5@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "compose.sh: cannot download github.com/docker/compose/v5@$version" >&2; exit 1; }
cd "$dir"
GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$version" -o "$out" ./cmd
