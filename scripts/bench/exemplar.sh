#!/usr/bin/env bash
# Exemplar training's benchmarks behind BENCHMARKS.md ("Exemplar training", issue 13), in one
# run on this machine:
#   fmnist  Fashion-MNIST with its labels withheld: `fc7 train --exemplar` on its first 8,000
#           training images (the default --surrogates are drawn from them), then Figure 4 of
#           the 60,000 labelled training images against the test set (the supervised quick
#           model: 0.848; raw pixels: 0.8045).
#   edits   200 generated distinct scenes and 6 edited copies of each (benches/edits.rs): how
#           often each copy's nearest indexed image is its source, with an exemplar model
#           trained on the scenes against a random He-initialised AlexNet, same index, same run.
#   flat    as fmnist, on every 7th of the 60,000 training images in one flat folder (no class
#           folders: nothing to score during training).
# Usage: [HOW=--self-supervised [NAME=ss-x]] scripts/bench/exemplar.sh [fmnist|flat|edits|all] [WORKDIR]
#   (default --exemplar, all, /tmp/fc7-exemplar; HOW=--self-supervised measures instance
#   discrimination, issue 27, the same way; HOW may carry more flags, NAME then names the
#   outputs). fmnist: ~20 minutes of training + ~3 of Figure 4
#   on 2 cores (--self-supervised plans 150 epochs for these 8,000 images: ~28 minutes on a
#   Zen 5; HOW="--self-supervised --epochs 20" for the earlier default); edits: ~6 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
part=${1:-all}
w=${2:-/tmp/fc7-exemplar}
how=${HOW:---exemplar}
name=${NAME:-${how#--}}
cargo build --release --bins --benches -q
fc7=target/release/fc7
edits=$(ls -t target/release/deps/edits-* | grep -v '\.d$' | head -1)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
mkdir -p "$w"

fmnist() { # FOLDER LABEL
  /usr/bin/time -f "$name training ($2): %e s wall, %M KB max RSS" \
    $fc7 train "$1" $how --preset quick --device cpu --out "$w/fmnist-$name-$2" 2>&1 |
    tr '\r' '\n' | grep -E '^epoch|^wrote|stopped|wall'
  $fc7 eval figure4 --model "$w/fmnist-$name-$2.onnx" --train "$w/fm/train" --test "$w/fm/test" \
    --device cpu --out "$w/figure4-$name-$2" | tail -8
}
if [[ $part != edits ]]; then
  $fc7 dataset fashion-mnist "$w/fm" >/dev/null
fi
if [[ $part == fmnist || $part == all ]]; then
  $fc7 dataset fashion-mnist "$w/fm8k" --limit 8000 >/dev/null
  rm -rf "$w/fm8k/test"   # the unlabelled folder: 8,000 training images, their class folders unused
  fmnist "$w/fm8k/train" first8000
fi
if [[ $part == flat || $part == all ]]; then
  rm -rf "$w/flat" && mkdir -p "$w/flat"
  find "$w/fm/train" -name '*.png' | sort | awk 'NR % 7 == 0' | while read -r f; do
    cp "$f" "$w/flat/"
  done
  fmnist "$w/flat" every7th
fi

if [[ $part == edits || $part == all ]]; then
  rm -rf "$w/scenes" "$w/copies"
  $fc7 dataset imagenet-like "$w/scenes" --classes 200 --per-class 1 --seed 7 >/dev/null
  $edits edits "$w/scenes/train" "$w/copies"
  $fc7 train "$w/scenes/train" $how --preset quick --device cpu --epochs 12 \
    --out "$w/scenes-$name" --quiet 2>&1 | tail -1
  $fc7 model init --random --classes 0 --out "$w/random.onnx" >/dev/null
  for m in scenes-$name random; do
    rm -rf "$w/idx-$m"
    $fc7 index "$w/scenes/train" --model "$w/$m.onnx" --index "$w/idx-$m" --device cpu --quiet >/dev/null
    $fc7 query "$w"/copies/*.jpg --index "$w/idx-$m" -k 1 --json --device cpu >"$w/hits-$m.json"
    python3 - "$w/hits-$m.json" "$m" <<'PY'
import json, sys, collections
r = json.load(open(sys.argv[1]))["results"]
hits, n = collections.Counter(), collections.Counter()
for q in r:
    name = q["query"].rsplit("/", 1)[1]
    source, edit = name.rsplit(".", 2)[0], name.rsplit(".", 2)[1]
    top = q["neighbours"][0]["path"]
    n[edit] += 1
    hits[edit] += top.endswith(source.split("-", 1)[1] + ".jpg") and ("/" + source.split("-", 1)[0] + "/") in top
print(f"{sys.argv[2]:>16}: source first for {sum(hits.values())}/{sum(n.values())}; " +
      ", ".join(f"{e} {hits[e]}/{n[e]}" for e in sorted(n)))
PY
  done
fi
