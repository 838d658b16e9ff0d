"""Python onnxruntime fc7 throughput on the same model, thread count and batch as fc7bench's
`extract`, so the Rust embedder can be compared with the reference binding.
Usage: python3 scripts/bench/ort.py MODEL BATCH ITERS THREADS"""
import sys, time
import numpy as np
import onnxruntime as ort

model, batch, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
side = s.get_inputs()[0].shape[2]
x = ((np.arange(batch * 3 * side * side) * 2654435761 % 1000) / 500.0 - 1.0).astype(np.float32).reshape(batch, 3, side, side)
for _ in range(2):
    s.run(["fc7"], {"image": x})
t = time.perf_counter()
for _ in range(iters):
    s.run(["fc7"], {"image": x})
secs = time.perf_counter() - t
print(f"python-onnxruntime {ort.__version__} batch={batch} iters={iters} images/s={batch * iters / secs:.1f}")
