#!/usr/bin/env bash
# Run the comparison benchmark: pynisher 1.0.10 vs ours vs the raw floor.
#
#   bash benches/run.sh                 full run, results in benches/results/
#   bash benches/run.sh --quick         smoke run (seconds, not minutes)
#   bash benches/run.sh --quick --out /tmp/bench-smoke
#
# Options of this script (everything else goes to driver.py):
#   --no-build   reuse the installed copy of ours in .venv-new (skip pip install)
#
# Both venvs use the machine's python3 (override with PYTHON=...).  The old
# venv is reused when it already holds pynisher 1.0.10; ours is reinstalled
# from the repo root on every run, because its source changes.  If ours does
# not build or import, the run goes on and reports it as "not installed".
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OLD="$BENCH/.venv-old"
NEW="$BENCH/.venv-new"
PIP_FLAGS=(--quiet --disable-pip-version-check --no-input)

build_ours=1
driver_args=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build_ours=0 ;;
    -h | --help)
      sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) driver_args+=("$arg") ;;
  esac
done

say() { printf '[run.sh] %s\n' "$*" >&2; }
now() { date +%s; }

command -v "$PYTHON" >/dev/null || {
  say "no $PYTHON on PATH"
  exit 1
}
py_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$py_version" != "3.11" ]]; then
  say "warning: $PYTHON is Python $py_version; the benchmark is meant for 3.11"
fi

# Does this venv exist, run the same Python version, and import these modules?
venv_ok() {
  local venv="$1" check="$2"
  [[ -x "$venv/bin/python" ]] || return 1
  "$venv/bin/python" - "$py_version" <<EOF >/dev/null 2>&1
import sys
assert "%d.%d" % sys.version_info[:2] == sys.argv[1]
$check
EOF
}

make_venv() {
  local venv="$1"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
}

t0="$(now)"

# (a) pynisher 1.0.10 from PyPI, in a venv of its own.
old_check='import importlib.metadata as m, numpy, scipy, psutil
assert m.version("pynisher") == "1.0.10"'
if venv_ok "$OLD" "$old_check"; then
  say "reusing $OLD (pynisher 1.0.10)"
else
  say "creating $OLD with pynisher==1.0.10, psutil, numpy, scipy"
  make_venv "$OLD"
  if ! "$OLD/bin/python" -m pip install "${PIP_FLAGS[@]}" "pynisher==1.0.10" psutil numpy scipy \
    >"$OLD/install.log" 2>&1; then
    say "installing pynisher 1.0.10 failed; see $OLD/install.log (the run goes on without it)"
    tail -n 5 "$OLD/install.log" >&2 || true
  fi
fi

# (b) ours, built from the repo root, plus what the driver needs.
new_note=""
if venv_ok "$NEW" 'import numpy, scipy, matplotlib'; then
  say "reusing $NEW (numpy, scipy, matplotlib)"
else
  say "creating $NEW with numpy, scipy, matplotlib"
  make_venv "$NEW"
  "$NEW/bin/python" -m pip install "${PIP_FLAGS[@]}" numpy scipy matplotlib >"$NEW/deps.log" 2>&1 ||
    say "installing numpy/scipy/matplotlib failed; see $NEW/deps.log"
fi
if [[ "$build_ours" == 1 ]]; then
  # Never benchmark a stale copy: remove the old install before building.
  "$NEW/bin/python" -m pip uninstall --yes --quiet pynisher >/dev/null 2>&1 || true
  # A target dir that outlives pip's temporary build copy keeps rebuilds incremental.
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BENCH/.cargo-target}"
  say "pip install $ROOT (ours) into $NEW; log in $NEW/install-ours.log"
  tb="$(now)"
  if "$NEW/bin/python" -m pip install "${PIP_FLAGS[@]}" "$ROOT" >"$NEW/install-ours.log" 2>&1; then
    say "ours installed in $(($(now) - tb)) s"
  else
    new_note="pip install of the repo root failed (see benches/.venv-new/install-ours.log)"
    say "$new_note; the run goes on with 1.0.10 and the floor only"
    # The last lines of a failed pip build are boilerplate; show the causes.
    grep -E -i -m 8 'caused by|error[:[]' "$NEW/install-ours.log" >&2 || tail -n 5 "$NEW/install-ours.log" >&2 || true
  fi
else
  say "--no-build: using whatever pynisher is installed in $NEW"
fi
say "setup took $(($(now) - t0)) s"

# (c) the driver.  It needs matplotlib for the plots; it never imports pynisher.
driver_python="$PYTHON"
for candidate in "$NEW/bin/python" "$OLD/bin/python"; do
  if [[ -x "$candidate" ]] && "$candidate" -c 'import matplotlib' >/dev/null 2>&1; then
    driver_python="$candidate"
    break
  fi
done

args=(--old-python "$OLD/bin/python" --new-python "$NEW/bin/python")
if [[ -n "$new_note" ]]; then
  args+=(--new-note "$new_note")
fi
exec "$driver_python" "$BENCH/driver.py" "${args[@]}" "${driver_args[@]}"
