"""The cgroup v2 backend of the resident memory mode. It needs a delegated
cgroup v2 with the memory controller (``PYNISHER_CGROUP``); where there is
none, these tests skip and say why, and the resident mode samples instead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import alive
from limits_funcs import touches_shared_memory
from tree_funcs import start_setsid_sleep

from pynisher import MemoryLimitException, Pynisher, Status, _core, supports

REASON = _core.cgroup_v2_unavailable()


def test_supports_reports_the_backend_truthfully() -> None:
    assert supports("cgroup_v2") is (REASON is None)
    # A cgroup that does not exist is reported unusable, with a reason that
    # names it, by a caller that was told to use it.
    missing = "/sys/fs/cgroup/pynisher-test-missing"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pynisher, pynisher._core as c; "
            "print(pynisher.supports('cgroup_v2')); print(c.cgroup_v2_unavailable())",
        ],
        env={**os.environ, "PYNISHER_CGROUP": missing},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    supported, reason = done.stdout.splitlines()
    assert supported == "False"
    assert missing in reason


needs_cgroup = pytest.mark.skipif(
    REASON is not None, reason=f"no delegated cgroup v2 with the memory controller: {REASON}"
)


def touch(mb: int) -> int:
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


@needs_cgroup
def test_the_kernel_enforces_the_resident_limit(context: str) -> None:
    outcome = Pynisher(touch, memory="100MB", memory_mode="resident", context=context).run(400)
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)
    assert "OOM" in outcome.detail
    assert outcome.peak_memory >= 90 << 20


def escape_and_allocate(pid_file: str) -> None:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    with open(pid_file, "w") as f:
        f.write(str(proc.pid))
    touch(400)


@needs_cgroup
def test_an_escaped_process_dies_with_the_cgroup(context: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    limited = Pynisher(escape_and_allocate, memory="100MB", memory_mode="resident", context=context)
    outcome = limited.run(str(pid_file))
    assert outcome.status is Status.MEMORY
    assert not alive(int(pid_file.read_text()))


@needs_cgroup
def test_the_kernel_counts_memory_shared_within_the_call() -> None:
    outcome = Pynisher(touches_shared_memory, memory="200MB", memory_mode="resident").run(600, 1.0)
    assert outcome.status is Status.MEMORY, outcome.detail


@needs_cgroup
def test_kept_children_outlive_the_call(context: str, tmp_path: Path) -> None:
    """terminate_child_processes=False keeps a call's children under the cgroup
    backend too: its cgroup is not killed when the call ends."""
    pids = tmp_path / "pids"
    limited = Pynisher(
        start_setsid_sleep,
        memory="100MB",
        memory_mode="resident",
        terminate_child_processes=False,
        context=context,
    )
    outcome = limited.run(pids)
    sleeper = int(pids.read_text())
    try:
        assert outcome.status is Status.OK, outcome.detail
        assert alive(sleeper)
    finally:
        os.kill(sleeper, signal.SIGKILL)
