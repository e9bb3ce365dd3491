#!/usr/bin/env bash
# Installs everything the tests need, then runs every check and test:
# formatting and lints, the Rust tests, and pytest against the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# Without PYTHON, everything goes into the virtualenv .venv (made here if
# missing), never into the system Python: Debian and Ubuntu refuse that
# (externally-managed-environment).
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    step "creating the virtualenv .venv"
    python3 -m venv .venv
  fi
  PYTHON=$PWD/.venv/bin/python
fi

step "installing test tools"
"$PYTHON" -m pip install --quiet --upgrade "maturin>=1.5,<2" "pytest>=7" ruff mypy numpy cloudpickle distributed
# Ray 2.60 has wheels for CPython 3.10 to 3.13; elsewhere tests/test_ray.py is skipped.
if ! "$PYTHON" -m pip install --quiet --only-binary=ray "ray>=2.60,<3" >/dev/null 2>&1; then
  echo "Ray: PyPI has no ray>=2.60 wheel for $("$PYTHON" --version); tests/test_ray.py is skipped"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null 2>&1 || echo "cargo-nextest unavailable; using cargo test"
fi

step "building one abi3 wheel (CPython 3.9 and later) and installing it"
rm -rf target/ci-wheel
"$PYTHON" -m maturin build --release --quiet --out target/ci-wheel
WHEEL=$(ls target/ci-wheel/*.whl)
"$PYTHON" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"
"$PYTHON" -m pip install --quiet "$WHEEL"

step "lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
"$PYTHON" -m mypy   # strict: the package and tests/typing_check.py

step "Rust docs and packages"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
for crate in pynisher pynisher-cli; do
  cargo package --list --allow-dirty -p "$crate" >/dev/null
done

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --lib --bins --tests
fi
cargo test --workspace --doc

step "pytest: the whole suite on $("$PYTHON" --version)"
"$PYTHON" -m pytest -q tests

step "pytest on the other Pythons: the same wheel, tests not marked slow"
bash scripts/python-matrix.sh "$WHEEL"

step "real-kernel tests in a VM (scripts/vm-test.sh)"
# The cgroup v2 and outside-memory-cap tests need a kernel setup that CI
# machines lack; a VM boots one. Where it cannot start, CI goes on and says so.
vm_status=0
PYTHON="$PYTHON" bash scripts/vm-test.sh || vm_status=$?
case $vm_status in
  0) ;;
  77) printf '\n== SKIPPED: the real-kernel VM tests did not run (reason above)\n' ;;
  *) exit "$vm_status" ;;
esac
