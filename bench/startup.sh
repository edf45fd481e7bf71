#!/usr/bin/env bash
# Start-up of a warm `wrun run` of the hello sample next to /bin/true and the kernel floor for
# the same isolation (`unshare` with the same namespaces), measured side by side with hyperfine;
# prints medians. Usage: bench/startup.sh [RUNS]   (wrun and the samples must be built)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-300}"
wrun="${WRUN:-${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-musl/release/wrun}"
hello="$PWD/samples/build/hello.wasm"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
"$wrun" --root "$root" compile "$hello" >/dev/null
json="$root/results.json"
# One --prepare per command: only the cold run clears the cache first.
hyperfine -N --warmup 30 --runs "$runs" --export-json "$json" \
  --prepare true --command-name "/bin/true" "/bin/true" \
  --prepare true --command-name "unshare (kernel floor)" \
  "unshare --pid --fork --mount --uts --ipc --net /bin/true" \
  --prepare true --command-name "wrun run hello.wasm (warm)" "$wrun --root $root run $hello" \
  --prepare "rm -rf $root/cache" --command-name "wrun run hello.wasm (cold)" \
  "$wrun --root $root run $hello" >/dev/null
python3 - "$json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
floor = next(r["median"] for r in results if r["command"].startswith("unshare"))
print("| command | median | mean | min | max | vs floor |")
print("|---|---:|---:|---:|---:|---:|")
for r in results:
    ms = lambda v: f"{v * 1e3:.2f} ms"
    print(f"| {r['command']} | {ms(r['median'])} | {ms(r['mean'])} | {ms(r['min'])} | {ms(r['max'])} | {r['median'] / floor:.2f}x |")
PY
