#!/usr/bin/env python3
"""How often a candidate reconstruction target's own nearest neighbours share a class.

Fashion-MNIST as Figure 4 scores it: 2,000 test images drawn with seed 0, each one's six
nearest of the 60,000 training images by Euclidean distance on the representation, precision@6
of class. A target the head of `--self-supervised --reconstruct` is asked to predict pulls fc7
towards its own geometry, so a target whose neighbours agree more is worth trying in the engine.
Needs numpy and Debian's dataset-fashion-mnist. Usage: python3 scripts/bench/targets.py
"""
import gzip
import numpy as np

D = "/usr/share/datasets/fashion-mnist/"


def load(name, offset):
    return np.frombuffer(gzip.open(D + name).read(), np.uint8, offset=offset)


xtr = load("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28).astype(np.float32) / 255
ytr = load("train-labels-idx1-ubyte.gz", 8)
xte = load("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28).astype(np.float32) / 255
yte = load("t10k-labels-idx1-ubyte.gz", 8)
q = np.random.default_rng(0).choice(10000, 2000, replace=False)


def precision6(a, b):
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]
    idx = np.argpartition(d, 6, axis=1)[:, :6]
    return (ytr[idx] == yte[q][:, None]).mean()


def resize(x, side):
    """Area resampling: each output pixel the mean of the input it covers."""
    if side == 28:
        return x
    m = np.lcm(28, side)
    up = x.repeat(m // 28, 1).repeat(m // 28, 2)
    return up.reshape(len(x), side, m // side, side, m // side).mean((2, 4))


def standardise(v):
    return (v - v.mean(1, keepdims=True)) / (v.std(1, keepdims=True) + 1e-6)


def hog(x, cell, bins, signed=True):
    """fc7's `train/instance/hog.rs`: central differences (0 on the border), magnitude shared
    between the two nearest orientation bins, summed over cells; then L2-normalised."""
    gx, gy = np.zeros_like(x), np.zeros_like(x)
    gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    gy[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    mag = np.sqrt(gx**2 + gy**2)
    span = 2 * np.pi if signed else np.pi
    at = np.mod(np.arctan2(gy, gx), span) / span * bins
    b0 = np.floor(at).astype(int) % bins
    f = at - np.floor(at)
    b1 = (b0 + 1) % bins
    s = x.shape[1] // cell
    h = np.zeros((len(x), s, s, bins), np.float32)
    for b in range(bins):
        w = mag * ((b0 == b) * (1 - f) + (b1 == b) * f)
        h[..., b] = w[:, : s * cell, : s * cell].reshape(len(x), s, cell, s, cell).sum((2, 4))
    v = h.reshape(len(x), -1)
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6)


CASES = {
    "pixels 28×28": lambda x: resize(x, 28).reshape(len(x), -1),
    "pixels 28×28, standardised per image": lambda x: standardise(x.reshape(len(x), -1)),
    "thumbnail 16×16, standardised (--reconstruct-target thumbnail)": lambda x: standardise(resize(x, 16).reshape(len(x), -1)),
    "thumbnail 12×12, standardised": lambda x: standardise(resize(x, 12).reshape(len(x), -1)),
    "thumbnail 8×8, standardised": lambda x: standardise(resize(x, 8).reshape(len(x), -1)),
    "HOG of 28×28, 7×7 cells of 4 px, 9 unsigned bins": lambda x: hog(x, 4, 9, signed=False),
    "HOG of 28×28, 7×7 cells of 4 px, 9 signed bins": lambda x: hog(x, 4, 9),
    "HOG of 28×28, 4×4 cells of 7 px, 9 signed bins": lambda x: hog(x, 7, 9),
    "HOG of 32×32 grey, 8×8 cells of 4 px, 9 signed bins (--reconstruct-target hog)": lambda x: hog(resize(x, 32), 4, 9),
    "the same, standardised per image (the head's target)": lambda x: standardise(hog(resize(x, 32), 4, 9)),
    "HOG of 32×32, 12 signed bins": lambda x: hog(resize(x, 32), 4, 12),
    "HOG of 16×16 grey, 8×8 cells of 2 px": lambda x: hog(resize(x, 16), 2, 9),
    "HOG of 32×32 + thumbnail 16×16, both standardised": lambda x: np.concatenate(
        [standardise(hog(resize(x, 32), 4, 9)), standardise(resize(x, 16).reshape(len(x), -1))], 1),
}

for name, f in CASES.items():
    print(f"{precision6(f(xte[q]), f(xtr)):.4f}  {name}", flush=True)
