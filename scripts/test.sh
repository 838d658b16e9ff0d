#!/usr/bin/env bash
# The test suite: installs what is missing (ONNX Runtime's library, NVRTC and cuDNN from PyPI, Python's
# onnx for the checker, PostgreSQL + pgvector (pgserver) and Ray from PyPI, Chromium, chromedriver
# and QEMU from apt), starts PostgreSQL, runs every Rust test, then has onnx.checker validate a
# model fc7 writes, NumPy read an export, the int8 model and training run on an emulated CPU without
# VNNI and AVX-512, Chromium use fc7 serve, and a two-node Ray cluster fill one store; it stops
# every server it started.
set -euo pipefail
cd "$(dirname "$0")/.."
mark() { echo "test.sh: $1 done at ${SECONDS} s" >&2; }
# A clean run peaks at ~5 GB (builds, the servers' data, Ray's session logs, QEMU's scratch):
# below 6 GB free it would stop somewhere in the middle (once in Ray, "No space left on device").
for d in . "${TMPDIR:-/tmp}"; do
  free=$(df -Pk "$d" | awk 'NR == 2 { print int($4 / 1048576) }')
  if [ "$free" -lt 6 ]; then
    echo "test.sh: only $free GB free on $(df -P "$d" | awk 'NR == 2 { print $6 }') ($d); the tests need about 6 GB" >&2
    exit 1
  fi
done
scripts/setup/build.sh
scripts/setup/ort.sh >/dev/null
# NVRTC and cuDNN's host-side descriptors let the tests check the CUDA engine's kernels and
# layer shapes without a GPU.
nvrtc=$(scripts/setup/nvrtc.sh | tail -n1)
cudnn=$(scripts/setup/cudnn-check.sh | tail -n1)
python3 -c "import onnx" 2>/dev/null || python3 -m pip install -q onnx
# PostgreSQL 16 + pgvector (PyPI's pgserver) on 127.0.0.1 for tests/suite/postgres.rs, stopped on exit.
tmp=$(mktemp -d)
chmod 755 "$tmp" # the server's own user works in $tmp/pg
pg="$tmp/pg"
trap 'scripts/setup/postgres.sh stop "$pg"; rm -rf "$tmp"' EXIT
pgurl=$(scripts/setup/postgres.sh start "$pg" | tail -n1)
mark "installs and PostgreSQL"
# The test binaries and the benchmark binary the GPU dry run needs, in one build (in parallel).
cargo build --tests --benches -q
LD_LIBRARY_PATH="$nvrtc:$cudnn${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" FC7_REQUIRE_NVRTC=1 \
  FC7_REQUIRE_CUDNN=1 FC7_TEST_PG="$pgurl" FC7_REQUIRE_PG=1 cargo test
