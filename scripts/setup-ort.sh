#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library from the official PyPI wheel (no other download source)
# and unpacks it into fc7's cache, where the fc7 binary finds it. Idempotent.
# Usage: scripts/setup-ort.sh [--gpu] [--version X.Y.Z]
# Prints the library's path on its last line.
set -euo pipefail
ver=1.31.1
gpu=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu=1 ;;
    --version) ver=$2; shift ;;
    *) echo "usage: $0 [--gpu] [--version X.Y.Z]" >&2; exit 2 ;;
  esac
  shift
done
cache=${FC7_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fc7}
if [ $gpu = 1 ]; then flavour=gpu; pkg=onnxruntime-gpu; else flavour=cpu; pkg=onnxruntime; fi
dest=$cache/onnxruntime-$ver-$flavour
lib=$dest/libonnxruntime.so.$ver
if [ -f "$lib" ]; then echo "$lib"; exit 0; fi

command -v python3 >/dev/null || { echo "setup-ort: python3 is needed (apt-get install python3 python3-pip)" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "setup-ort: pip is needed (apt-get install python3-pip)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup-ort: downloading $pkg==$ver from PyPI..." >&2
# The wheel's shared library does not depend on the Python version: take the cp312 manylinux one.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$tmp" "$pkg==$ver" >&2
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
