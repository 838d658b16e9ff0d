"""fc7 on a CPU without AVX-512 computes what fc7 built without it computes, and executes no
AVX-512 instruction there.

fc7 is one binary for every x86-64 CPU: its AVX-512 kernels (gemm's, matrixmultiply's, fc7's own
LRN, dropout and product loops) are picked at run time, AVX2 ones otherwise. BENCHMARKS.md reports
an AVX2-only CPU's figures from fc7 built `--no-default-features` (no AVX-512 code at all) on an
AVX-512 machine. This runs the default binary under QEMU's EPYC-Milan (a Zen 3: AVX2 and FMA, no
AVX-512) and requires:
  1. `fc7 train` (quick preset, one epoch of 15 images in batches of 8, its own pack) to write
     the same model, byte for byte, and the same epoch log as the AVX2 build natively, and a
     different model from the default binary natively when this host has AVX-512 (else the
     comparison would be vacuous);
  2. `fc7 index` of all 18 images with that model (ONNX Runtime, fc7's LRN operator) to run
     there too, its vectors within 1e-4 (relative) of the native run's: ONNX Runtime's own
     kernels differ by CPU.
Usage: python3 tests/emulated/training_avx2.py FC7 FC7_AVX2 WORKDIR"""
import hashlib, json, os, shutil, subprocess, sys

import numpy as np

from zen3 import ZEN3, env
from zen3 import run as checked

fc7, fc7_avx2, work = sys.argv[1:4]


def run(cmd, tag):
    """`cmd` with a pack and graph cache of its own."""
    checked(cmd, env(work, tag, FC7_PACKS=f"{work}/packs-{tag}"))


def train(pre, exe, tag):
    # --no-ten-crop: the ten passes over the validation images after the epoch were 17 of the
    # emulated run's 28 s, and run the same forward kernels as the epoch's own validation.
    run(pre + [exe, "train", f"{work}/d", "--preset", "quick", "--epochs", "1", "--batch", "8", "--out",
               f"{work}/{tag}", "--no-ten-crop"], tag)
    onnx = open(f"{work}/{tag}.onnx", "rb").read()
    epochs = [{k: v for k, v in json.loads(l).items() if k not in ("seconds", "images_per_second")}
              for l in open(f"{work}/{tag}.log.jsonl")]
    return hashlib.sha256(onnx).hexdigest(), epochs


def vectors(pre, tag, model):
    run(pre + [fc7, "index", f"{work}/d", "--model", model, "--index", f"{work}/idx-{tag}",
               "--device", "cpu", "-q"], tag)
    run([fc7, "export-vectors", "--index", f"{work}/idx-{tag}", "--out", f"{work}/vec-{tag}"], tag)
    return np.load(f"{work}/vec-{tag}/vectors.npy")


shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
subprocess.run([fc7, "dataset", "synthetic", f"{work}/d", "--classes", "3", "--per-class", "6"],
               check=True, capture_output=True)
avx2, avx2_log = train([], fc7_avx2, "avx2")
zen3, zen3_log = train(ZEN3, fc7, "zen3")
assert zen3 == avx2, f"the emulated Zen 3 trained model {zen3[:16]}, the AVX2 build {avx2[:16]}"
assert zen3_log == avx2_log, f"epoch logs differ:\n{zen3_log}\n{avx2_log}"
avx512 = "avx512f" in open("/proc/cpuinfo").read()
if avx512:
    native, _ = train([], fc7, "native")
    assert native != avx2, "the default build trained the AVX2 build's model on an AVX-512 host"
model = f"{work}/avx2.onnx"
a, b = vectors([], "index-native", model), vectors(ZEN3, "index-zen3", model)
rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
assert a.shape == b.shape and rel.max() < 1e-4, f"index vectors differ by up to {rel.max():.3g}"
print(f"emulated Zen 3 (no AVX-512): the model of {len(zen3_log)} epoch(s) byte-identical to the "
      f"AVX2 build's ({zen3[:16]}{', the AVX-512 path differs' if avx512 else ''}); "
      f"{len(a)} index vectors within {rel.max():.1e} of native")