mark "cargo test"
target/debug/fc7 model init --random --classes 10 --out "$tmp/m.onnx" >/dev/null
python3 - "$tmp/m.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
assert [o.name for o in m.graph.output] == ["fc7", "logits"], m.graph.output
# the LRN as a band of alpha = 1e-4 over 5 channels (a 1x1 convolution), not ONNX's LRN
band = onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "lrn1.band"))
assert band.shape == (96, 96, 1, 1) and (band[:, :, 0, 0] > 0).sum(1).tolist()[:4] == [3, 4, 5, 5]
assert abs(band.max() - 1e-4) < 1e-12 and not [n for n in m.graph.node if n.op_type == "LRN"]
print("onnx.checker: the written AlexNet (opset %d) is valid" % m.opset_import[0].version)
PY
# NumPy (installed with onnx) reads what `fc7 export-vectors` writes: an independent reader of
# the .npy format, against the metadata's row count and the index's dimension.
target/debug/fc7 dataset synthetic "$tmp/d" --classes 2 --per-class 5 >/dev/null
FC7_HOME="$tmp/home" target/debug/fc7 index "$tmp/d/train" --model "$tmp/m.onnx" --index "$tmp/i" --quiet
target/debug/fc7 export-vectors --index "$tmp/i" --out "$tmp/x" >/dev/null
target/debug/fc7 model quantize "$tmp/m.onnx" --calibrate "$tmp/d/train" --out "$tmp/q.onnx" >/dev/null
python3 - "$tmp/q.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
ops = [n.op_type for n in m.graph.node]
w = next(t for t in m.graph.initializer if t.name == "conv1.w.int8")
assert w.data_type == onnx.TensorProto.INT8 and ops.count("NhwcMaxPool") == 3, ops
print("onnx.checker: the int8 QDQ AlexNet is valid (%d QuantizeLinear)" % ops.count("QuantizeLinear"))
PY
python3 - "$tmp/x" <<'PY'
import sys, json, numpy as np
v = np.load(sys.argv[1] + "/vectors.npy")
meta = [json.loads(l) for l in open(sys.argv[1] + "/metadata.jsonl")]
assert v.dtype == np.float32 and v.shape == (len(meta), 4096), (v.dtype, v.shape, len(meta))
assert len(meta) == 8 and np.isfinite(v).all() and (np.linalg.norm(v, axis=1) > 0).all()
print("numpy: fc7 export-vectors wrote a %dx%d float32 array and %d metadata lines" % (v.shape + (len(meta),)))
PY
mark "onnx and numpy checks"
# What is left runs in two lanes at once, each at about one and a half cores of two: alone, one
# after the other, they left a quarter of the CPU idle (QEMU, Ray and Chromium wait on one thread).
# Each lane's output is shown when both are done; the run fails if either did, naming it. Lane A
# builds fc7 without AVX-512, which replaces target/debug/fc7 for a while, so both lanes run a
# copy of the tests' build.
scripts/setup/qemu.sh
scripts/setup/browser.sh
fc7="$tmp/fc7"
cp target/debug/fc7 "$fc7"
# A: the same binary on an emulated CPU without AVX-512 trains the model fc7 built without
# AVX-512 trains, byte for byte. (It builds in the tests' target folder: a folder of its own
# would compile every dependency again; Cargo.toml's bitflags line keeps the features alike.)
# fc7's own code builds unoptimised there: the floats are the same at any opt-level (Rust never
# contracts or reorders them), the one epoch of 15 images runs natively in seconds, and the build
# takes 23 CPU-seconds instead of 78.
lane_a() {
  cargo build -q --no-default-features --bin fc7 --config 'profile.dev.package.fc7.opt-level=0'
  cp target/debug/fc7 "$tmp/fc7-avx2"
  cp --remove-destination "$fc7" target/debug/fc7
  python3 tests/emulated/training_avx2.py "$fc7" "$tmp/fc7-avx2" "$tmp/emulated-training"
  mark "training without AVX-512, emulated"
  # The GPU sitting's script, dry: every step's command on the CPU at tiny sizes.
  FC7_BIN="$fc7" OUT="$tmp/verify" bash scripts/device/verify.sh --dry-run | tail -n 3
  mark "GPU sitting, dry"
}
lane_b() {
  # The int8 model on an emulated CPU without VNNI (QEMU's Zen 3): the same vectors as natively;
  # the fp32 model (fc7's Winograd and LRN operators on AVX2) within 1e-5 of them.
  python3 tests/emulated/int8_no_vnni.py "$fc7" "$tmp/m.onnx" "$tmp/d/train" "$tmp/emulated"
  mark "int8 without VNNI, emulated"
  # fc7 serve in a real browser (Debian's Chromium through chromedriver) on that index.
  FC7_HOME="$tmp/home" python3 tests/browser/gallery.py "$fc7" "$tmp/i" \
    "$(ls "$tmp"/d/train/*/* | head -1)"
  mark "browser"
  # A two-node Ray cluster (PyPI's ray) fills one PostgreSQL store, in namespaces of its own.
  bash scripts/cluster/test.sh "$fc7"
  mark "Ray cluster"
}
lane_a >"$tmp/lane-a.log" 2>&1 &
a=$!
lane_b >"$tmp/lane-b.log" 2>&1 &
b=$!
failed=()
wait $a || failed+=("A (training without AVX-512, emulated; GPU dry run)")
wait $b || failed+=("B (int8 emulated, browser, Ray)")
cat "$tmp/lane-a.log" "$tmp/lane-b.log" >&2
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test.sh: lane %s failed (its output is above)\n' "${failed[@]}" >&2
  exit 1
fi
