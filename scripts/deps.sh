#!/bin/sh
# deps.sh — install the Debian packages vch needs (as root): QEMU, qemu-img,
# mkfs.ext4/debugfs, a C compiler, busybox-static (for the demo/test image), tmux,
# iproute2 and docker-compose (for tests), xorriso and ISOLINUX (the vSphere
# driver's boot ISO), and the docker 20.10 client.
set -eu
need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v qemu-img >/dev/null || need="$need qemu-utils"
command -v mkfs.ext4 >/dev/null || need="$need e2fsprogs"
command -v tmux >/dev/null || need="$need tmux"
dpkg -s busybox-static >/dev/null 2>&1 || need="$need busybox-static"
# Compose v1 (Python, Debian's package; its daemon recommendation is not
# installed): the compose test drives a project through it.
command -v docker-compose >/dev/null || need="$need docker-compose"
command -v dpkg-deb >/dev/null || need="$need dpkg"
# cc and libc headers: the QEMU preload library (bin/vch-ramshim.so);
# gcc alone (--no-install-recommends) brings no headers.
command -v cc >/dev/null || need="$need gcc"
[ -e /usr/include/stdio.h ] || need="$need libc6-dev"
[ -e /usr/include/linux/falloc.h ] || need="$need linux-libc-dev"
# xz: scripts/guest-kernel.sh unpacks the generic kernel's modules.
command -v xz >/dev/null || need="$need xz-utils"
# ip (iproute2): the network tests build their own "outside" namespaces.
command -v ip >/dev/null || need="$need iproute2"
# xorriso, isolinux and syslinux-common: the vSphere driver's boot ISO
# (the guest kernel and initramfs behind ISOLINUX).
command -v xorriso >/dev/null || need="$need xorriso"
[ -e /usr/lib/ISOLINUX/isolinux.bin ] || need="$need isolinux"
[ -e /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || need="$need syslinux-common"
if [ -n "$need" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need
fi
# The tests drive the real docker CLI, and also check Debian's 20.10
# client: take the client binary alone out of Debian's docker.io package
# (never its daemon) into bin/docker-20.10/. The Makefile puts that
# directory at the end of PATH, so it also serves where no docker is
# installed.
if [ ! -x bin/docker-20.10/docker ]; then
	tmp=$(mktemp -d)
	(cd "$tmp" && { apt-get download -q docker.io >/dev/null 2>&1 || { apt-get update -qq && apt-get download -q docker.io >/dev/null 2>&1; }; })
	dpkg-deb -x "$tmp"/docker.io_*.deb "$tmp/x"
	mkdir -p bin/docker-20.10
	cp "$tmp/x/usr/bin/docker" bin/docker-20.10/docker
	rm -rf "$tmp"
	echo "docker 20.10 client: bin/docker-20.10/docker (from Debian's docker.io)"
fi
