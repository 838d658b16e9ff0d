#!/usr/bin/env bash
# A two-node Ray cluster fills one PostgreSQL store: scripts/cluster/ray_index.py over a folder
# with bad files, then checks that the store holds each readable image once, each bad file once
# with its reason, and that both nodes did work. Everything runs in network and PID namespaces
# of its own with only `lo` up (Ray binds the machine's address unless told otherwise; here
# there is none to bind), and everything it started ends with it: Ray and PostgreSQL are
# stopped by their own commands and pids, and the PID namespace takes any straggler along.
#
#   scripts/cluster/test.sh FC7_BINARY      (as root, or where unshare -r works)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fc7=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
raybin=$("$root/scripts/setup/ray.sh" | tail -n1)
if [ "${FC7_IN_NETNS:-}" != 1 ]; then
  as_root=""; [ "$(id -u)" = 0 ] || as_root=-r
  exec unshare $as_root --net --pid --fork --mount-proc env FC7_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
tmp=$(mktemp -d)
chmod 755 "$tmp"
pgdir="$tmp/pg"
ray=$raybin/ray
cleanup() {
  "$ray" stop --force >/dev/null 2>&1 || true
  "$root/scripts/setup/postgres.sh" stop "$pgdir"
  rm -rf "$tmp"
}
trap cleanup EXIT
url=$("$root/scripts/setup/postgres.sh" start "$pgdir" | tail -n1)

# Photos: 3 classes x 16 generated pictures, plus files that must be skipped once each.
"$fc7" dataset synthetic "$tmp/d" --classes 3 --per-class 16 >/dev/null
photos=$tmp/d/train
printf 'not a photo' >"$photos/notes.txt"
: >"$photos/empty.jpg"
printf '\xff\xd8\xff\xe0 not really a jpeg' >"$photos/corrupt.jpg"
readable=$(find "$photos" -name '*.png' | wc -l)
"$fc7" model init --random --classes 3 --out "$tmp/m.onnx" >/dev/null

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
common=(--node-ip-address=127.0.0.1 --num-cpus=1 --object-store-memory=100000000 --disable-usage-stats)
RAY_TMPDIR=$tmp "$ray" start --head --port="$port" --include-dashboard=false "${common[@]}" >"$tmp/head.log" 2>&1 \
  || { cat "$tmp/head.log" >&2; exit 1; }
"$ray" start --address="127.0.0.1:$port" "${common[@]}" >"$tmp/node.log" 2>&1 \
  || { cat "$tmp/node.log" >&2; exit 1; }

out=$("$raybin/python" "$here/ray_index.py" "$photos" --index "$url?table=ray" --workers 4 \
  --address "127.0.0.1:$port" --fc7 "$fc7" -- --model "$tmp/m.onnx" --device cpu --batch 8)
echo "$out"
totals=$(tail -n1 <<<"$out")
info=$("$fc7" info --index "$url?table=ray" --json)
python3 - "$totals" "$info" "$readable" <<'PY'
import json, sys
totals, info, readable = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
problems = []
if info["indexed"] != readable: problems.append(f"{info['indexed']} rows for {readable} readable images")
if totals["added"] != readable or totals["updated"] != 0:
    problems.append(f"embedded {totals['added']} + re-embedded {totals['updated']} for {readable}")
if info["skipped"] != 3: problems.append(f"{info['skipped']} skipped files recorded, not 3")
if len(totals["nodes"]) != 2: problems.append(f"shards ran on {totals['nodes']}, not on both nodes")
if totals["failed"]: problems.append(f"{totals['failed']} shards failed")
if problems:
    sys.exit("ray cluster: " + "; ".join(problems))
print(f"ray cluster: 2 nodes, {totals['shards']} shards: {readable} images stored once, "
      f"{info['skipped']} bad files recorded once ({', '.join(sorted(info['skip_reasons']))})")
PY
