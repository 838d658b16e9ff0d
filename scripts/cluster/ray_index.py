#!/usr/bin/env python3
"""Embeds a photo folder into one fc7 store with a Ray cluster: `fc7 index --shard K/N` as Ray
tasks spread over the cluster's nodes, retried when a task or its node fails, with progress and
totals. Every node must see PHOTOS at the same path (a shared or replicated file system), have
`fc7` and ONNX Runtime installed, and reach the PostgreSQL store.

    scripts/cluster/ray_index.py PHOTOS... --index postgres://USER@HOST/DB [--workers N]
        [--address ray://… | HOST:PORT | auto] [--fc7 PATH] [-- extra fc7 index flags]

A shard that fails is retried (--retries); rerunning a shard is safe, since a store skips
what it has and claims what it embeds. Exit status 1 if any shard failed in the end.
"""

import argparse
import json
import os
import sys
import time

import ray


@ray.remote(max_retries=3, retry_exceptions=True)
def index_shard(fc7, photos, index, k, n, extra):
    """One shard: `fc7 index PHOTOS --index INDEX --shard K/N --json` on whichever node Ray
    chose; its summary, with the node, or an exception with fc7's one-line error."""
    import subprocess

    cmd = [fc7, "index", *photos, "--index", index, "--shard", f"{k}/{n}", "--json", "--quiet"]
    started = time.time()
    p = subprocess.run(cmd + list(extra), capture_output=True, text=True)
    node = ray.get_runtime_context().get_node_id()[:8]
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
        raise RuntimeError(f"shard {k}/{n} on node {node}: {err}")
    summary = json.loads(p.stdout)
    summary.update(shard=k, node=node, wall=time.time() - started)
    return summary


def count_files(roots):
    return sum(len(files) for r in roots for _, _, files in os.walk(r))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="+")
    ap.add_argument("--index", required=True, help="postgres://… (the store every shard fills)")
    ap.add_argument("--workers", type=int, default=0, help="shards (default: the cluster's CPUs)")
    ap.add_argument("--address", default="auto", help="the Ray cluster (default: auto)")
    ap.add_argument("--fc7", default="fc7", help="the fc7 binary on every node")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--cpus-per-task", type=float, default=1.0)
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if not args.index.startswith(("postgres://", "postgresql://")):
        sys.exit("ray_index: --index must be a postgres:// store that every node reaches")
    photos = [os.path.abspath(p) for p in args.photos]
    fc7 = os.path.abspath(args.fc7) if os.sep in args.fc7 else args.fc7
    ray.init(address=args.address, log_to_driver=False, logging_level="ERROR")
    nodes = [n for n in ray.nodes() if n["Alive"]]
    n = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1) / args.cpus_per_task))
    total = count_files(photos)
    print(f"ray_index: {total} files, {n} shards over {len(nodes)} nodes", flush=True)
    task = index_shard.options(max_retries=args.retries, num_cpus=args.cpus_per_task)
    pending = [task.remote(fc7, photos, args.index, k, n, extra) for k in range(n)]
    done, failed, started = [], [], time.time()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            s = ray.get(ready[0])
            done.append(s)
            print(
                f"  shard {s['shard']}/{n} on node {s['node']}: added {s['added']}, "
                f"unchanged {s['unchanged']}, skipped {s['skipped']} in {s['wall']:.1f} s "
                f"({len(done)}/{n} shards, {time.time() - started:.0f} s)",
                flush=True,
            )
        except Exception as e:  # a shard that failed every retry
            msg = str(e).strip().splitlines()[-1]
            failed.append(msg)
            print(f"  failed: {msg}", file=sys.stderr, flush=True)
    keys = ("added", "updated", "unchanged", "skipped", "removed")
    totals = {k: sum(s[k] for s in done) for k in keys}
    totals.update(
        shards=n,
        failed=len(failed),
        nodes=sorted({s["node"] for s in done}),
        total_indexed=max([s["total_indexed"] for s in done] or [0]),
        seconds=round(time.time() - started, 1),
    )
    print(json.dumps(totals), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
