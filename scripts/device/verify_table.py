#!/usr/bin/env python3
"""The closing table of scripts/device/verify.sh: each figure read from its step's output,
its goal and ✓/✗ (or - when it was not measured), printed and written as OUT/verify.json.

    verify_table.py OUT DRY   (DRY 1: exit 1 if any step that ran failed)
"""

import json
import os
import re
import sys

out, dry = sys.argv[1], sys.argv[2] == "1"
steps = {}
with open(os.path.join(out, "steps", "results.tsv")) as f:
    for line in f:
        sid, rc, secs = line.rstrip("\n").split("\t")
        steps[sid] = {"status": rc, "seconds": int(secs)}


def text(sid):
    try:
        return open(os.path.join(out, "steps", sid + ".txt"), errors="replace").read()
    except OSError:
        return ""


def nums(sid, pattern):
    return [float(m) for m in re.findall(pattern, text(sid))]


def last_json(sid):
    for line in reversed(text(sid).splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return {}


def torch():
    try:
        return json.load(open(os.path.join(out, "torch.json")))
    except (OSError, ValueError):
        return {}


rows = []


def row(figure, value, goal, ok):
    """ok: True, False, or None when there is nothing to judge."""
    mark = "-" if ok is None or value is None else ("✓" if ok else "✗")
    rows.append({"figure": figure, "value": value, "goal": goal, "met": mark})


def ratio(a, b):
    return round(a / b, 3) if a and b else None


for sid in ("selftest-fp32", "selftest-bf16", "selftest-gpus"):
    failed = nums(sid, r"\d+ checks, (\d+) failed")
    ran = steps.get(sid, {}).get("status") not in (None, "skipped", "no-time")
    row(sid, f"{failed[0]:.0f} failed" if failed and ran else None, "0 failed, exit 0",
        bool(failed) and failed[0] == 0 and steps[sid]["status"] == "0" if ran else None)

paper = nums("engine-rates", r"training paper network, batch 128: ([\d.]+) images/s")
tf32 = paper[-1] if paper else None
t = torch()
row("engine paper b128 images/s (tf32)", tf32, "≥ PyTorch fp32 same card", None)
row("PyTorch paper b128 fp32 images/s", t.get("train_paper_b128_fp32"), "reference", None)
row("engine / PyTorch training", ratio(tf32, t.get("train_paper_b128_fp32")), "≥ 1.0",
    None if not (tf32 and t) else tf32 >= t["train_paper_b128_fp32"])

ext = re.findall(r"extract provider=(\S+) batch=(\d+) iters=\d+ images/s=([\d.]+)", text("ort-extract"))
labels = []
for b in ("256", "64"):
    labels += [f"fc7 b{b} IO binding", f"fc7 b{b} plain"]
labels += ["fc7 fp16 b256", "fc7 fp16 b64"]
rates = {}
for label, (prov, batch, r) in zip(labels, ext):
    rates[label] = float(r)
    row(f"ONNX Runtime {prov} {label} images/s", float(r), "", None)
best = max(rates.values()) if rates else None
tf = t.get("infer_paper_b256_fp32")
row("ONNX Runtime best fc7 / PyTorch fc7 (b256 fp32)", ratio(best, tf), "≥ 1.0",
    None if not (best and tf) else best >= tf)
diff = nums("ort-agree", r"max_abs_diff=([\d.e+-]+)")
row("CPU vs CUDA fc7 max abs difference", diff[0] if diff else None, "≤ 1e-2",
    diff[0] <= 1e-2 if diff else None)
idx = nums("ort-index", r'"images_per_second": ([\d.]+)')
row("fc7 index end to end images/s", round(idx[-1], 1) if idx else None,
    "> 900 (H200, 2026-11-26: 937)", None if dry or not idx else idx[-1] > 900)

way = {}
for w in ("gpu-crops", "host-crops", "copy-stream"):
    r = nums("train-" + w, r"([\d.]+) images/s over")
    way[w] = r[-1] if r else None
    row(f"300 paper steps, {w}: images/s", way[w], "", None)
    row(f"  {w} / engine rate", ratio(way[w], tf32), "→ 1.0", None)
if way["copy-stream"] and way["gpu-crops"]:
    row("copy stream faster than one stream", ratio(way["copy-stream"], way["gpu-crops"]),
        "> 1.0 makes FC7_COPY_STREAM the default", way["copy-stream"] > way["gpu-crops"])

acc = {}
for p in ("tf32", "bf16"):
    j = last_json("train-" + p)
    acc[p] = (100 * (1 - j["val_top1_error"]), j.get("images_per_second")) if j else None
    shown = f"{acc[p][0]:.2f}%, {acc[p][1]:.0f}/s" if acc[p] else None
    row(f"{p}: accuracy, images/s", shown, "", None)
if acc["tf32"] and acc["bf16"]:
    keeps = acc["bf16"][0] >= acc["tf32"][0] - 0.3
    faster = (acc["bf16"][1] or 0) > (acc["tf32"][1] or 0)
    row("bf16 as the default", f"{acc['bf16'][0] - acc['tf32'][0]:+.2f} points, "
        f"{ratio(acc['bf16'][1], acc['tf32'][1])}x", "within 0.3 points and faster", keeps and faster)

inet = nums("rehearsal", r"([\d.]+) images/s over")
row("rehearsal: paper images/s on ImageNet-shaped JPEGs", inet[-1] if inet else None,
    "90 epochs of 1.28M images projected", None)
if inet:
    row("  90-epoch projection, hours", round(90 * 1281167 / inet[-1] / 3600, 2), "", None)

width = max(len(r["figure"]) for r in rows)
print("\nfigure".ljust(width + 2) + "value".ljust(22) + "goal".ljust(44) + "met")
for r in rows:
    v = "" if r["value"] is None else str(r["value"])
    print(r["figure"].ljust(width + 1) + v[:21].ljust(22) + r["goal"][:43].ljust(44) + r["met"])
for sid, s in steps.items():
    print(f"step {sid}: {s['status']} ({s['seconds']} s)")
json.dump({"dry_run": dry, "steps": steps, "figures": rows},
          open(os.path.join(out, "verify.json"), "w"), indent=1, ensure_ascii=False)
broken = [sid for sid, s in steps.items() if s["status"] not in ("0", "skipped", "no-time")]
if broken:
    print("steps that failed: " + ", ".join(broken))
sys.exit(1 if dry and broken else 0)
