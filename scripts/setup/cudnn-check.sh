#!/usr/bin/env bash
# Fetches cuDNN 9 from its official PyPI wheel (nvidia-cudnn-cu13) and keeps only the parts its
# descriptor functions need (libcudnn, _graph, _ops, _cnn), so the tests can check the CUDA
# engine's cuDNN descriptors on a machine without a GPU. Not a full cuDNN: a GPU machine needs
# the whole wheel (or a CUDA install). Idempotent; prints the library folder on its last line.
set -euo pipefail
ver=9.28.1.4
. "$(dirname "$0")/wheel-cache.sh"
dest=$cache/cudnn-$ver-descriptors
if [ -f "$dest/libcudnn.so.9" ]; then echo "$dest"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch_wheel "nvidia-cudnn-cu13==$ver" "$tmp"  # ~520 MB
mkdir -p "$dest.part"
python3 - "$tmp" "$dest.part" <<'PY'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for part in ["", "_graph", "_ops", "_cnn"]:
        name = f"nvidia/cudnn/lib/libcudnn{part}.so.9"
        with z.open(name) as src, open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as dst:
            dst.write(src.read())
PY
rm -rf "$dest"
mv "$dest.part" "$dest"
echo "$dest"
