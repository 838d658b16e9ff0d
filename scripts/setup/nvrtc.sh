#!/usr/bin/env bash
# Fetches NVRTC (NVIDIA's run-time CUDA compiler) from its official PyPI wheel into fc7's cache,
# so that the tests can compile the CUDA engine's kernels on a machine without a GPU. Idempotent.
# Prints the library folder (for LD_LIBRARY_PATH) on its last line.
set -euo pipefail
ver=13.0.88
. "$(dirname "$0")/wheel-cache.sh"
dest=$cache/nvrtc-$ver
if [ -f "$dest/libnvrtc.so.13" ]; then echo "$dest"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch_wheel "nvidia-cuda-nvrtc==$ver" "$tmp"
python3 -m zipfile -e "$tmp"/*.whl "$tmp/x" >/dev/null
mkdir -p "$dest.part"
cp "$tmp"/x/nvidia/cu13/lib/libnvrtc* "$dest.part/"
rm -rf "$dest"
mv "$dest.part" "$dest"
echo "$dest"
