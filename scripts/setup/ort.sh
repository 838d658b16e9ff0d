#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library from the official PyPI wheel (no other download source)
# and unpacks it into fc7's cache, where the fc7 binary finds it. Idempotent.
# Usage: scripts/setup/ort.sh [--gpu] [--version X.Y.Z]
# Prints the library's path on its last line.
set -euo pipefail
ver=$(cat "$(dirname "$0")/ORT_VERSION")  # the one place the version is written
gpu=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu=1 ;;
    --version) ver=$2; shift ;;
    *) echo "usage: $0 [--gpu] [--version X.Y.Z]" >&2; exit 2 ;;
  esac
  shift
done
. "$(dirname "$0")/wheel-cache.sh"
if [ $gpu = 1 ]; then flavour=gpu; pkg=onnxruntime-gpu; else flavour=cpu; pkg=onnxruntime; fi
dest=$cache/onnxruntime-$ver-$flavour
lib=$dest/libonnxruntime.so.$ver
if [ -f "$lib" ]; then echo "$lib"; exit 0; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The wheel's shared library does not depend on the Python version: take the cp312 manylinux one.
fetch_wheel "$pkg==$ver" "$tmp" --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
python3 -m zipfile -e "$tmp"/*.whl "$tmp/x" >/dev/null
mkdir -p "$dest.part"
cp "$tmp"/x/onnxruntime/capi/libonnxruntime.so.* "$dest.part/"
if [ $gpu = 1 ]; then
  cp "$tmp"/x/onnxruntime/capi/libonnxruntime_providers_cuda.so \
     "$tmp"/x/onnxruntime/capi/libonnxruntime_providers_shared.so "$dest.part/"
fi
rm -rf "$dest"
mv "$dest.part" "$dest"
[ -f "$lib" ] || { echo "setup-ort: the wheel had no libonnxruntime.so.$ver" >&2; exit 1; }
echo "$lib"
