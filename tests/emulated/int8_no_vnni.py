"""int8 models give the same fc7 vectors on a CPU without VNNI as on this one, and the fp32 model
nearly the same.

CPUs without VNNI (AVX2 ones such as AMD Zen 3, AVX-512 ones before Cascade Lake) run ONNX
Runtime's uint8 x int8 products as pairs summed into int16 with saturation (vpmaddubsw), which
overflows for weights beyond +-64. QEMU's EPYC-Milan model (a Zen 3: AVX2, no AVX-512, no VNNI)
runs the very binary and ONNX Runtime library on that path. Checked, each with `fc7 index` and
`fc7 export-vectors` natively and under `qemu-x86_64 -cpu EPYC-Milan`, vectors compared bit for bit:
  1. the int8 model `fc7 model quantize` writes now (weights within +-64, read back with onnx);
  2. the same model with its int8 weights doubled (clamped to +-127), as fc7 wrote them before:
     fc7's sessions turn such weights into uint8 on CPUs without VNNI, and `fc7 index` there says
     in a note to quantise it again (only there, and only for this model).
On a host without VNNI both runs take the same path, so the check shows agreement, not the cure.
  3. the fp32 model on three of the images: fc7's own operators (LRN, and the Winograd
     convolutions, whose products take gemm's AVX2 kernels there, picked at run time) and ONNX
     Runtime's AVX2 kernels, within 1e-5 of the vectors' scale of the native ones (bit for bit
     on the Zen 4 where this was written: the kernels of both instruction sets sum in the same
     order there, which cache-dependent blocking need not keep on every machine). A factor of
     1.0001 in the AVX2 copy of fc7's LRN alone gives 4.7e-3.
Usage: python3 tests/emulated/int8_no_vnni.py FC7 FP32_MODEL IMAGES WORKDIR"""
import hashlib, json, os, shutil, sys

import numpy as np
import onnx
from onnx import numpy_helper

from zen3 import ZEN3, env, run

fc7, fp32, images, work = sys.argv[1:5]
WEIGHT_MAX = 64


def vectors(model, tag, emulated, folder=images):
    """fc7 of every image in `folder` under `model`, natively or on the emulated Zen 3."""
    pre = ZEN3 if emulated else []
    idx, out = f"{work}/idx-{tag}", f"{work}/vec-{tag}"
    said = run(pre + [fc7, "index", folder, "--model", model, "--index", idx, "--device", "cpu"],
               env(work, tag))
    run([fc7, "export-vectors", "--index", idx, "--out", out])
    return np.load(f"{out}/vectors.npy"), "beyond ±64" in said


def int8_weights(m):
    return [t for t in m.graph.initializer if t.name.endswith(".int8")]


def widest(model):
    """The largest magnitude among `model`'s int8 weights, read back with onnx."""
    ws = int8_weights(onnx.load(model))
    return max(int(np.abs(numpy_helper.to_array(t).astype(np.int16)).max()) for t in ws)


def doubled(model, out):
    """`model` with each int8 weight doubled and clamped to +-127, its manifest's hash updated."""
    m = onnx.load(model)
    for t in int8_weights(m):
        w = numpy_helper.to_array(t).astype(np.int16)
        t.CopyFrom(numpy_helper.from_array(np.clip(2 * w, -127, 127).astype(np.int8), t.name))
    onnx.save(m, out)
    manifest = json.load(open(model[:-len(".onnx")] + ".json"))
    manifest["onnx_sha256"] = hashlib.sha256(open(out, "rb").read()).hexdigest()
    del manifest["provenance"]["quantized"]["weight_max"]  # as fc7 wrote them before
    json.dump(manifest, open(out[:-len(".onnx")] + ".json", "w"))
    return widest(out)


shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
new = f"{work}/q7.onnx"
run([fc7, "model", "quantize", fp32, "--calibrate", images, "--out", new])
top = widest(new)
assert top == WEIGHT_MAX, f"the written int8 weights reach {top}, not {WEIGHT_MAX}"
old = f"{work}/q8.onnx"
old_top = doubled(new, old)
flags = open("/proc/cpuinfo").read()
vnni = "avx512_vnni" in flags or "avx_vnni" in flags
for name, model in [(f"weights within +-{top}", new), (f"weights up to +-{old_top}", old)]:
    tag = os.path.basename(model)[:-5]
    a, advised_here = vectors(model, tag + "-native", False)
    b, advised = vectors(model, tag + "-zen3", True)
    wide = model == old
    assert advised == wide and not (advised_here and vnni), (
        f"{name}: the note on the slow int8 form said on the emulated Zen 3: {advised}, here: {advised_here}")
    assert a.shape == b.shape and len(a) > 0, (a.shape, b.shape)
    differ = int((a != b).any(axis=1).sum())
    assert differ == 0, (
        f"{name}: {differ} of {len(a)} vectors differ on the emulated Zen 3 "
        f"(largest difference {np.abs(a - b).max():.4g})"
    )
    print(f"int8 {name}: {len(a)} fc7 vectors bit-identical natively "
          f"({'VNNI' if vnni else 'no VNNI here either'}) and on an emulated Zen 3 (no VNNI)"
          f"{', which says to quantise it again' if advised else ''}")

three = f"{work}/three"
os.makedirs(three)
for i, path in enumerate(sorted(f"{r}/{f}" for r, _, fs in os.walk(images) for f in fs)[:3]):
    shutil.copy(path, f"{three}/{i}{os.path.splitext(path)[1]}")
a, _ = vectors(fp32, "fp32-native", False, three)
b, _ = vectors(fp32, "fp32-zen3", True, three)
assert a.shape == b.shape and len(a) == 3, (a.shape, b.shape)
scale = float(np.sqrt((a * a).mean()))
worst = float(np.abs(a - b).max()) / scale
assert worst <= 1e-5, f"fp32: the emulated Zen 3's vectors differ by {worst:.3g} of their scale"
print(f"fp32: {len(a)} fc7 vectors on an emulated Zen 3 within {worst:.2g} of the native ones' scale")
