#!/usr/bin/env bash
# The demo, end to end on a fresh machine: sets up ONNX Runtime, builds fc7, makes a model,
# indexes a photo folder and queries it.
# Usage: scripts/demo.sh [PHOTOS]   (without PHOTOS: 300 generated sample pictures)
# Until `fc7 train` lands, the model is a randomly initialised AlexNet (He init): its fc7 tells
# images apart, but its neighbours are not semantic yet.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-build.sh
echo "== ONNX Runtime"; scripts/setup-ort.sh
echo "== building fc7 (release)"; cargo build --release --bins --benches
fc7=target/release/fc7
photos=${1:-}
if [ -z "$photos" ]; then
  photos=target/demo-photos
  if [ ! -d "$photos" ]; then
    echo "== generating sample pictures in $photos"
    bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
    "$bench" make-photos "$photos" 300 800 600
  fi
fi
[ -f models/default.onnx ] || { echo "== model"; $fc7 model init --random --out models/default.onnx; }
echo "== fc7 index $photos"; $fc7 index "$photos" --index indexes/demo
echo "== fc7 info"; $fc7 info --index indexes/demo
first=$(find "$photos" -type f | sort | head -1)
echo "== fc7 query $first"; $fc7 query "$first" --index indexes/demo
