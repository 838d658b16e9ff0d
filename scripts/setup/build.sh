#!/usr/bin/env bash
# Build tools fc7 needs beyond Rust: cmake and nasm (libjpeg-turbo is compiled into the binary
# by the turbojpeg crate, with its SIMD code). Installs them with apt when missing.
set -euo pipefail
command -v cargo >/dev/null || { echo "fc7 needs Rust's cargo (https://rustup.rs)" >&2; exit 1; }
need=()
for t in cmake nasm; do command -v "$t" >/dev/null || need+=("$t"); done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
echo "setup-build: installing ${need[*]}" >&2
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q "${need[@]}" >/dev/null
