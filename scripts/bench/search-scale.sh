#!/usr/bin/env bash
# The search benchmarks behind BENCHMARKS.md ("Search at scale"): on a real index (default: the
# demo's, indexes/fmnist-quick, written by scripts/demo.sh) and on a synthetic index of N
# vectors drawn around its fc7 vectors: size on disk, graph build rate, recall@6 of the graph
# with its re-rank against exact search, and `fc7 query` of an indexed image in a new process,
# cold (page cache dropped; needs root) and warm.
# Usage: scripts/bench/search-scale.sh [REAL_INDEX] [N] [WORKDIR]
#   (defaults indexes/fmnist-quick 1000000 /tmp/fc7-search; a million needs ~9 GB of disk,
#    ~13 GB of memory mostly page cache, and ~10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
real=${1:-indexes/fmnist-quick}
n=${2:-1000000}
w=${3:-/tmp/fc7-search}
cargo build --release --bins --benches -q
bench=$(ls -t target/release/deps/fc7bench-* | grep -v '\.d$' | head -1)
fc7=target/release/fc7
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
mkdir -p "$w"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop the page cache: not root)"; }
timed_queries() { # INDEX IMAGE...
  local idx=$1; shift
  for img in "$@"; do
    drop
    /usr/bin/time -f "cold query: %e s wall, %M KB max RSS" $fc7 query "$img" --index "$idx" >/dev/null
  done
  for img in "$@"; do
    /usr/bin/time -f "warm query: %e s wall, %M KB max RSS" $fc7 query "$img" --index "$idx" >/dev/null
  done
}

echo "## real vectors: $real"
$fc7 info --index "$real" | grep -E 'indexed|graph|vectors|bytes_on_disk'
$bench rebuild-graph "$real"
$bench recall-vectors "$real" 1000 6 16 32 64 128
imgs=$(python3 -c "
import sqlite3, sys
c = sqlite3.connect('$real/catalog.sqlite')
print(' '.join(bytes(r[0]).decode() for r in c.execute('SELECT path FROM images WHERE id % 9973 = 1 LIMIT 3')))")
timed_queries "$real" $imgs

echo "## $n synthetic vectors around them: $w/synth"
rm -rf "$w/synth" "$w/synth.files"
$bench synth-index "$real" "$w/synth" "$n"
du -sb "$w/synth" | awk -v n="$n" '{printf "disk: %.0f bytes, %.2f KB per image\n", $1, $1 / n / 1024}'
$bench recall-vectors "$w/synth" 200 6 32 64 128
timed_queries "$w/synth" "$w"/synth.files/q1.jpg "$w"/synth.files/q2.jpg "$w"/synth.files/q3.jpg
