#!/usr/bin/env bash
# Every GPU claim of fc7 measured in one sitting on the lent GPU machine, most important first,
# so that a timeout still leaves the figures that matter most. The plan (README, "GPU truth in
# one sitting") is four device calls: three carry ONNX Runtime's CUDA build (.ortgpu1-3, one
# chunk each) into /tmp/o, the fourth carries .ortgpu4 and .devrun and runs this script. Here,
# first: scripts/device/pack.sh and `bash ../shared/device/pack-ort-gpu.sh`.
#
#   bash scripts/device/verify.sh             on the GPU machine (DEADLINE seconds, default 500)
#   bash scripts/device/verify.sh --dry-run   here or in CI: the same steps on the CPU at tiny
#                                             sizes, each GPU-only step one SKIPPED line; exits
#                                             1 if any step's command fails
#
# Steps: 1 selftest fp32, bf16, --gpus (all GPUs); 2 engine rates (tf32, bf16) and PyTorch's;
# 3 ONNX Runtime's CUDA provider: fc7 images/s at batch 256 and 64 with and without IO binding,
# fp16, CPU-vs-CUDA agreement, `fc7 index --device cuda` end to end; 4 300 steps of --preset
# paper three ways (GPU crops, host crops, copy stream); 5 bf16 against tf32 (accuracy, rate);
# 6 the ImageNet-shaped rehearsal at a reduced size. It ends with one table (figure, goal,
# ✓/✗) and writes it as $OUT/verify.json beside $OUT/verify.log.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dry=0; [ "${1:-}" = --dry-run ] && dry=1
out=${OUT:-/tmp/out}
mkdir -p "$out/steps"
log=$out/verify.log
: >"$log"
t0=$(date +%s)
deadline=${DEADLINE:-500}
if [ $dry = 1 ]; then
  dev=cpu
  fc7=${FC7_BIN:-$root/target/debug/fc7}
  bench=${FC7BENCH:-$(ls -t "$root"/target/debug/deps/fc7bench-* 2>/dev/null | grep -v '\.d$' | head -1)}
  [ -x "$fc7" ] && [ -x "$bench" ] || { echo "verify --dry-run: build first (cargo build --benches)" >&2; exit 1; }
  deadline=${DEADLINE:-900}
else
  dev=cuda
  mkdir -p /tmp/bin /tmp/ortgpu /tmp/o
  for b in fc7 fc7bench; do xz -dc "$root/.devrun/$b.xz" >/tmp/bin/$b && chmod +x /tmp/bin/$b; done
  fc7=/tmp/bin/fc7; bench=/tmp/bin/fc7bench
  SP=$(python3 -c "import site; print(site.getsitepackages()[0])")
  last=$(ls -d "$root"/.ortgpu* 2>/dev/null | sort -V | tail -1)
  if [ -n "$last" ]; then
    cp "$last"/* /tmp/o/ && cat /tmp/o/chunk.* | xz -d | tar -C /tmp/ortgpu -xf - ||
      echo "ONNX Runtime's CUDA build did not unpack: the inference steps will fail" | tee -a "$log"
    export ORT_DYLIB_PATH=$(ls /tmp/ortgpu/libonnxruntime.so.* 2>/dev/null | head -1)
  fi
  export LD_LIBRARY_PATH=/tmp/ortgpu:$(ls -d "$SP"/nvidia/*/lib "$SP"/nvidia/cu13/lib 2>/dev/null | tr '\n' ':')/usr/local/cuda/lib64
fi
w=$(mktemp -d)
export FC7_PACKS=$w/packs FC7_HOME=$w/home
results=$out/steps/results.tsv
: >"$results"

# step ID NEED_SECONDS GPU_ONLY COMMAND [DRY_CAP]: runs COMMAND (bash) into steps/ID.txt and the
# log, with what is left of the deadline as its timeout; skipped when less than NEED_SECONDS is
# left, or (dry run) when it needs a GPU. A dry run stops a step after DRY_CAP seconds when
# given, and counts it as run: its command started and was working (the CPU is too slow to
# finish it). Records ID, exit status and seconds in results.tsv.
step() {
  local id=$1 need=$2 gpu_only=$3 cmd=$4 cap=${5:-}
  local left=$((deadline - ($(date +%s) - t0)))
  if [ $dry = 1 ] && [ "$gpu_only" = 1 ]; then
    echo "SKIPPED $id (needs a GPU)" | tee -a "$log"
    printf '%s\tskipped\t0\n' "$id" >>"$results"; return
  fi
  if [ "$left" -lt "$need" ]; then
    echo "SKIPPED $id (${left} s left of the deadline, needs ${need})" | tee -a "$log"
    printf '%s\tno-time\t0\n' "$id" >>"$results"; return
  fi
  [ $dry = 1 ] && [ -n "$cap" ] && [ "$cap" -lt "$left" ] && left=$cap
  echo "== $id" | tee -a "$log"
  local s=$(date +%s)
  timeout "$left" bash -c "$cmd" >"$out/steps/$id.txt" 2>&1
  local rc=$?
  [ $dry = 1 ] && [ -n "$cap" ] && [ $rc = 124 ] && rc=0 && echo "(stopped after ${cap} s)" >>"$out/steps/$id.txt"
  tee -a "$log" <"$out/steps/$id.txt" >/dev/null
  echo "== $id: exit $rc, $(($(date +%s) - s)) s" | tee -a "$log"
  printf '%s\t%s\t%s\n' "$id" "$rc" "$(($(date +%s) - s))" >>"$results"
}

