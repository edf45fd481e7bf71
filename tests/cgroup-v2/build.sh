#!/bin/sh
# Builds the guest of tests/cgroup_v2.rs. The kernel is made once and cached in $OUT (Debian's
# kernel, taken from the package without installing it, plus overlayfs's module); the
# initramfs is made on every call, because the wrun binary changes:
#   build.sh INITRAMFS WRUN MODULE...
# packs busybox-static (also as a native root file system), WRUN, the MODULEs (into /samples)
# and tests/cgroup-v2/{init,checks.sh} into the uncompressed cpio archive INITRAMFS, and
# prints the kernel's path. Needs apt (Debian 12) and root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/var/cache/wrun-tests/cgroup-v2}
KPKG=${KPKG:-linux-image-amd64}
[ $# -ge 3 ] || { echo "usage: $0 INITRAMFS WRUN MODULE..." >&2; exit 2; }
initramfs=$1 wrun=$2
shift 2
need() {
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >&2
}
need qemu-system-x86
need busybox-static
need cpio
mkdir -p "$OUT"
if [ ! -s "$OUT/vmlinuz" ]; then
  # linux-image-amd64 is a metapackage: download the versioned image it depends on.
  versioned=$(apt-cache depends "$KPKG" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$versioned" ] || { echo "no versioned kernel behind $KPKG (apt-get update?)" >&2; exit 1; }
  dl="$OUT/dl"; rm -rf "$dl"; mkdir -p "$dl/x"
  (cd "$dl" && apt-get -o APT::Sandbox::User=root download "$versioned" >/dev/null)
  dpkg-deb --fsys-tarfile "$dl/${versioned}"_*.deb | tar -x -C "$dl/x" --wildcards './boot/vmlinuz-*' '*/overlayfs/overlay.ko*'
  rm -f "$OUT/overlay.ko"
  overlay=$(find "$dl/x" -name 'overlay.ko*' | head -n 1)
  case "$overlay" in
    *.ko) cp "$overlay" "$OUT/overlay.ko" ;;
    *.ko.xz) xz -dc "$overlay" > "$OUT/overlay.ko" ;;
    *.ko.zst) zstd -qdc "$overlay" > "$OUT/overlay.ko" ;;
  esac
  cp "$dl/x/boot/vmlinuz-${versioned#linux-image-}" "$OUT/vmlinuz.tmp"
  mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
  rm -rf "$dl"
fi
stage=$(mktemp -d "${TMPDIR:-/tmp}/wrun-cgroup-v2.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/samples" "$stage/rootfs/bin" "$stage/newroot"
cp /bin/busybox "$stage/bin/busybox"
cp "$wrun" "$stage/bin/wrun"
cp "$@" "$stage/samples/"
[ ! -s "$OUT/overlay.ko" ] || cp "$OUT/overlay.ko" "$stage/overlay.ko"
# The native workloads' root: busybox and its applets.
cp /bin/busybox "$stage/rootfs/bin/busybox"
for applet in sh sleep dd echo cat ls grep true; do ln -s busybox "$stage/rootfs/bin/$applet"; done
mkdir -p "$stage/rootfs/proc" "$stage/rootfs/dev" "$stage/rootfs/sys" "$stage/rootfs/tmp"
cp "$here/init" "$here/checks.sh" "$stage/"
chmod 755 "$stage/init" "$stage/checks.sh"
(cd "$stage" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$initramfs.tmp"
mv "$initramfs.tmp" "$initramfs"
echo "$OUT/vmlinuz"
