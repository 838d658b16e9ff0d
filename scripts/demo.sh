#!/usr/bin/env bash
# The main job, end to end on a fresh machine (8.5-10 minutes on a 2-core Zen 4, build included;
# BENCHMARKS.md has the other machines):
#   build fc7 and set up ONNX Runtime; get Fashion-MNIST (Debian package dataset-fashion-mnist,
#   or, if it cannot be installed, a generated dataset, said clearly); train AlexNet with
#   `--preset quick`; index the training images; render the paper's Figure 4 with its metrics.
# Usage: scripts/demo.sh          (FC7_DEMO_EPOCHS=N to train longer or shorter; default 4, the quick preset's own)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${FC7_DEMO_EPOCHS:-4}
work=target/demo
# Each stage's wall time, said as it ends and again all together at the end, so that a run on
# another machine shows where its minutes went (downloads and installs apart from compiling).
times=() stage_name="" stage_start=$SECONDS
# stage NAME [WHAT]: ends the stage before (its time kept under its NAME), starts NAME.
stage() {
  if [ -n "$stage_name" ]; then
    times+=("$stage_name $((SECONDS - stage_start)) s")
    echo "   ($stage_name took $((SECONDS - stage_start)) s)"
  fi
  stage_name=$1 stage_start=$SECONDS
  [ -n "$1" ] && echo "== $1${2:+: $2}"
  return 0
}
src=/usr/share/datasets/fashion-mnist
mkdir -p "$work"
stage setup "build tools, crates (downloads)"
scripts/setup/build.sh
# ONNX Runtime's wheel and the dataset's package download while cargo compiles: the build keeps
# both cores busy, the downloads wait on the network. (After build.sh: apt takes one at a time.)
downloads() {
  scripts/setup/ort.sh
  if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "== installing dataset-fashion-mnist"
    { $sudo apt-get update -q && $sudo apt-get install -y -q dataset-fashion-mnist; } >/dev/null 2>&1 || true
  fi
}
downloads >"$work/downloads.log" 2>&1 &
downloading=$!
# Only this machine's crates: without --target cargo fetch also takes every other platform's
# (Windows import libraries among them), 57 MB to download and 567 MB unpacked instead of 29 and 191.
cargo fetch -q --target "$(rustc -vV | sed -n 's/^host: //p')"
stage build "fc7, release"
cargo build --release --bins
fc7=target/release/fc7

stage dataset "(and the downloads begun before the build)"
wait $downloading || { cat "$work/downloads.log" >&2; echo "demo: ONNX Runtime's setup failed (above)" >&2; exit 1; }
cat "$work/downloads.log"
if [ -f "$src/train-images-idx3-ubyte.gz" ]; then
  data=$work/fashion-mnist
  [ -d "$data/test" ] || { echo "== Fashion-MNIST → $data"; $fc7 dataset fashion-mnist "$data"; }
  name=fmnist-quick
else
  echo "NOTE: Fashion-MNIST is not available here (apt-get install dataset-fashion-mnist failed);"
  echo "      the demo goes on with a GENERATED dataset of 6 pattern classes instead."
  data=$work/synthetic
  [ -d "$data/val" ] || $fc7 dataset synthetic "$data" --classes 6 --per-class 500
  name=synthetic-quick
fi
test_dir=$data/test; [ -d "$test_dir" ] || test_dir=$data/val

stage training "AlexNet, --preset quick, $epochs epochs → models/$name.onnx"
# --no-ten-crop: Figure 4 below reports the 10-crop error (on its 2,000 test images); training's
# own ten passes over all 10,000 would repeat it, ~12% of the training stage on 2 cores.
if [ ! -f "models/$name.onnx" ]; then
  resume=""; [ -f "models/$name.ckpt" ] && resume=--resume
  $fc7 train "$data" --preset quick --epochs "$epochs" --out "models/$name" --no-ten-crop $resume
fi
stage index "the training images → indexes/$name"
$fc7 index "$data/train" --model "models/$name.onnx" --index "indexes/$name"
stage "figure 4" "→ $work/figure4"
$fc7 eval figure4 --model "models/$name.onnx" --train "$data/train" --test "$test_dir" \
  --index "indexes/$name" --out "$work/figure4" --device cpu
stage ""
echo
summary=$(printf '%s, ' "${times[@]}")
echo "demo: ${summary}all $((SECONDS / 60)) min $((SECONDS % 60)) s"
echo "open $work/figure4/figure4.png (or figure4.html); numbers in $work/figure4/metrics.json;"
echo "training curves in models/$name.png; try: $fc7 query IMAGE --index indexes/$name"
