#!/bin/sh
# guest-kernel.sh DEST — fetch Debian's cloud guest kernel package with
# `apt-get download` and unpack it into DEST (boot/vmlinuz-*, lib/modules/*).
# It is never installed as the host's kernel.
set -eu
dest=${1:?usage: guest-kernel.sh DEST}
if ls "$dest"/boot/vmlinuz-* >/dev/null 2>&1; then
	exit 0
fi
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	apt-get update -qq
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
deb=$(ls "$tmp"/*.deb)
mkdir -p "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "guest kernel: $(ls "$dest"/boot/vmlinuz-*)"
