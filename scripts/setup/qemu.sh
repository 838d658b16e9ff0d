#!/usr/bin/env bash
# Debian's QEMU user-mode emulator, for running fc7 on an emulated CPU without VNNI
# (tests/emulated/int8_no_vnni.py, `-cpu EPYC-Milan`). Installs it with apt when missing.
set -euo pipefail
command -v qemu-x86_64 >/dev/null && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
echo "setup-qemu: installing qemu-user" >&2
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q qemu-user >/dev/null
