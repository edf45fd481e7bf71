#!/usr/bin/env bash
# Builds the sample workloads from source into samples/build/: every crate for
# wasm32-wasip1 (NAME.wasm), and hello and escape for wasm32-wasip2 as components
# (NAME.component.wasm), frontend-app (a wasi:http handler) and conformance-p2 (the WASI 0.2
# conformance guest), tcp-kv and tcp-client (plain TCP over wasi:sockets) and udp-echo (UDP) for wasm32-wasip2
# (tcp-kv also for wasm32-wasip1, tcp-kv.p1, serving the listener pre-opened for -p, and
# natively, tcp-kv.native); and busybox-oci.tar, a native busybox image
# (samples/busybox-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/samples"
cargo build --quiet --release --manifest-path samples/Cargo.toml --target wasm32-wasip1 \
  --target-dir "$target_dir" --workspace --exclude frontend-app --exclude conformance-p2 --exclude tcp-client --exclude udp-echo
cargo build --quiet --release --manifest-path samples/Cargo.toml --target wasm32-wasip2 \
  --target-dir "$target_dir" -p hello -p escape -p frontend-app -p conformance-p2 -p tcp-kv -p tcp-client -p udp-echo
# The TCP sample built natively too: the same server, for wrun-bench tcp's runc row.
cargo build --quiet --release --manifest-path samples/Cargo.toml --target x86_64-unknown-linux-musl \
  --target-dir "$target_dir" -p tcp-kv
mkdir -p samples/build
cp "$target_dir/x86_64-unknown-linux-musl/release/tcp-kv" samples/build/tcp-kv.native
for name in hello cat spin hog exit echo escape idle conformance-p1; do
  cp "$target_dir/wasm32-wasip1/release/$name.wasm" "samples/build/$name.wasm"
done
cp "$target_dir/wasm32-wasip1/release/tcp-kv.wasm" samples/build/tcp-kv.p1.wasm
for name in hello escape conformance-p2; do
  cp "$target_dir/wasm32-wasip2/release/$name.wasm" "samples/build/$name.component.wasm"
done
for name in frontend_app tcp-kv tcp-client udp-echo; do
  cp "$target_dir/wasm32-wasip2/release/$name.wasm" "samples/build/${name//_/-}.wasm"
done
samples/busybox-image.sh >/dev/null
