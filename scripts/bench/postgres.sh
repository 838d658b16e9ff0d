#!/usr/bin/env bash
# The PostgreSQL store beside the index folder, in one run on this machine (BENCHMARKS.md,
# "Beyond one machine"), against a PostgreSQL 16 + pgvector server this script starts on
# 127.0.0.1 and stops:
#   1. the store's own cost: rows/s into PostgreSQL against into an index folder, with the
#      vectors made beforehand (synth-index, then pg-load of the same rows);
#   2. embedding workers: `fc7 index` of PHOTOS generated photos by 1, 2 and 4 processes into
#      one store, and by one into a folder;
#   3. recall@6 against exact search and query p50/p95, folder and store, default candidates,
#      at each size of SIZES;
#   4. `fc7 serve` by-id latency over each (scripts/bench/serve.sh).
# Usage: scripts/bench/postgres.sh [SRC_INDEX] [SIZES] [PHOTOS] [WORKDIR]
#   SRC_INDEX: real fc7 vectors to draw synthetic rows around (default: the demo's
#   indexes/fmnist-quick; made from Fashion-MNIST's test set and a random model if missing)
#   SIZES: default "100000 1000000" (a million needs ~20 GB of disk and about an hour)
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:-indexes/fmnist-quick}
sizes=${2:-100000 1000000}
photos=${3:-400}
w=${4:-/tmp/fc7-pg}
cargo build --release --bins --benches -q
bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
fc7=$PWD/target/release/fc7
mkdir -p "$w"
chmod 755 "$w"
pg=$w/server
trap 'scripts/setup/postgres.sh stop "$pg"' EXIT
url=$(scripts/setup/postgres.sh start "$pg" | tail -n1)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "server: PostgreSQL 16.2 + pgvector 0.6.2 (pgserver), shared_buffers 256MB, on 127.0.0.1"
if [ ! -d "$src" ]; then
  src=$w/src
  if [ ! -d "$src" ]; then
    $fc7 dataset fashion-mnist "$w/fm" >/dev/null
    $fc7 model init --random --classes 10 --out "$w/random.onnx" >/dev/null
    $fc7 index "$w/fm/test" --index "$src" --model "$w/random.onnx" --device cpu --quiet
  fi
  echo "source vectors: Fashion-MNIST's 10,000 test images through a random He-initialised AlexNet"
fi
psql_bin=$(dirname "$(find /usr/local/lib/fc7 "${XDG_CACHE_HOME:-$HOME/.cache}/fc7" -path '*pginstall/bin/psql' 2>/dev/null | head -1)")
sql() { PGPASSWORD=fc7 "$psql_bin/psql" -qAt -h 127.0.0.1 -p "$(cat "$pg/port")" -U fc7 -d fc7 -c "$1"; }

for n in $sizes; do
  echo "## $n rows"
  rm -rf "$w/synth-$n" "$w/synth-$n.files"
  /usr/bin/time -f "folder: %e s wall, %M KB max RSS" $bench synth-index "$src" "$w/synth-$n" "$n"
  du -sb "$w/synth-$n" | awk -v n="$n" '{printf "folder disk: %.2f KB per image\n", $1 / n / 1024}'
  /usr/bin/time -f "store: %e s wall, %M KB max RSS" $bench pg-load "$w/synth-$n" "$url?table=s$n" "$n"
  sql "VACUUM ANALYZE s${n}_images"
  $bench pg-recall "$w/synth-$n" "$url?table=s$n" 200 6
  scripts/bench/serve.sh "$w/synth-$n" "" 200 | grep 'by id' | sed 's/^/folder /'
  scripts/bench/serve.sh "$url?table=s$n" "" 200 | grep 'by id' | sed 's/^/store /'
done

echo "## embedding: $photos generated 640x480 photos"
rm -rf "$w/photos"
$bench make-photos "$w/photos" "$photos" 640 480
$fc7 model init --random --out "$w/paper.onnx" >/dev/null
run_index() { # INDEX WORKERS
  local start=$(date +%s.%N) pids=()
  for _ in $(seq "$2"); do
    $fc7 index "$w/photos" --index "$1" --model "$w/paper.onnx" --device cpu --quiet --threads $((2 > $2 ? 2 / $2 : 1)) &
    pids+=($!)
  done
  wait "${pids[@]}"
  python3 -c "import sys, time; print('%s workers=%s: %.1f images/s' % (sys.argv[1], sys.argv[2], $photos / (time.time() - $start)))" "$3" "$2"
}
# ONNX Runtime's optimised graph is cached on a model's first use: not a cost of the first run.
mkdir -p "$w/warm"
ls "$w"/photos/* | head -4 | xargs cp -t "$w/warm/"
$fc7 index "$w/warm" --index "$w/idx-warm" --model "$w/paper.onnx" --device cpu --quiet
rm -rf "$w/idx-embed" "$w/idx-warm" "$w/warm"
run_index "$w/idx-embed" 1 folder
for k in 1 2 4; do run_index "$url?table=embed$k" "$k" store; done