# Sizes: the GPU's, or the dry run's smallest that still run every command (one batch size).
if [ $dry = 1 ]; then
  iters=1; photos=12; steps=2; preset=quick; epochs=1; inet=(2 4); bs=(4)
  "$fc7" dataset synthetic "$w/fm" --classes 3 --per-class 12 >/dev/null
else
  iters=20; photos=2000; steps=300; preset=paper; epochs=${BF16_EPOCHS:-1}; inet=(1000 16); bs=(256 64)
  "$fc7" dataset fashion-mnist "$w/fm" --source "$root/.devrun/fmnist" >/dev/null
fi
gpus=1; command -v nvidia-smi >/dev/null && gpus=$(nvidia-smi -L | wc -l)
[ $dry = 0 ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
"$fc7" model init --random --out "$w/m.onnx" >/dev/null

# 1. The engine is right: every operation and whole steps against the CPU engine.
step selftest-fp32 30 0 "'$fc7' selftest --device $dev"
step selftest-bf16 30 1 "'$fc7' selftest --device $dev --precision bf16"
step selftest-gpus 40 1 "'$fc7' selftest --device $dev --gpus $gpus --bench --iters 10"
# 2. How fast it trains, against PyTorch on the same card.
step engine-rates 60 0 "'$fc7' selftest --device $dev --bench --iters $iters" 5
step torch-anchor 120 1 "timeout 150 python3 '$root/.devrun/torch_anchor.py' '$out/torch.json' && cat '$out/torch.json'"
# 3. ONNX Runtime's CUDA provider: the first line of the mission.
step ort-extract 90 0 "
  for b in ${bs[*]}; do
    '$bench' extract '$w/m.onnx' $dev \$b $iters
    '$bench' extract '$w/m.onnx' $dev \$b $iters plain
  done
  '$fc7' model convert '$w/m.onnx' --precision fp16 --out '$w/m16.onnx'
  for b in ${bs[*]}; do '$bench' extract '$w/m16.onnx' $dev \$b $iters; done"
step ort-agree 30 1 "'$bench' make-photos '$w/agree' 64 640 480 && '$bench' agree '$w/m.onnx' '$w/agree' 64"
step ort-index 90 0 "
  '$bench' make-photos '$w/photos' $photos 1024 768
  '$fc7' index '$w/photos' --index '$w/idx' --model '$w/m.onnx' --device $dev --json"
# 4. The whole training loop three ways: crops on the GPU, on the host, and a copy stream.
for way in gpu-crops:X=1 host-crops:FC7_HOST_CROPS=1 copy-stream:FC7_COPY_STREAM=1; do
  step "train-${way%%:*}" 60 0 "env ${way#*:} FC7_SKIP_ENGINE_CHECK=1 '$fc7' train '$w/fm' \
    --preset $preset --max-steps $steps --device $dev --out '$w/way-${way%%:*}'"
done
# 5. bf16 against tf32: accuracy and rate (bf16 becomes the default only if both hold).
for p in tf32 bf16; do
  gpu_only=0; [ $p = bf16 ] && gpu_only=1
  step "train-$p" 90 $gpu_only "FC7_SKIP_ENGINE_CHECK=1 '$fc7' train '$w/fm' --preset $preset \
    --precision $p --epochs $epochs --anneal-epochs 0 --device $dev --out '$w/fm-$p' &&
    tail -n 1 '$w/fm-$p.log.jsonl'"
done
# 6. If time is left: the ImageNet-shaped rehearsal, reduced, and its 90-epoch projection.
step rehearsal 120 0 "
  '$fc7' dataset imagenet-like '$w/inet' --classes ${inet[0]} --per-class ${inet[1]}
  '$fc7' dataset pack '$w/inet' --preset $preset
  '$bench' feed '$w/inet' 256 224 ${bs[0]} 20 '$w/packs'
  FC7_SKIP_ENGINE_CHECK=1 '$fc7' train '$w/inet' --preset $preset --device $dev \
    --max-steps $((steps / 2 + 1)) --out '$w/inet-m'"

rm -rf "$w"
python3 "$here/verify_table.py" "$out" $dry
