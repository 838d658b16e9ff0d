#!/usr/bin/env bash
# fc7's CPU training engine against PyTorch on the same networks, shapes and threads, in one
# run: forward + backward + SGD steps of the quick network (batch 64) and the paper network
# (batch 128), 1,000 classes, alternating fc7 and PyTorch ROUNDS times so that a neighbour's
# load hits both; prints each rate, the median ratio per network, fc7's split by operation
# and the CPU's FMA peak per core (scripts/bench/fma_peak.c), for shares of peak.
# ISA="native avx2" also runs both engines held to AVX2 on this CPU (fc7 built with
# --no-default-features, PyTorch with ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and
# MKL_ENABLE_INSTRUCTIONS): the instruction set of a CPU without AVX-512, not its clocks or caches.
# PyTorch comes from PyPI into a virtual environment (CPU use only; ~5 GB with its CUDA wheels).
# Usage: [ISA="native avx2"] scripts/bench/cpu-train.sh [ROUNDS]
#        (default 3 rounds, ISA native; ~6 minutes per ISA on 2 cores after the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
isas=${ISA:-native}
venv=${FC7_TORCH_VENV:-$HOME/.cache/fc7/torch-venv}
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "torch==${FC7_TORCH_VERSION:-2.15.0}" numpy
fi
# Cargo names the bench binary it built (both builds' binaries stay in target/).
bench_of() {
  python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("target", {}).get("name") == "fc7bench" and m.get("executable"): print(m["executable"])'
}
for isa in $isas; do
  case $isa in
    native) flags=() ;;
    avx2) flags=(--no-default-features) ;;
    *) echo "cpu-train.sh: ISA must list native and/or avx2, not '$isa'" >&2; exit 2 ;;
  esac
  exe=$(cargo build --release --benches -q "${flags[@]}" --message-format=json | bench_of)
  cp "$exe" "target/release/fc7bench-$isa"
done
# PyTorch held to an instruction set; native leaves it to choose.
torch_env() {
  if [ "$1" = avx2 ]; then
    echo ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
  fi
}
threads=$(nproc)
echo "machine: $threads cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(grep -o -m1 'avx512f' /proc/cpuinfo || echo 'no avx512f'), $(date -u +%F)"
# The CPU's FMA peak, every core at once (needs a C compiler; skipped without one).
if command -v cc >/dev/null; then
  cc -O2 -mavx2 -mfma scripts/bench/fma_peak.c -o target/release/fma-peak
  for _ in $(seq "$threads"); do target/release/fma-peak & done; wait
  if grep -q avx512f /proc/cpuinfo; then
    cc -O2 -mavx512f scripts/bench/fma_peak.c -o target/release/fma-peak-512
    for _ in $(seq "$threads"); do target/release/fma-peak-512 & done; wait
  fi
fi
rate() { sed -n 's/.*images\/s=\([0-9.]*\).*/\1/p'; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
for spec in "quick 64 20" "paper 128 3"; do
  set -- $spec
  declare -A ratios=()
  for r in $(seq "$rounds"); do
    for isa in $isas; do
      line=$(RAYON_NUM_THREADS=$threads "target/release/fc7bench-$isa" train-step "$1" "$2" "$3" cpu 1000)
      echo "[$isa] $line"
      f=$(rate <<<"$line")
      line=$(env $(torch_env "$isa") "$venv/bin/python" scripts/bench/torch_train.py "$1" "$2" "$3" "$threads" 1000)
      echo "[$isa] $line"
      t=$(rate <<<"$line")
      ratios[$isa]+="$(python3 -c "print(f'{$f / $t:.3f}')") "
    done
  done
  for isa in $isas; do
    # shellcheck disable=SC2086
    echo "ratio $1 batch $2 [$isa] (fc7 / PyTorch, each round): ${ratios[$isa]}; median $(median ${ratios[$isa]})"
  done
  unset ratios
done
for isa in $isas; do
  echo "[$isa] fc7's split of a quick step:"
  "target/release/fc7bench-$isa" train-profile quick 64 20 1000
done
