#!/usr/bin/env bash
# Runs the benchmarks behind BENCHMARKS.md on this machine and prints their raw lines.
# Usage: scripts/bench/cpu.sh [WORKDIR]   (default /tmp/fc7-bench; needs ~2 GB and ~20 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
w=${1:-/tmp/fc7-bench}
mkdir -p "$w"
scripts/setup/ort.sh >/dev/null
python3 -c "import onnxruntime" 2>/dev/null || python3 -m pip install -q "onnxruntime==$(cat scripts/setup/ORT_VERSION)" numpy
cargo build --release --bins --benches -q
bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
fc7=target/release/fc7
threads=$(nproc)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
[ -f "$w/m.onnx" ] || $fc7 model init --random --out "$w/m.onnx" >/dev/null

echo "## 1. fc7 extraction, Rust (ort) vs Python onnxruntime, $threads threads"
for b in 32 1; do
  it=$(( b == 1 ? 60 : 6 ))
  $bench extract "$w/m.onnx" cpu $b $it
  python3 scripts/bench/ort.py "$w/m.onnx" $b $it $threads
done

echo "## 2. decoding a 12-megapixel JPEG: fast path vs image decode + resize"
[ -f "$w/big/photo00000.jpg" ] || $bench make-photos "$w/big" 1 4000 3000
$bench decode "$w/big/photo00000.jpg" 5

echo "## 3. fc7 index end to end on 3-megapixel JPEGs vs pure inference"
[ -d "$w/photos3mp" ] || $bench make-photos "$w/photos3mp" 300 2000 1500
rm -rf "$w/idx3mp"
$fc7 index "$w/photos3mp" --index "$w/idx3mp" --model "$w/m.onnx" --device cpu --json | grep -E 'images_per_second|embed_seconds|graph_seconds|"seconds"'
$bench extract "$w/m.onnx" cpu 32 6

echo "## 4. a 10,000-image index: build, cold query, HNSW recall@6"
[ -d "$w/photos10k" ] || $bench make-photos "$w/photos10k" 10000 320 240
[ -f "$w/idx10k/catalog.sqlite" ] || $fc7 index "$w/photos10k" --index "$w/idx10k" --model "$w/m.onnx" --device cpu --json | grep -E 'images_per_second|embed_seconds|graph_seconds|"seconds"'
du -sh "$w/idx10k"
for i in 1 2 3; do
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "cold query (indexed image): %e s wall, %M KB max RSS" $fc7 query "$w/photos10k/photo0$((1234 + i)).jpg" --index "$w/idx10k" >/dev/null
done
/usr/bin/time -f "query of an image outside the index (model load + embed + search): %e s wall, %M KB" \
  $fc7 query "$w/big/photo00000.jpg" --index "$w/idx10k" >/dev/null
$bench recall "$w/idx10k" 500 6
