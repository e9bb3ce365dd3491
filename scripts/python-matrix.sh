#!/usr/bin/env bash
# Runs the pytest suite's quick part (every test not marked `slow`) with one
# abi3 wheel of pynisher on each CPython besides the one scripts/test.sh uses:
# 3.9, 3.10, 3.12 and 3.13 (override with MATRIX_PYTHONS="3.9 3.12").
# Each version gets a fresh virtualenv of its own; a version missing on this
# machine is reported and skipped. Ray is installed where PyPI has a wheel of
# ray>=2.60 for that version.
#
#   bash scripts/python-matrix.sh [WHEEL]   (default: builds the wheel)
set -uo pipefail
cd "$(dirname "$0")/.."

VERSIONS=${MATRIX_PYTHONS:-3.9 3.10 3.12 3.13}
WORK=target/python-matrix
mkdir -p "$WORK"

wheel=${1:-}
if [ -z "$wheel" ]; then
  rm -rf "$WORK/wheel"
  ${PYTHON:-python3} -m maturin build --release --quiet --out "$WORK/wheel" || exit 1
  wheel=$(ls "$WORK"/wheel/*.whl)
fi
echo "wheel: $wheel"

find_python() {
  # pyenv's newest patch release of $1, else python$1 on the PATH.
  local root found
  root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
  found=$(ls -d "$root"/versions/"$1".[0-9]*/bin/python3 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$found" ]; then
    found=$(command -v "python$1" || true)
  fi
  echo "$found"
}

summary=()
failed=0
for version in $VERSIONS; do
  printf '\n== Python %s\n' "$version"
  python=$(find_python "$version")
  if [ -z "$python" ]; then
    echo "Python $version: not found (no pyenv version $version.*, no python$version on the PATH); skipped"
    summary+=("$version: not on this machine, skipped")
    continue
  fi
  venv="$WORK/venv-$version"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" ||
    ! "$venv/bin/python" -m pip install --quiet "pytest>=7" numpy distributed "$wheel"; then
    echo "Python $version: could not set up its virtualenv"
    summary+=("$version: setup FAILED")
    failed=1
    continue
  fi
  if ! "$venv/bin/python" -m pip install --quiet --only-binary=ray "ray>=2.60,<3" >/dev/null 2>&1; then
    echo "Ray: PyPI has no ray>=2.60 wheel for Python $version; tests/test_ray.py is skipped"
  fi
  log="$WORK/pytest-$version.log"
  # -p no:cacheprovider: each version writes nothing into tests/.
  "$venv/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider tests 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  result=$(grep -E '^[=]* ?[0-9]+ (passed|failed)' "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//')
  summary+=("$version ($("$venv/bin/python" -c 'import platform; print(platform.python_version())')): ${result:-no result} (exit $status)")
  [ "$status" -eq 0 ] || failed=1
done

printf '\n== Python matrix (tests not marked slow)\n'
printf '%s\n' "${summary[@]}"
exit "$failed"
