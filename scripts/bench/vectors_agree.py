"""fc7 vectors of several runs against the first: each vector's relative L2 error, precision@6 of
class (each query's six nearest gallery images by exact L2; a class is an image's folder) and
the overlap of those six with the first run's. Each run is a folder holding `gallery/` and
`queries/` as `fc7 export-vectors` writes them (scripts/bench/int8-no-vnni.sh).
Usage: python3 scripts/bench/vectors_agree.py REFERENCE RUN..."""
import json, sys
import numpy as np

def load(name, part):
    v = np.load(f"{name}/{part}/vectors.npy")
    paths = [json.loads(l)["path"] for l in open(f"{name}/{part}/metadata.jsonl")]
    order = np.argsort(paths)
    return v[order], [paths[i].split("/")[-2] for i in order]

def knn(q, g, k=6):
    d = (q * q).sum(1)[:, None] - 2 * q @ g.T + (g * g).sum(1)[None, :]
    return np.argsort(d, axis=1)[:, :k]

ref = sys.argv[1]
rg, gl = load(ref, "gallery"); rq, ql = load(ref, "queries")
rn = knn(rq, rg)
gl = np.array(gl); ql = np.array(ql)
for name in sys.argv[1:]:
    g, _ = load(name, "gallery"); q, _ = load(name, "queries")
    rel = np.linalg.norm(g - rg, axis=1) / np.linalg.norm(rg, axis=1)
    n = knn(q, g)
    p6 = (gl[n] == ql[:, None]).mean()
    overlap = np.mean([len(set(a) & set(b)) / 6 for a, b in zip(n, rn)])
    print(f"{name:>14}: rel error vs {ref} mean {rel.mean():.4f} max {rel.max():.4f}; "
          f"precision@6 {p6:.4f}; top-6 overlap with {ref} {overlap:.3f}")
