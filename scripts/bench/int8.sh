#!/usr/bin/env bash
# The int8 model and the cold start (issue 11) behind BENCHMARKS.md, side by side in one run:
#   1. fc7 extraction, fp32 vs int8 (Rust, ONNX Runtime CPU), and Python onnxruntime on fp32
#   2. agreement: relative fc7 error and recall@6 of int8's exact neighbours against fp32's
#   3. fc7 index end to end on a mixed photo folder: fp32, int8, and the Python pipeline
#      (scripts/bench/python_index.py: PIL draft decoding in a Pool, onnxruntime, sqlite3),
#      three rounds alternating (this kind of VM drifts by 1.5x within minutes), median ratios
#   4. cold start: a query of an image outside the index, first (saves the optimised graph)
#      and again (loads it); fc7 index of a one-image folder; session times
#   5. with FMNIST=1: the Fashion-MNIST quick model (models/fmnist-quick.onnx) quantised on its
#      training images: recall@6 on 2,000 test images and Figure 4 for both (~8 minutes)
# Usage: [FMNIST=1] scripts/bench/int8.sh [WORKDIR]   (default /tmp/fc7-int8; ~6 minutes, 2 GB)
set -euo pipefail
cd "$(dirname "$0")/../.."
w=${1:-/tmp/fc7-int8}
mkdir -p "$w"
scripts/setup/ort.sh >/dev/null
python3 -c "import onnxruntime, PIL" 2>/dev/null ||
  python3 -m pip install -q "onnxruntime==$(cat scripts/setup/ORT_VERSION)" numpy pillow
cargo build --release --bins --benches -q
bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
fc7=target/release/fc7
t=$(nproc)
echo "machine: $t cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
[ -f "$w/m.onnx" ] || $fc7 model init --random --classes 0 --out "$w/m.onnx" >/dev/null
[ -d "$w/cal" ] || $bench make-photos "$w/cal" 64 800 600
if [ ! -d "$w/mixed" ]; then
  $bench make-photos "$w/mixed/small" 150 1024 768
  $bench make-photos "$w/mixed/medium" 50 2000 1500
  $bench make-photos "$w/mixed/large" 12 4000 3000
fi
$fc7 model quantize "$w/m.onnx" --calibrate "$w/cal" --out "$w/m-int8.onnx"

echo "## 1. extraction, batch 32, $t threads (two rounds)"
for round in 1 2; do
  $bench extract "$w/m.onnx" cpu 32 6 | sed 's/^/fp32 /'
  $bench extract "$w/m-int8.onnx" cpu 32 6 | sed 's/^/int8 /'
  python3 scripts/bench/ort.py "$w/m.onnx" 32 6 "$t" | sed 's/^/fp32 /'
done

echo "## 2. int8 against fp32"
$bench agree-models "$w/m.onnx" "$w/m-int8.onnx" "$w/mixed" 212 6

echo "## 3. indexing $(find "$w/mixed" -type f | wc -l) mixed photos (1-12 MP) end to end, 3 rounds alternating"
# Wall seconds of a command; a failing command stops the script (set -e) instead of timing.
secs() {
  local out
  out=$({ /usr/bin/time -f %e "$@" >/dev/null; } 2>&1) || { echo "$out" >&2; return 1; }
  echo "${out##*$'\n'}"
}
: >"$w/times" # an interrupted earlier run leaves no rounds behind
for round in 1 2 3; do
  for m in m m-int8; do
    rm -rf "$w/idx-$m"
    s=$(secs $fc7 index "$w/mixed" --index "$w/idx-$m" --model "$w/$m.onnx" --device cpu --quiet)
    echo "fc7 index ($m): $s s wall" | tee -a "$w/times"
  done
  rm -f "$w/py.sqlite"
  s=$(secs python3 scripts/bench/python_index.py "$w/m.onnx" "$w/mixed" "$w/py.sqlite" "$t")
  echo "python pipeline (fp32): $s s wall" | tee -a "$w/times"
done
python3 - "$w/times" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    name, s = line.rsplit(": ", 1)
    t.setdefault(name, []).append(float(s.split()[0]))
py = statistics.median(t["python pipeline (fp32)"])
for m in ("m", "m-int8"):
    f = statistics.median(t[f"fc7 index ({m})"])
    print(f"fc7 index ({m}) against the python fp32 pipeline, medians: {f:.2f} s vs {py:.2f} s = {py / f:.2f}x")
PY
rm -f "$w/times"

echo "## 4. cold start (an empty cache, then the same command again)"
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$(ls ~/.cache/fc7/onnxruntime-*-cpu/libonnxruntime.so.* | head -1)
for m in m m-int8; do
  export FC7_CACHE="$w/cache-$m"
  rm -rf "$FC7_CACHE"
  for run in first again; do
    /usr/bin/time -f "query outside the index ($m, $run): %e s wall" \
      $fc7 query "$w/cal/photo00001.jpg" --index "$w/idx-$m" >/dev/null
  done
  mkdir -p "$w/one" && cp "$w/cal/photo00002.jpg" "$w/one/"
  rm -rf "$w/idx-one"
  /usr/bin/time -f "fc7 index of one image ($m): %e s wall" \
    $fc7 index "$w/one" --index "$w/idx-one" --model "$w/$m.onnx" --device cpu >/dev/null
done
unset FC7_CACHE

if [[ ${FMNIST:-0} == 1 ]]; then
  echo "## 5. Fashion-MNIST quick model"
  $fc7 dataset fashion-mnist "$w/fm" >/dev/null
  $fc7 model quantize models/fmnist-quick.onnx --calibrate "$w/fm/train" --out "$w/fq-int8.onnx"
  $bench agree-models models/fmnist-quick.onnx "$w/fq-int8.onnx" "$w/fm/test" 2000 6
  for m in models/fmnist-quick.onnx "$w/fq-int8.onnx"; do
    $fc7 eval figure4 --model "$m" --train "$w/fm/train" --test "$w/fm/test" --device cpu \
      --out "$w/fig-$(basename "$m" .onnx)" | grep -i "precision"
  done
fi
