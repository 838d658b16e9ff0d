"""PyTorch's three products of a fully connected layer on the CPU, the shapes of
`fc7bench fc-products IN OUT BATCH ITERS`: y = x·wᵀ, dx = dy·w, dW = dyᵀ·x (what nn.Linear's
forward and backward call), ms and GFLOP/s after two warm-up calls.
Usage: python3 scripts/bench/torch_fc.py IN OUT BATCH ITERS THREADS"""
import sys, time
import torch

i, o, n, iters, threads = map(int, sys.argv[1:6])
torch.set_num_threads(threads)
x, w, dy = torch.randn(n, i), torch.randn(o, i), torch.randn(n, o)
for name, f in [("y = x·wᵀ", lambda: x @ w.t()), ("dx = dy·w", lambda: dy @ w),
                ("dW = dyᵀ·x", lambda: dy.t() @ x)]:
    f(); f()
    t = time.perf_counter()
    for _ in range(iters):
        f()
    ms = (time.perf_counter() - t) / iters * 1e3
    print(f"torch-fc-products {i}→{o} batch {n} {name}: {ms:.2f} ms, GFLOP/s={2 * n * i * o / ms / 1e6:.0f} "
          f"(torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {threads} threads)")
