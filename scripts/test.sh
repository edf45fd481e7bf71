#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint gates, unit tests, and the integration
# tests that run the real binaries as root against the real kernel. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo build --release --locked --bins
cargo build --release --locked -p wrun-engine --features test-hooks --bin wrun-hooked
./scripts/build-samples.sh
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked --workspace
