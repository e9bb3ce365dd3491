#!/usr/bin/env bash
# The real-kernel test bed: boots Debian's kernel in a small VM (qemu, through
# virtme-ng) on this machine's own files and runs there, as root on a cgroup v2
# with the memory controller, the tests that the host's kernel setup cannot run:
# the cgroup v2 backend, the resident memory mode on it, and calls whose caller
# sits under a memory cap set outside pynisher (scripts/vm-guest.sh).
#
# It tests the package installed in $PYTHON's environment (the VM sees the
# host's files, read-only). Exit status: 0 the tests passed, 1 they failed,
# 77 the VM could not start here; the line "VM SKIPPED: <why>" says why.
#
# Environment: PYTHON (default python3); PYNISHER_VM_KVM=0 or 1 skips the KVM
# probe; PYNISHER_VM_DIR (default target/vm) holds virtme-ng's venv and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PYTHON=${PYTHON:-python3}
VM_DIR=${PYNISHER_VM_DIR:-$REPO/target/vm}
# The whole guest run (boot included) must end within this many seconds.
GUEST_TIMEOUT=${PYNISHER_VM_TIMEOUT:-1800}
APT_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static)

say() { printf '[vm] %s\n' "$*"; }
skip() {
  printf 'VM SKIPPED: %s\n' "$*"
  exit 77
}

[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] ||
  skip "the test bed boots an x86_64 Debian kernel with qemu-system-x86; this is $(uname -sm)"

PYTHON_PATH=$(command -v "$PYTHON") || skip "PYTHON=$PYTHON is not a command"

mkdir -p "$VM_DIR"

# --- what it needs: qemu, a Debian kernel, busybox (virtme-ng's initramfs)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || skip "missing ${missing[*]} and there is no apt-get to install them"
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null ||
      skip "missing ${missing[*]}; installing them needs root (or password-less sudo)"
    sudo=(sudo -n)
  fi
  say "installing ${missing[*]} (apt)"
  "${sudo[@]}" apt-get update -qq >"$VM_DIR/apt.log" 2>&1 ||
    skip "apt-get update failed (see $VM_DIR/apt.log): $(tail -1 "$VM_DIR/apt.log")"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >>"$VM_DIR/apt.log" 2>&1 ||
    skip "apt-get install ${missing[*]} failed (see $VM_DIR/apt.log): $(tail -1 "$VM_DIR/apt.log")"
fi

if [[ ! -x $VM_DIR/venv/bin/vng ]]; then
  say "installing virtme-ng into $VM_DIR/venv (pip)"
  python3 -m venv "$VM_DIR/venv" || skip "python3 -m venv failed"
  "$VM_DIR/venv/bin/pip" install --quiet "virtme-ng>=1.30,<2" ||
    skip "pip install virtme-ng failed"
fi
# vng starts virtme-run, which it finds on PATH.
export PATH=$VM_DIR/venv/bin:$PATH

KERNEL=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -1) || true
[[ -n $KERNEL ]] || skip "no Debian kernel in /boot (linux-image-amd64)"
[[ -r $KERNEL ]] || skip "$KERNEL is not readable by $(id -un) (Debian installs it for root only)"

# --- the Rust tests run in the VM from binaries built here: the crate's own
# (for its cgroup module) and tests/vm.rs (root, and the outside cap)
say "building the Rust test binaries"
read -r RUST_TESTS VM_TESTS < <(cargo test -p pynisher --lib --test vm --no-run --message-format=json 2>/dev/null |
  "$PYTHON_PATH" -c '
import json, sys
found = {}
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
        found[msg["target"]["name"]] = msg["executable"]
print(found.get("pynisher", "-"), found.get("vm", "-"))
') || true
[[ -x ${RUST_TESTS:-} && -x ${VM_TESTS:-} ]] || { say "could not build the Rust test binaries"; exit 1; }

# --- KVM where it works (it boots in seconds); plain emulation otherwise
boot() { # boot ACCEL TIMEOUT OUTDIR COMMAND...
  local accel=$1 limit=$2 out=$3
  shift 3
  # shellcheck disable=SC2086  # ACCEL is empty or one flag
  timeout --kill-after=10 "$limit" vng $accel --run "$KERNEL" --memory 2G --cpus 2 \
    --rwdir "$out" --exec "$*"
}
accel=--disable-kvm
case ${PYNISHER_VM_KVM:-probe} in
  1) accel= ;;
  0) say "KVM not used (PYNISHER_VM_KVM=0)" ;;
  *)
    if [[ -r /dev/kvm && -w /dev/kvm ]]; then
      mkdir -p "$VM_DIR/probe"
      rm -f "$VM_DIR/probe/ok"
      if boot "" 30 "$VM_DIR/probe" "touch $VM_DIR/probe/ok" >"$VM_DIR/kvm-probe.log" 2>&1 &&
        [[ -e $VM_DIR/probe/ok ]]; then
        accel=
      else
        say "KVM does not work here (probe: $(grep -a . "$VM_DIR/kvm-probe.log" | tail -1 | cut -c1-160)); emulating"
      fi
    else
      say "no usable /dev/kvm; emulating"
    fi
    ;;
esac

# --- the run
OUT=$VM_DIR/out
rm -rf "$OUT"
mkdir -p "$OUT"
say "booting $KERNEL (${accel:-KVM}) and running scripts/vm-guest.sh"
started=$SECONDS
rc=0
boot "$accel" "$GUEST_TIMEOUT" "$OUT" \
  "env PYTHON=$PYTHON_PATH RUST_TESTS=$RUST_TESTS VM_TESTS=$VM_TESTS bash $REPO/scripts/vm-guest.sh $OUT" 2>&1 |
  tee "$VM_DIR/run.log" || rc=$?
say "VM step took $((SECONDS - started)) s"
if [[ ! -e $OUT/started ]]; then
  skip "the VM did not start (exit status $rc; last output: $(grep -a . "$VM_DIR/run.log" | tail -1 | cut -c1-200))"
fi
if [[ ! -e $OUT/status ]]; then
  say "FAILED: the guest did not finish (timed out after ${GUEST_TIMEOUT} s, or was killed; exit status $rc)"
  exit 1
fi
exit "$(cat "$OUT/status")"
