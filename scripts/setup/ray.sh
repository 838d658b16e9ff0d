#!/usr/bin/env bash
# Ray from PyPI in a virtual environment of fc7's cache (idempotent); prints its bin folder.
set -euo pipefail
. "$(dirname "$0")/wheel-cache.sh"
ver=2.60.0
venv=$cache/ray-$ver
if [ ! -x "$venv/bin/ray" ]; then
  echo "$me: installing ray==$ver from PyPI into $venv" >&2
  rm -rf "$venv.part"
  python3 -m venv "$venv.part"
  "$venv.part/bin/pip" install -q "ray==$ver" >&2
  rm -rf "$venv"
  mv "$venv.part" "$venv"
  # The venv's scripts name their interpreter by the folder they were made in.
  sed -i "1s|$venv.part|$venv|" "$venv"/bin/*
fi
echo "$venv/bin"
