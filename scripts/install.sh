#!/usr/bin/env bash
# Installs everything wrun needs, builds it and the samples, installs `wrun` into
# /usr/local/bin with the containerd shim, and runs the hello sample in the sandbox. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --locked --bins
./scripts/build-samples.sh
release="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release"
install -m 0755 "$release/containerd-shim-wrun-v1" /usr/local/bin/
./scripts/settle.sh --into /usr/local/bin "$release/wrun"
# The built wrun too, in place (the file cargo links it into): wrun-bench runs it from there.
./scripts/settle.sh "$release/wrun"
# Man pages and shell completions, made by wrun from its own command line.
/usr/local/bin/wrun man /usr/local/share/man/man1
install -d /usr/share/bash-completion/completions /usr/local/share/zsh/site-functions \
  /usr/share/fish/vendor_completions.d
/usr/local/bin/wrun completion bash > /usr/share/bash-completion/completions/wrun
/usr/local/bin/wrun completion zsh > /usr/local/share/zsh/site-functions/_wrun
/usr/local/bin/wrun completion fish > /usr/share/fish/vendor_completions.d/wrun.fish
echo "+ wrun samples/build/hello.wasm"
wrun samples/build/hello.wasm
