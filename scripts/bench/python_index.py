"""The Python pipeline a user might write instead of `fc7 index`, for BENCHMARKS.md's side-by-side
runs: walk a folder, decode with PIL (draft mode: JPEGs decoded at reduced size) in a
Pool(THREADS), resize the shorter side to 256 and crop 224, normalise, run onnxruntime fp32 in
batches of 32, store path + fc7 in SQLite. Prints the images/s and the seconds spent.
Usage: python3 scripts/bench/python_index.py MODEL FOLDER DB THREADS"""
import os, sqlite3, sys, time
from multiprocessing import Pool
import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

def load(path):
    try:
        im = Image.open(path)
        im.draft("RGB", (256, 256))
        im = im.convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BILINEAR)
        w, h = im.size
        l, t = (w - 224) // 2, (h - 224) // 2
        a = np.asarray(im.crop((l, t, l + 224, t + 224)), np.float32) / 255.0
        return path, ((a - MEAN) / STD).transpose(2, 0, 1)
    except Exception as e:
        return path, None

model, folder, db, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
so = ort.SessionOptions()
so.intra_op_num_threads = threads
session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
t_session = time.perf_counter() - t0
paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)
con = sqlite3.connect(db)
con.execute("CREATE TABLE IF NOT EXISTS images (path TEXT PRIMARY KEY, fc7 BLOB)")
done = 0
with Pool(threads) as pool:
    batch = []
    def flush():
        global done
        x = np.stack([a for _, a in batch])
        v = session.run(["fc7"], {"image": x})[0]
        con.executemany("INSERT OR REPLACE INTO images VALUES (?, ?)",
                        [(p, r.tobytes()) for (p, _), r in zip(batch, v)])
        con.commit()
        done += len(batch)
        batch.clear()
    for p, a in pool.imap(load, paths, chunksize=4):
        if a is not None:
            batch.append((p, a))
        if len(batch) == 32:
            flush()
    if batch:
        flush()
secs = time.perf_counter() - t0
print(f"python pipeline: {done} images in {secs:.2f} s ({done / secs:.1f} images/s; session {t_session:.2f} s)")
