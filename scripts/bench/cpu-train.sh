#!/usr/bin/env bash
# fc7's CPU training engine against PyTorch on the same networks, shapes and threads, in one
# run: forward + backward + SGD steps of the quick network (batch 64) and the paper network
# (batch 128), 1,000 classes, alternating fc7 and PyTorch ROUNDS times so that a neighbour's
# load hits both; prints each rate, the median ratio per network, and fc7's split by operation.
# PyTorch comes from PyPI into a virtual environment (CPU use only; ~5 GB with its CUDA wheels).
# Usage: scripts/bench/cpu-train.sh [ROUNDS]   (default 3; ~6 minutes on 2 cores after the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
venv=${FC7_TORCH_VENV:-$HOME/.cache/fc7/torch-venv}
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "torch==${FC7_TORCH_VERSION:-2.15.0}" numpy
fi
cargo build --release --benches -q
bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
threads=$(nproc)
echo "machine: $threads cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(grep -o -m1 'avx512f' /proc/cpuinfo || echo 'no avx512f'), $(date -u +%F)"
rate() { sed -n 's/.*images\/s=\([0-9.]*\).*/\1/p'; }
for spec in "quick 64 20" "paper 128 3"; do
  set -- $spec
  ratios=()
  for r in $(seq "$rounds"); do
    line=$(RAYON_NUM_THREADS=$threads $bench train-step "$1" "$2" "$3" cpu 1000); echo "$line"
    f=$(rate <<<"$line")
    line=$("$venv/bin/python" scripts/bench/torch_train.py "$1" "$2" "$3" "$threads" 1000); echo "$line"
    t=$(rate <<<"$line")
    ratios+=("$(python3 -c "print(f'{$f / $t:.3f}')")")
  done
  echo "ratio $1 batch $2 (fc7 / PyTorch, each round): ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p")"
done
$bench train-profile quick 64 20 1000
