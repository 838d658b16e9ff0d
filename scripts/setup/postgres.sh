#!/usr/bin/env bash
# PostgreSQL 16 with pgvector for fc7's tests and benchmarks, from PyPI's pgserver wheel (its
# binaries only: no Docker, nothing from anywhere else), on 127.0.0.1 at a free port.
#
#   scripts/setup/postgres.sh start DIR   # prints the URL of database fc7 on its last line
#   scripts/setup/postgres.sh stop DIR    # stops the server started in DIR, by its pid
#
# PostgreSQL refuses to run as root, so as root the server runs as the system user fc7pg and
# the binaries are unpacked where that user can read them. The server has three roles: fc7
# (superuser, password fc7, database fc7), and fc7plain (password plain, owner of database
# fc7plain, not allowed to create the vector extension: a database "without pgvector").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/wheel-cache.sh"
ver=0.1.4 # pgserver: PostgreSQL 16.2, pgvector 0.6.2
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

if [ "$cmd" = stop ]; then
  [ -f "$dir/pid" ] || exit 0
  pid=$(cat "$dir/pid")
  kill -INT "$pid" 2>/dev/null || true # PostgreSQL's fast shutdown
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

if [ "$(id -u)" = 0 ]; then
  install=/usr/local/lib/fc7/pgserver-$ver
  user=fc7pg
  id -u $user >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin $user
  as() { runuser -u $user -- "$@"; }
else
  install=$cache/pgserver-$ver
  as() { "$@"; }
fi
if [ ! -x "$install/pgserver/pginstall/bin/postgres" ]; then
  tmp=$(mktemp -d)
  fetch_wheel "pgserver==$ver" "$tmp" --python-version 3.11 --implementation cp \
    --platform manylinux_2_17_x86_64
  python3 -m zipfile -e "$tmp"/*.whl "$tmp/x" >/dev/null
  mkdir -p "$(dirname "$install")"
  rm -rf "$install.part"
  # The binaries find their libraries at $ORIGIN/../../../pgserver.libs: keep the wheel's layout.
  mkdir -p "$install.part/pgserver"
  mv "$tmp/x/pgserver/pginstall" "$install.part/pgserver/"
  mv "$tmp/x/pgserver.libs" "$install.part/"
  chmod -R a+rX,u+w "$install.part"
  chmod a+x "$install.part"/pgserver/pginstall/bin/*
  mv "$install.part" "$install"
  rm -rf "$tmp"
fi
bin=$install/pgserver/pginstall/bin

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ "$(id -u)" = 0 ]; then
  chown $user "$dir"
  as test -w "$dir" || { echo "postgres: user $user cannot reach $dir (a parent folder is closed to it)" >&2; exit 1; }
fi
chmod 700 "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ ! -d "$dir/data" ]; then
  echo fc7 >"$dir/pw"
  [ "$(id -u)" = 0 ] && chown $user "$dir/pw"
  as "$bin/initdb" -D "$dir/data" -U fc7 --auth=scram-sha-256 --pwfile="$dir/pw" -E UTF8 \
    --locale=C >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
fi
mkdir -p "$dir/sock"
[ "$(id -u)" = 0 ] && chown $user "$dir/sock"
as "$bin/postgres" -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir/sock" \
  -c max_connections=64 -c shared_buffers=256MB -c maintenance_work_mem=512MB \
  -c fsync=on -c logging_collector=off >"$dir/server.log" 2>&1 &
echo $! >"$dir/pid"
for _ in $(seq 100); do
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
  kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.1
done
# runuser forks: the pid to stop is the postgres process itself.
pid=$(head -1 "$dir/data/postmaster.pid")
echo "$pid" >"$dir/pid"
psql() { PGPASSWORD=fc7 "$bin/psql" -q -h 127.0.0.1 -p "$port" -U fc7 -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "CREATE DATABASE fc7" 2>/dev/null || true
psql -d postgres -c "DO \$\$ BEGIN CREATE ROLE fc7plain LOGIN PASSWORD 'plain';
  EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null
psql -d postgres -c "CREATE DATABASE fc7plain OWNER fc7plain" 2>/dev/null || true
echo "$port" >"$dir/port"
echo "postgres://fc7:fc7@127.0.0.1:$port/fc7"
