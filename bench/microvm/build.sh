#!/bin/sh
# Builds the micro-VM row's guest, idempotently: a Debian 12 kernel (vmlinuz, taken from the
# package without installing it) and busybox initramfs images that print `microvm-ok` and then
# power off (initramfs-poweroff.gz) or sleep (initramfs-sleep.gz). Needs apt (Debian 12) and root.
set -eu
OUT=${OUT:-/var/cache/wrun-bench/microvm}
KPKG=${KPKG:-linux-image-amd64}
mkdir -p "$OUT/dl"
need() { dpkg -s "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; }; }
need qemu-system-x86
need busybox-static
need cpio
if [ ! -s "$OUT/vmlinuz" ]; then
  # linux-image-amd64 is a metapackage: download the versioned image it depends on.
  versioned=$(apt-cache depends "$KPKG" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  (cd "$OUT/dl" && apt-get download "$versioned" >/dev/null)
  rm -rf "$OUT/dl/x" && mkdir -p "$OUT/dl/x"
  dpkg-deb --fsys-tarfile "$OUT/dl/${versioned}"_*.deb | tar -x -C "$OUT/dl/x" ./boot
  cp "$OUT/dl/x/boot/vmlinuz-${versioned#linux-image-}" "$OUT/vmlinuz.tmp"
  mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
  rm -rf "$OUT/dl"
fi
mkinit() { # $1 = variant, $2 = what init does after the marker
  root="$OUT/root-$1"; rm -rf "$root"; mkdir -p "$root/bin" "$root/proc" "$root/dev" "$root/sys"
  cp /bin/busybox "$root/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n/bin/busybox echo microvm-ok\n%s\n' "$2" > "$root/init"
  chmod 755 "$root/init"
  (cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9n) > "$OUT/initramfs-$1.gz.tmp"
  mv "$OUT/initramfs-$1.gz.tmp" "$OUT/initramfs-$1.gz"
  rm -rf "$root"
}
[ -s "$OUT/initramfs-poweroff.gz" ] || mkinit poweroff '/bin/busybox poweroff -f'
[ -s "$OUT/initramfs-sleep.gz" ] || mkinit sleep 'exec /bin/busybox sleep 100000'
