#!/usr/bin/env bash
# Installs everything wrun needs, builds it and the samples, installs `wrun` into
# /usr/local/bin, and runs the hello sample in the sandbox. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --locked --bins
./scripts/build-samples.sh
install -m 0755 "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/wrun" /usr/local/bin/wrun
echo "+ wrun samples/build/hello.wasm"
wrun samples/build/hello.wasm
