#!/usr/bin/env bash
# Prepares .devrun/ (git-ignored) for scripts/device-train.sh on the lent GPU machine: the
# stripped, xz'd release fc7 binary, the Fashion-MNIST IDX files (the device has no dataset
# package) and PyTorch's reference script. Run here, then one device call carrying .devrun.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin fc7
mkdir -p .devrun/fmnist
strip -o .devrun/fc7 target/release/fc7
xz -f -6 .devrun/fc7
cp /usr/share/datasets/fashion-mnist/*.gz .devrun/fmnist/
cp -f ../shared/device/torch_anchor.py .devrun/
du -sh .devrun
