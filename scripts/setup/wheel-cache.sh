# Sourced by the setup-* scripts: fc7's cache folder and fetching one wheel from PyPI (the only
# download source fc7 uses besides the Rust and Debian registries).
cache=${FC7_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fc7}
me=$(basename "$0" .sh)

# fetch_wheel SPEC DIR [pip download options...]: the wheel for SPEC (no dependencies) into DIR.
fetch_wheel() {
  local spec=$1 dir=$2
  shift 2
  command -v python3 >/dev/null || { echo "$me: python3 is needed (apt-get install python3 python3-pip)" >&2; exit 1; }
  python3 -m pip --version >/dev/null 2>&1 || { echo "$me: pip is needed (apt-get install python3-pip)" >&2; exit 1; }
  echo "$me: downloading $spec from PyPI..." >&2
  python3 -m pip download -q --no-deps --only-binary=:all: "$@" -d "$dir" "$spec" >&2
}
