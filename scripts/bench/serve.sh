#!/usr/bin/env bash
# Latency of `fc7 serve` as a browser sees it (curl's time_total on localhost, one request at
# a time): neighbours of indexed images by id, and uploads of an image file, with the model's
# own batch-1 time on the same machine for comparison (BENCHMARKS.md, "fc7 serve").
# Usage: scripts/bench/serve.sh INDEX [UPLOAD_IMAGE] [N]   (default N 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
idx=$1; img=${2:-}; n=${3:-200}
cargo build --release --bins --benches -q
bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
fc7=target/release/fc7
out=$(mktemp)
$fc7 serve --index "$idx" --port 0 --device cpu >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q http "$out" && break; sleep 0.2; done
url=$(grep -o 'http://[0-9.:]*' "$out")
rows=$($fc7 info --index "$idx" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["indexed"])')
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); index $idx ($rows images)"
p() { python3 -c 'import sys, statistics as s; v = sorted(float(x) * 1000 for x in sys.stdin); print("%s: n=%d p50 %.1f ms, p95 %.1f ms" % (sys.argv[1], len(v), s.median(v), v[int(0.95 * (len(v) - 1))]))' "$1"; }
curl -s "$url/api/neighbours/1" >/dev/null # first request: pages of the graph and catalog
python3 -c "import random; random.seed(1); print('\n'.join(str(random.randint(1, $rows)) for _ in range($n)))" |
  while read -r id; do curl -s -o /dev/null -w '%{time_total}\n' "$url/api/neighbours/$id"; done | p "by id (indexed image)"
if [ -n "$img" ]; then
  curl -s -o /dev/null --data-binary @"$img" "$url/api/query" # loads the model
  for _ in $(seq 50); do curl -s -o /dev/null -w '%{time_total}\n' --data-binary @"$img" "$url/api/query"; done | p "upload of $(basename "$img")"
  model=$($fc7 info --index "$idx" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"])')
  $bench extract "$model" cpu 1 50
fi
