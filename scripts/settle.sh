#!/usr/bin/env bash
# Has the page cache hold each binary in 2 MiB folios, where the filesystem caches files in
# large folios (ext4 and XFS on recent kernels): the kernel then maps each 2 MiB of wrun's code
# with one page fault instead of one per 64 KiB (docs/architecture.md, "wrun's own code pages").
# Elsewhere the file is only rewritten unchanged. The benefit lasts while the binary stays cached.
#
#   settle.sh FILE...              in place: the same file (inode, owner, mode, links) has its
#                                  cached pages dropped and is written again in 2 MiB writes;
#                                  a file being executed is left as it is, with a note
#   settle.sh --into DIR FILE...   a new copy in DIR, written in 2 MiB writes, mode 0755,
#                                  renamed over DIR/NAME (an install; a running copy keeps its own)
set -euo pipefail
usage() { echo "usage: settle.sh [--into DIR] FILE..." >&2; exit 2; }
into=""
if [[ "${1:-}" == "--into" ]]; then
  [[ $# -ge 3 ]] || usage
  into="$2"
  shift 2
fi
[[ $# -ge 1 ]] || usage
temporary=""
trap 'rm -f -- "$temporary"' EXIT
for file in "$@"; do
  if [[ -n "$into" ]]; then
    temporary=$(mktemp -- "$into/.settle.XXXXXX")
    dd if="$file" of="$temporary" bs=2M status=none
    chmod 0755 -- "$temporary"
    mv -f -- "$temporary" "$into/$(basename -- "$file")"
    temporary=""
    continue
  fi
  temporary=$(mktemp)
  cp -- "$file" "$temporary"
  sync -- "$file"
  # Drops the file's clean cached pages (coreutils' documented use of nocache with count=0).
  dd if="$file" iflag=nocache count=0 status=none
  if ! dd if="$temporary" of="$file" bs=2M conv=notrunc,fsync status=none 2>/dev/null; then
    echo "settle.sh: $file is busy (being executed?): left as it is" >&2
  fi
  rm -f -- "$temporary"
  temporary=""
done
