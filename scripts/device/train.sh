#!/usr/bin/env bash
# The GPU training check, run on the lent device machine after scripts/device/pack.sh
# (carry .devrun). Needs no ONNX Runtime: the CUDA engine loads cuDNN/cuBLAS from the machine's
# Python packages and NVRTC from /usr/local/cuda. Prints, into $OUT/train.txt:
#   1. fc7 selftest --device cuda --bench: every engine operation and two whole training steps
#      against the CPU engine (FP32), then training images/s (paper b128, quick b64);
#   1b. fc7 selftest --precision bf16, and --bench's rates in tf32 and bf16;
#   1c. fc7 selftest --gpus (every GPU on the machine): NCCL's sum, two steps split across the
#       GPUs against one GPU, the same weights on each, and the team's images/s;
#   2. PyTorch's figures for the same network on the same card (torch_anchor.py; TORCH=0 skips);
#   2b. end-to-end images/s with training crops cut on the GPU, on the host, and on the GPU
#       with batches copied on a second stream (FC7_COPY_STREAM=1);
#   2c. BF16_EPOCHS (default 3) epochs of --preset paper in tf32 and in bf16: the accuracy
#       that decides whether bf16 may become the default;
#   3. the initialisations compared: one epoch of --preset paper on Fashion-MNIST upscaled to
#      224 with --init paper, caffe and he (the stall guard's line where one stays at chance);
#   4. --preset paper (He init) for EPOCHS epochs (default 20, the last ANNEAL at lr/10).
set -u
out=${OUT:-/tmp/out}
epochs=${EPOCHS:-20}
anneal=${ANNEAL:-3}
BF16_EPOCHS=${BF16_EPOCHS:-3}
mkdir -p "$out" /tmp/bin /tmp/m
SP=$(python3 -c "import site; print(site.getsitepackages()[0])")
export LD_LIBRARY_PATH=$(ls -d "$SP"/nvidia/*/lib "$SP"/nvidia/cu13/lib 2>/dev/null | tr '\n' ':')/usr/local/cuda/lib64
xz -dc .devrun/fc7.xz > /tmp/bin/fc7 && chmod +x /tmp/bin/fc7
fc7=/tmp/bin/fc7
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== selftest"
  timeout 240 $fc7 selftest --device cuda --bench --iters 30
  echo "== selftest exit $?"
  echo "== selftest, bf16 products against the CPU's bf16 emulation"
  timeout 120 $fc7 selftest --device cuda --precision bf16
  echo "== selftest bf16 exit $?"
  gpus=$(nvidia-smi -L | wc -l)
  echo "== data parallel over all $gpus GPUs (NCCL; with one GPU: a team of one and NCCL's sum)"
  timeout 120 $fc7 selftest --device cuda --gpus "$gpus" --bench --iters 20
  echo "== selftest --gpus exit $?"
} 2>&1 | tee "$out/train.txt"
if [ "${TORCH:-1}" = 1 ]; then
  ( echo "== PyTorch anchor"; timeout 150 python3 .devrun/torch_anchor.py "$out/torch.json"; cat "$out/torch.json" ) 2>&1 | tee -a "$out/train.txt"
fi
$fc7 dataset fashion-mnist /tmp/fm --source .devrun/fmnist | tee -a "$out/train.txt"
# The same 300 steps three ways: crops cut on the GPU (the default), on the host, and on the
# GPU with batches copied on a second stream.
for way in "gpu-crops" "host-crops FC7_HOST_CROPS=1" "copy-stream FC7_COPY_STREAM=1"; do
  set -- $way
  {
    echo "== --preset paper, 300 steps: $1 ${2:-}"
    env ${2:-} FC7_SKIP_ENGINE_CHECK=1 timeout 120 $fc7 train /tmp/fm --preset paper \
      --max-steps 300 --device cuda --out /tmp/m/way-$1 --quiet
  } 2>&1 | tee -a "$out/train.txt"
done
for precision in tf32 bf16; do
  {
    echo "== --precision $precision: $BF16_EPOCHS epochs of --preset paper (does bf16 keep accuracy?)"
    FC7_SKIP_ENGINE_CHECK=1 timeout 200 $fc7 train /tmp/fm --preset paper --precision "$precision" \
      --epochs "$BF16_EPOCHS" --anneal-epochs 1 --device cuda --out /tmp/m/fm-$precision --quiet
    tail -n 2 /tmp/m/fm-$precision.log.jsonl
  } 2>&1 | tee -a "$out/train.txt"
done
for init in paper caffe he; do
  {
    echo "== init $init: one epoch (the stall guard judges at its end)"
    FC7_SKIP_ENGINE_CHECK=1 timeout 120 $fc7 train /tmp/fm --preset paper --init "$init" --epochs 1 \
      --device cuda --out /tmp/m/init-$init --quiet
    echo "exit $?"
    cat /tmp/m/init-$init.log.jsonl 2>/dev/null
  } 2>&1 | tee -a "$out/train.txt"
done
{
  echo "== Fashion-MNIST, paper preset (He init), $epochs epochs, last $anneal at lr/10"
  # Trains even if a selftest check failed above, so that one device call shows everything;
  # the selftest table says whether to trust these numbers.
  time FC7_SKIP_ENGINE_CHECK=1 timeout "${TRAIN_TIMEOUT:-420}" $fc7 train /tmp/fm --preset paper \
    --epochs "$epochs" --anneal-epochs "$anneal" --device cuda --out /tmp/m/fm-paper --quiet
  cp /tmp/m/fm-paper.log.jsonl /tmp/m/fm-paper.png /tmp/m/fm-paper.json "$out/" 2>/dev/null
  cat /tmp/m/fm-paper.log.jsonl
} 2>&1 | tee -a "$out/train.txt"
