#!/usr/bin/env bash
# Fetches NVRTC (NVIDIA's run-time CUDA compiler) from its official PyPI wheel into fc7's cache,
# so that the tests can compile the CUDA engine's kernels on a machine without a GPU. Idempotent.
# Prints the library folder (for LD_LIBRARY_PATH) on its last line.
set -euo pipefail
ver=13.0.88
cache=${FC7_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fc7}
dest=$cache/nvrtc-$ver
if [ -f "$dest/libnvrtc.so.13" ]; then echo "$dest"; exit 0; fi
command -v python3 >/dev/null || { echo "setup-nvrtc: python3 is needed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup-nvrtc: downloading nvidia-cuda-nvrtc==$ver from PyPI..." >&2
python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nvidia-cuda-nvrtc==$ver" >&2
python3 -m zipfile -e "$tmp"/*.whl "$tmp/x" >/dev/null
mkdir -p "$dest.part"
cp "$tmp"/x/nvidia/cu13/lib/libnvrtc* "$dest.part/"
rm -rf "$dest"
mv "$dest.part" "$dest"
echo "$dest"
