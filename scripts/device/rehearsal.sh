#!/usr/bin/env bash
# The ImageNet rehearsal on the lent GPU machine, one call of under 8 minutes, after
# scripts/device/pack.sh here (carry .devrun). Into $OUT/rehearsal.txt:
#   1. PER_CLASS × 1,000 (default 128: 128,000 images, a tenth of ILSVRC-2012's training set)
#      ImageNet-shaped JPEGs of about 500×375 (`fc7 dataset imagenet-like`): time, size;
#   2. their pack at 256×256 (`fc7 dataset pack`): time, bytes on disk;
#   3. the feed alone on the machine's cores (`fc7bench feed`): 224² crops/s from the pack;
#   4. one epoch's steps of `--preset paper` on CUDA (`--max-steps`, no validation): images/s
#      and peak RSS;
#   5. the projection to 90 epochs of 1,281,167 images.
set -u
out=${OUT:-/tmp/out}
per=${PER_CLASS:-128}
mkdir -p "$out" /tmp/bin /tmp/m
SP=$(python3 -c "import site; print(site.getsitepackages()[0])")
export LD_LIBRARY_PATH=$(ls -d "$SP"/nvidia/*/lib 2>/dev/null | tr '\n' ':')/usr/local/cuda/lib64
for b in fc7 fc7bench; do xz -dc .devrun/$b.xz > /tmp/bin/$b && chmod +x /tmp/bin/$b; done
export FC7_PACKS=/tmp/packs
# Runs a command and prints its wall time and peak resident memory.
measure() {
  python3 -c 'import resource, subprocess, sys, time
t = time.time(); rc = subprocess.run(sys.argv[1:]).returncode
print("%.1f s, peak RSS %.0f MB, exit %d" % (time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, rc))' "$@"
}
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc
  echo "== generate $((per * 1000)) images"
  measure /tmp/bin/fc7 dataset imagenet-like /tmp/inet --classes 1000 --per-class "$per"
  du -sh /tmp/inet
  echo "== pack at 256"
  measure /tmp/bin/fc7 dataset pack /tmp/inet --preset paper
  echo "== feed alone (224 crops, batch 128, 400 batches)"
  /tmp/bin/fc7bench feed /tmp/inet 256 224 128 400 /tmp/packs
  steps=$((per * 1000 * 9 / 10 / 128))
  echo "== --preset paper on CUDA, $steps steps (one epoch of the training split)"
  measure timeout 330 /tmp/bin/fc7 train /tmp/inet --preset paper --device cuda --max-steps "$steps" \
    --out /tmp/m/inet --quiet
} 2>&1 | tee "$out/rehearsal.txt"
rate=$(grep -o '[0-9]* images/s over' "$out/rehearsal.txt" | tail -1 | cut -d' ' -f1)
[ -n "$rate" ] && python3 -c "r=$rate; print('projection: 90 epochs x 1,281,167 images at %d images/s = %.2f h' % (r, 90*1281167/r/3600))" | tee -a "$out/rehearsal.txt"
