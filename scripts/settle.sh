#!/usr/bin/env bash
# Writes each binary anew in 2 MiB writes (to a temporary file, then renamed over the target),
# so that the page cache holds it in 2 MiB folios where the filesystem caches files in large
# folios (ext4 and XFS on recent kernels); the kernel then maps each 2 MiB of wrun's code with
# one page fault instead of one per 64 KiB (docs/architecture.md, "wrun's own code pages").
# Elsewhere it is a plain copy. The benefit lasts while the binary stays cached.
#
#   settle.sh FILE...              in place
#   settle.sh --into DIR FILE...   into DIR, mode 0755 (an install)
set -euo pipefail
into=""
if [[ "${1:-}" == "--into" ]]; then
  into="$2"
  shift 2
fi
for file in "$@"; do
  target="${into:+$into/$(basename "$file")}"
  target="${target:-$file}"
  temporary="$target.settle.$$"
  dd if="$file" of="$temporary" bs=2M status=none
  chmod 0755 "$temporary"
  mv -f "$temporary" "$target"
done
