#!/usr/bin/env bash
# fc7's int8 model on a CPU without VNNI, by emulation: the model quantised on GALLERY, then
# GALLERY and QUERIES (class folders) indexed with fp32 and int8 natively and with int8 under
# QEMU's EPYC-Milan (a Zen 3: AVX2, no AVX-512, no VNNI; the same binary and ONNX Runtime), and
# the vectors compared (scripts/bench/vectors_agree.py: relative error against fp32, precision@6
# of class by exact search, top-6 overlap with fp32's neighbours). Emulation gives the arithmetic
# of such a CPU, not its speed. Any int8 models listed in EXTRA (e.g. one an older fc7 wrote) are
# run both ways too.
# Usage: [EXTRA="a-int8.onnx ..."] scripts/bench/int8-no-vnni.sh MODEL GALLERY QUERIES [WORKDIR]
#        e.g. after scripts/demo.sh, on 200 + 50 images a class of Fashion-MNIST (~3 minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1 gallery=$2 queries=$3 w=${4:-/tmp/fc7-no-vnni}
scripts/setup/qemu.sh
ort=$(scripts/setup/ort.sh | tail -n1)
cargo build --release --bin fc7 -q
fc7=$PWD/target/release/fc7
rm -rf "$w" && mkdir -p "$w"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(grep -o -m1 -E 'avx512_vnni|avx_vnni' /proc/cpuinfo | head -n1 || echo 'no VNNI'), $(date -u +%F)"
$fc7 model quantize "$model" --calibrate "$gallery" --out "$w/int8.onnx" | tail -n1
# run NAME MODEL [emulated]: both folders indexed, their vectors exported (a cache each: QEMU shows
# the host's /proc/cpuinfo, which names the optimised graphs' entries)
run() {
  local pre=()
  [ "${3:-}" = emulated ] && pre=(qemu-x86_64 -cpu EPYC-Milan)
  for part in gallery queries; do
    local dir=$gallery; [ $part = queries ] && dir=$queries
    FC7_CACHE="$w/cache-$1" ORT_DYLIB_PATH=$ort "${pre[@]}" $fc7 index "$dir" --model "$2" \
      --index "$w/$1/$part-idx" --device cpu -q 2>&1 | grep -v 'warning: TCG' || true
    $fc7 export-vectors --index "$w/$1/$part-idx" --out "$w/$1/$part" >/dev/null
  done
}
names=(fp32 int8 int8-zen3)
run fp32 "$model"
run int8 "$w/int8.onnx"
run int8-zen3 "$w/int8.onnx" emulated
for extra in ${EXTRA:-}; do
  n=$(basename "$extra" .onnx)
  run "$n" "$extra"
  run "$n-zen3" "$extra" emulated
  names+=("$n" "$n-zen3")
done
cd "$w"
python3 "$OLDPWD/scripts/bench/vectors_agree.py" "${names[@]}"
python3 "$OLDPWD/scripts/bench/vectors_agree.py" int8 int8-zen3
