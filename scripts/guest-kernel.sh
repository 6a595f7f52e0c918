#!/bin/sh
# guest-kernel.sh DEST [cloud|generic] — fetch a Debian guest kernel package
# with `apt-get download` and unpack it into DEST (boot/vmlinuz-*,
# lib/modules/*). It is never installed as the host's kernel.
#
# cloud (default): linux-image-cloud-amd64, the kernel of every container
# VM. generic: linux-image-amd64, which has virtio-9p for host bind mounts;
# its bzImage is XZ-compressed, which takes seconds to unpack under TCG, so
# the uncompressed ELF is also extracted as boot/vmlinux-* (booted through
# its PVH entry; the guest-visible kernel is the same).
set -eu
dest=${1:?usage: guest-kernel.sh DEST [cloud|generic]}
flavour=${2:-cloud}
case $flavour in
cloud) meta=linux-image-cloud-amd64 ;;
generic) meta=linux-image-amd64 ;;
*) echo "guest-kernel.sh: flavour $flavour: want cloud or generic" >&2; exit 2 ;;
esac
if ls "$dest"/boot/vmlinuz-* >/dev/null 2>&1; then
	exit 0
fi
pkg=$(apt-cache depends $meta 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	apt-get update -qq
	pkg=$(apt-cache depends $meta | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
deb=$(ls "$tmp"/*.deb)
mkdir -p "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
if [ "$flavour" = generic ]; then
	img=$(ls "$dest.tmp"/boot/vmlinuz-*)
	ver=${img##*/vmlinuz-}
	# The XZ stream starts at the first "\3757zXZ\0" in the bzImage (as the
	# kernel's scripts/extract-vmlinux finds it); xz stops at its end.
	off=$(tr '\375' '\n' <"$img" | grep -abo '^7zXZ' | head -1 | cut -d: -f1)
	if [ -n "$off" ] && tail -c +"$off" "$img" | xz -dc >"$dest.tmp/boot/vmlinux-$ver" 2>/dev/null; then :; fi
	if ! head -c 4 "$dest.tmp/boot/vmlinux-$ver" 2>/dev/null | grep -q ELF; then
		rm -f "$dest.tmp/boot/vmlinux-$ver"
		echo "guest-kernel.sh: could not extract vmlinux from $img; the bzImage is used (slower boots)" >&2
	fi
fi
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "guest kernel ($flavour): $(ls "$dest"/boot/vmlinu*-*)"
