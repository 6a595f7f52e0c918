#!/bin/sh
# deps.sh — install the Debian packages vch needs (as root): QEMU, qemu-img,
# mkfs.ext4/debugfs, busybox-static (for the demo/test image).
set -eu
need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v qemu-img >/dev/null || need="$need qemu-utils"
command -v mkfs.ext4 >/dev/null || need="$need e2fsprogs"
dpkg -s busybox-static >/dev/null 2>&1 || need="$need busybox-static"
command -v dpkg-deb >/dev/null || need="$need dpkg"
if [ -n "$need" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need
fi
if ! command -v docker >/dev/null; then
	# The tests drive the real docker CLI; Debian ships it in docker.io.
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends docker.io
fi
