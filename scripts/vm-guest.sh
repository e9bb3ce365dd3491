#!/usr/bin/env bash
# Runs inside the VM that scripts/vm-test.sh boots, as root on a cgroup v2 with
# the memory controller. Usage: vm-guest.sh OUT_DIR (writable; it receives the
# marker "started" and the exit status in "status").
#
# It makes two cgroups below the root: "pynisher", delegated to pynisher's
# cgroup v2 backend (PYNISHER_CGROUP), and "capped", whose memory.max a
# container runtime or a batch scheduler would have set; the caller of the
# outside-cap tests runs inside it. A test that skips here is a failure: these
# tests exist to run here.
set -uo pipefail
OUT=$1
: "${PYTHON:?}" "${RUST_TESTS:?}" "${VM_TESTS:?}"
cd "$(dirname "$0")/.."
touch "$OUT/started"

CGROOT=/sys/fs/cgroup
DELEGATED=$CGROOT/pynisher
CAPPED=$CGROOT/capped
CAP=384M

setup() {
  grep -q "^cgroup2 $CGROOT " /proc/mounts || mount -t cgroup2 none "$CGROOT" || return 1
  grep -qw memory "$CGROOT/cgroup.controllers" || {
    echo "no memory controller in $CGROOT/cgroup.controllers"
    return 1
  }
  echo +memory >"$CGROOT/cgroup.subtree_control" &&
    mkdir -p "$DELEGATED" "$CAPPED" &&
    echo +memory >"$DELEGATED/cgroup.subtree_control" &&
    echo "$CAP" >"$CAPPED/memory.max" &&
    { [[ ! -e $CAPPED/memory.swap.max ]] || echo 0 >"$CAPPED/memory.swap.max"; }
}

rc=0
step() { # step NAME COMMAND...: runs it, times it, fails on a failure or a skipped test
  local name=$1 started=$SECONDS status
  shift
  printf '\n== [vm] %s\n' "$name"
  "$@" 2>&1 | tee "$OUT/step.log"
  status=${PIPESTATUS[0]}
  if ((status == 0)) && grep -aq ' SKIPPED' "$OUT/step.log"; then
    echo "[vm] FAILED: a test skipped inside the VM, where it must run"
    status=1
  fi
  printf '== [vm] %s: %s in %d s\n' "$name" "$([[ $status == 0 ]] && echo passed || echo FAILED)" \
    $((SECONDS - started))
  ((status == 0)) || rc=1
}

in_capped_cgroup() { # runs COMMAND... as a process of the capped cgroup
  echo $BASHPID >"$CAPPED/cgroup.procs" && exec "$@"
}

printf '[vm] kernel %s, %s CPUs, %s MiB\n' "$(uname -r)" "$(nproc)" \
  $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
if ! setup; then
  echo "[vm] FAILED: could not set up the cgroups"
  echo 1 >"$OUT/status"
  exit 1
fi
echo "[vm] delegated cgroup $DELEGATED; outside cap: $CAPPED with memory.max $(cat "$CAPPED/memory.max")"

export PYTHONDONTWRITEBYTECODE=1
# The repository is read-only here: no cache, and temporary files in the VM's /tmp.
PYTEST=("$PYTHON" -m pytest -p no:cacheprovider -v -rsxX)

step "Rust: the cgroup module's tests, the ignored ones included" \
  env PYNISHER_CGROUP="$DELEGATED" "$RUST_TESTS" --include-ignored cgroup::
step "Rust: tests/vm.rs (root, and a caller under the outside cap $CAPPED)" \
  in_capped_cgroup env PYNISHER_TEST_OUTSIDE_CAP="$CAPPED" "$VM_TESTS" --include-ignored --test-threads=1
step "pytest: the cgroup v2 backend and the resident memory mode on it" \
  env PYNISHER_CGROUP="$DELEGATED" "${PYTEST[@]}" tests/test_cgroup.py tests/test_basic.py -k "cgroup or resident"
step "pytest: calls whose caller is under an outside memory cap ($CAPPED)" \
  in_capped_cgroup env PYNISHER_TEST_OUTSIDE_CAP="$CAPPED" "${PYTEST[@]}" tests/test_outside_cap.py

echo "$rc" >"$OUT/status"
exit "$rc"
