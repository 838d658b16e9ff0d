#!/usr/bin/env bash
# Training memory and feed rate on this machine (BENCHMARKS.md, "Streamed training"): for each
# N in SIZES (default "10000 100000") generated 72×72 pictures in 10 classes, packed at 256,
# then the peak RSS of `fc7 train --preset paper --max-steps 2 --device cpu` and the feed's
# crops/s of 224² (`fc7bench feed`). Needs about N × 0.2 MB of disk under $WORK (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${WORK:-/tmp}/fc7-bench-memory
sizes=${SIZES:-10000 100000}
cargo build --release --bin fc7 -q
cargo bench --no-run --bench fc7bench -q 2>/dev/null
bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
for n in $sizes; do
  rm -rf "$work" && mkdir -p "$work"
  target/release/fc7 dataset synthetic "$work/data" --classes 10 --per-class $((n / 10)) >/dev/null
  echo "== $n images"
  /usr/bin/time -f "pack: %e s, peak RSS %M KB" target/release/fc7 dataset pack "$work/data" --cache "$work/packs"
  /usr/bin/time -f "train --max-steps 2: %e s, peak RSS %M KB" target/release/fc7 train "$work/data" \
    --preset paper --max-steps 2 --device cpu --cache "$work/packs" --out "$work/m" --quiet 2>&1 | grep -v '^note\|^engine'
  "$bench" feed "$work/data" 256 224 128 60 "$work/packs"
done
rm -rf "$work"
