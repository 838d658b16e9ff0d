#!/usr/bin/env bash
# The test suite: installs what is missing (ONNX Runtime's library, NVRTC and cuDNN from PyPI, Python's
# onnx for the checker), runs every Rust test, then has onnx.checker validate a model fc7 writes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup/build.sh
scripts/setup/ort.sh >/dev/null
# NVRTC and cuDNN's host-side descriptors let the tests check the CUDA engine's kernels and
# layer shapes without a GPU.
nvrtc=$(scripts/setup/nvrtc.sh | tail -n1)
cudnn=$(scripts/setup/cudnn-check.sh | tail -n1)
python3 -c "import onnx" 2>/dev/null || python3 -m pip install -q onnx
LD_LIBRARY_PATH="$nvrtc:$cudnn${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" FC7_REQUIRE_NVRTC=1 \
  FC7_REQUIRE_CUDNN=1 cargo test
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/debug/fc7 model init --random --classes 10 --out "$tmp/m.onnx" >/dev/null
python3 - "$tmp/m.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
assert [o.name for o in m.graph.output] == ["fc7", "logits"], m.graph.output
lrn = [n for n in m.graph.node if n.op_type == "LRN"]
assert len(lrn) == 2 and abs(onnx.helper.get_attribute_value(lrn[0].attribute[1]) - 5e-4) < 1e-9
print("onnx.checker: the written AlexNet (opset %d) is valid" % m.opset_import[0].version)
PY
