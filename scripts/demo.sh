#!/bin/sh
# demo.sh — the README's first command (via `make demo`): start a VCH in a
# temporary root, bring in busybox, run a container VM, stop the VCH.
set -eu
cd "$(dirname "$0")/.."
root=$(mktemp -d /tmp/vch-demo.XXXXXX)
sock=$root/docker.sock
export DOCKER_HOST=unix://$sock
bin/vch daemon --root "$root" -H "$DOCKER_HOST" >"$root/daemon.log" 2>&1 &
pid=$!
cleanup() {
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "$root"
}
trap cleanup EXIT INT TERM
i=0
until docker version >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "vch daemon did not start:" >&2
		cat "$root/daemon.log" >&2
		exit 1
	fi
	sleep 0.1
done
echo "+ DOCKER_HOST=$DOCKER_HOST"
bin/busybox-image -o "$root/busybox.tar" >/dev/null 2>&1
echo "+ docker load -i busybox.tar"
docker load -i "$root/busybox.tar"
echo "+ docker run --rm busybox uname -r   # the guest's kernel"
docker run --rm busybox uname -r
echo "+ uname -r                           # the host's kernel"
uname -r
