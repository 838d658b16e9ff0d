#!/usr/bin/env bash
# Prepares .devrun/ (git-ignored) for scripts/device/train.sh and scripts/device/rehearsal.sh
# on the lent GPU machine: the stripped, xz'd release fc7 and fc7bench binaries, the
# Fashion-MNIST IDX files (the device has no dataset package) and PyTorch's reference script.
# Run here, then one device call carrying .devrun.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /usr/share/datasets/fashion-mnist ] || { echo "needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
cargo build --release --bin fc7
bench=$(cargo bench --no-run --bench fc7bench --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "fc7bench":
        print(m["executable"])')
mkdir -p .devrun/fmnist
strip -o .devrun/fc7 target/release/fc7
strip -o .devrun/fc7bench "$bench"
xz -f -6 .devrun/fc7 .devrun/fc7bench
cp /usr/share/datasets/fashion-mnist/*.gz .devrun/fmnist/
cp -f ../shared/device/torch_anchor.py .devrun/
du -sh .devrun
