#!/usr/bin/env bash
# Debian's Chromium and its WebDriver, for the browser test of `fc7 serve`
# (tests/browser/gallery.py). Installs them with apt when missing.
set -euo pipefail
command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
echo "setup-browser: installing chromium chromium-driver" >&2
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q chromium chromium-driver >/dev/null
