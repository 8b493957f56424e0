# Shared settings for the scripts in this folder; sourced, not run.
# shellcheck shell=bash
GRIDSERVE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GRIDSERVE_VENV="${GRIDSERVE_VENV:-$GRIDSERVE_ROOT/.venv}"
GRIDSERVE_CACHE="${GRIDSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gridserve}"
GRIDSERVE_PYTHON="${GRIDSERVE_PYTHON:-python3}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_debian_packages PKG...: installs the Debian packages that are missing (needs root or sudo).
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
}

# ensure_venv EXTRAS: creates the virtualenv and installs gridserve[EXTRAS] pinned by
# scripts/constraints.txt; skipped when nothing that decides the install has changed.
ensure_venv() {
  local extras="$1" stamp want
  [ -x "$GRIDSERVE_VENV/bin/python" ] || {
    say "creating virtualenv $GRIDSERVE_VENV"
    "$GRIDSERVE_PYTHON" -m venv "$GRIDSERVE_VENV" || die "cannot create a virtualenv with $GRIDSERVE_PYTHON"
  }
  stamp="$GRIDSERVE_VENV/.gridserve-install-$extras"
  want="$(cat "$GRIDSERVE_ROOT/setup.cfg" "$GRIDSERVE_ROOT/scripts/constraints.txt" | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing gridserve[$extras] into $GRIDSERVE_VENV"
    "$GRIDSERVE_VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -c "$GRIDSERVE_ROOT/scripts/constraints.txt" -e "$GRIDSERVE_ROOT[$extras]" >&2 \
      || die "pip install failed"
    echo "$want" > "$stamp"
  fi
}
