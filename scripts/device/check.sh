#!/usr/bin/env bash
# The GPU inference check, run on the lent device machine. Needs, made here first:
#   .devrun/ from scripts/device/pack.sh (xz'd release binaries fc7 and fc7bench), and
#   .ortgpu*/ chunks of ONNX Runtime's CUDA build (scripts/setup/ort.sh --gpu, then split as
#   ../shared/device/README.md describes: all but the last copied to /tmp/o on the machine by
#   earlier calls, the last carried with this one).
# Prints: GPU, CUDA fc7 inference images/s at several batch sizes (IO binding from pinned memory
# and plain runs; the fp16 copy), ONNX Runtime's profile of the costliest nodes, CPU-vs-CUDA fc7 agreement,
# end-to-end `fc7 index --device cuda` images/s on generated 1024x768 and 2000x1500 JPEGs, HNSW recall.
set -u
out=${OUT:-/tmp/out}
mkdir -p /tmp/ortgpu /tmp/o "$out"
last=$(ls -d .ortgpu* | sort -V | tail -1)
cp "$last"/* /tmp/o/ && cat /tmp/o/chunk.* | xz -d | tar -C /tmp/ortgpu -xf - || { echo "ORT GPU unpack failed"; exit 1; }
SP=$(python3 -c "import site; print(site.getsitepackages()[0])")
export LD_LIBRARY_PATH=/tmp/ortgpu:$(ls -d "$SP"/nvidia/*/lib | tr '\n' ':')/usr/local/cuda/lib64
export ORT_DYLIB_PATH=$(ls /tmp/ortgpu/libonnxruntime.so.* | head -1)
b=/tmp/bin
mkdir -p $b && for f in fc7 fc7bench; do xz -dc .devrun/$f.xz > $b/$f; chmod +x $b/$f; done
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc
  $b/fc7 model init --random --out /tmp/m/default.onnx
  $b/fc7bench make-photos /tmp/photos 4000 1024 768
  for bs in 256 64; do
    $b/fc7bench extract /tmp/m/default.onnx cuda $bs 20          # IO binding, pinned host memory
    $b/fc7bench extract /tmp/m/default.onnx cuda $bs 20 plain    # plain runs (pageable input)
  done
  $b/fc7 model convert /tmp/m/default.onnx --precision fp16 --out /tmp/m/fp16.onnx
  for bs in 256 64; do $b/fc7bench extract /tmp/m/fp16.onnx cuda $bs 20; done
  # ONNX Runtime's own profile of 5 batches of 256: the ten costliest nodes
  FC7_ORT_PROFILE=/tmp/prof $b/fc7bench extract /tmp/m/default.onnx cuda 256 5
  python3 - /tmp/prof*.json <<'PY'
import json, sys, collections, statistics
runs = collections.defaultdict(list)
for e in json.load(open(sys.argv[1])):
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        runs[(e["name"], e["args"].get("op_name"), e["args"].get("provider"))].append(e["dur"])
t = collections.Counter()  # each node's median over the 7 runs (2 warm-up), summed per op
for (_, op, ep), d in runs.items(): t[(op, ep)] += statistics.median(d)
for (op, ep), us in t.most_common(10): print(f"profile {op} {ep} {us / 1000:.2f} ms per batch")
PY
  $b/fc7bench extract /tmp/m/default.onnx cuda 1 200
  $b/fc7bench extract /tmp/m/default.onnx cpu 64 3
  $b/fc7bench agree /tmp/m/default.onnx /tmp/photos 64
  time $b/fc7 index /tmp/photos --index /tmp/idx --model /tmp/m/default.onnx --device cuda --json
  $b/fc7 index /tmp/photos --index /tmp/idx --device auto --json | grep -E '"unchanged"|"added"'
  $b/fc7 query /tmp/photos/photo00010.jpg --index /tmp/idx
  $b/fc7bench make-photos /tmp/photos3mp 2000 2000 1500
  $b/fc7 index /tmp/photos3mp --index /tmp/idx3mp --model /tmp/m/default.onnx --device cuda --json | grep -E 'seconds|per_second'
  $b/fc7bench recall /tmp/idx 300 6
} 2>&1 | tee "$out/device.txt"
