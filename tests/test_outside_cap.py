"""Calls whose caller runs under a memory cap that pynisher did not set (a
container's or a batch job's cgroup ``memory.max``): when the kernel's OOM
killer ends the function, the call is a ``memory`` outcome that names the cap,
and no process of the call survives.

They need a caller inside such a cgroup. The VM test bed (scripts/vm-test.sh)
runs them there and names the cgroup in ``PYNISHER_TEST_OUTSIDE_CAP``;
elsewhere they skip."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import alive, wait_dead
from outside_cap_funcs import allocate_until_killed, escape_then_allocate

from pynisher import MemoryLimitException, Pynisher, Status

CAPPED = os.environ.get("PYNISHER_TEST_OUTSIDE_CAP")

pytestmark = pytest.mark.skipif(
    CAPPED is None,
    reason="needs a caller under an outside memory cap (scripts/vm-test.sh sets "
    "PYNISHER_TEST_OUTSIDE_CAP)",
)


def assert_names_the_outside_cap(detail: str) -> None:
    assert CAPPED is not None
    assert "OOM killer" in detail and "outside" in detail, detail
    assert CAPPED in detail, detail


def test_the_caller_runs_under_the_cap() -> None:
    assert CAPPED is not None
    own = Path("/proc/self/cgroup").read_text().splitlines()[-1].removeprefix("0::")
    assert CAPPED.endswith(own), (CAPPED, own)
    assert Path(CAPPED, "memory.max").read_text().strip() != "max"


def test_an_outside_oom_kill_is_a_memory_outcome(context: str) -> None:
    outcome = Pynisher(allocate_until_killed, context=context).run()
    assert outcome.status is Status.MEMORY, outcome.detail
    assert isinstance(outcome.error, MemoryLimitException)
    assert_names_the_outside_cap(outcome.detail)


def test_an_outside_oom_kill_takes_the_whole_tree(context: str, tmp_path: Path) -> None:
    # The guardian shares no memory with the function's process, so the OOM
    # killer (which kills every process sharing the victim's memory) leaves
    # it alive to kill the escaped sleep; the OOM-kill count of the caller's
    # cgroup makes the call a memory outcome.
    pid_file = tmp_path / "sleeper"
    outcome = Pynisher(escape_then_allocate, context=context).run(str(pid_file))
    sleeper = int(pid_file.read_text())
    try:
        survived = alive(sleeper) and not wait_dead(sleeper, 2.0)
        assert outcome.status is Status.MEMORY, outcome.detail
        assert_names_the_outside_cap(outcome.detail)
        assert not survived, f"the sleep {sleeper} outlived the call"
    finally:
        if alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)
