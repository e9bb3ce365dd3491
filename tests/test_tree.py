"""Processes the call starts: dead when the call returns, except the
descendants of a successful call with ``terminate_child_processes=False``;
in every context.

Each function (in tree_funcs.py) writes the pid of the process it started to
a file before it returns or hangs, so the test can find it even after a
wall-time kill.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import START_UP, alive, kill_quietly, read_pids, wait_dead
from tree_funcs import (
    Starter,
    run_bomb,
    start_daemon,
    start_forked_sleeper,
    start_setsid_sleep,
    start_sigterm_ignoring_sleeper,
    start_stopped_sleeper,
    then_exit,
    then_hang,
    then_raise,
    then_return,
    then_segfault,
)

from pynisher import Pynisher, Status

STARTERS: list[Starter] = [
    start_setsid_sleep,
    start_daemon,
    start_forked_sleeper,
    start_stopped_sleeper,
    start_sigterm_ignoring_sleeper,
]


def starter_id(start: Starter) -> str:
    return start.__name__.removeprefix("start_")


@pytest.mark.parametrize("start", STARTERS, ids=starter_id)
def test_descendants_of_a_successful_call_are_dead(
    start: Starter, context: str, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    assert Pynisher(then_return, context=context)(start, pids) == "done"
    (pid,) = read_pids(pids, 1)
    try:
        assert not alive(pid), "a descendant survived a successful call"
    finally:
        kill_quietly(pid)


@pytest.mark.slow
@pytest.mark.parametrize("terminate", [True, False])
@pytest.mark.parametrize("start", STARTERS, ids=starter_id)
def test_descendants_are_dead_after_a_wall_time_kill(
    start: Starter, terminate: bool, context: str, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    # The descendant must be running (its pid written) before the kill. Starting a
    # Python interpreter can take over 0.5 s on a loaded machine, so it gets longer.
    wall = 2.0 if start is start_sigterm_ignoring_sleeper else 0.5
    limited = Pynisher(
        then_hang, wall_time=wall, terminate_child_processes=terminate, context=context
    )
    outcome = limited.run(start, pids)
    assert outcome.status is Status.WALL_TIME, outcome.detail
    (pid,) = read_pids(pids, 1)
    try:
        # After a limit hit the whole tree is killed, whatever the option says.
        assert not alive(pid), "a descendant survived the wall-time kill"
    finally:
        kill_quietly(pid)


@pytest.mark.parametrize("start", [start_setsid_sleep, start_daemon], ids=starter_id)
def test_descendants_are_dead_after_an_error(start: Starter, context: str, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    outcome = Pynisher(then_raise, context=context).run(start, pids)
    assert outcome.status is Status.ERROR
    (pid,) = read_pids(pids, 1)
    try:
        assert not alive(pid)
    finally:
        kill_quietly(pid)


@pytest.mark.parametrize("terminate", [True, False])
@pytest.mark.parametrize("end", [then_exit, then_segfault], ids=lambda end: end.__name__)
@pytest.mark.parametrize("start", STARTERS, ids=starter_id)
def test_descendants_are_dead_after_a_crash_right_after_they_left_the_group(
    start: Starter,
    end: Callable[[Starter, Path], None],
    terminate: bool,
    context: str,
    tmp_path: Path,
) -> None:
    # The function dies without a result a moment after its descendant left
    # the process group, before any scan of the tree: the call's guardian
    # process, not a scan, is what finds the orphan.
    pids = tmp_path / "pids"
    limited = Pynisher(end, terminate_child_processes=terminate, context=context)
    outcome = limited.run(start, pids)
    assert outcome.status is Status.CRASHED, outcome.detail
    if end is then_exit:
        assert outcome.exitcode == 3, outcome
    else:
        assert outcome.signal == signal.SIGSEGV, outcome
    (pid,) = read_pids(pids, 1)
    try:
        assert not alive(pid), "a descendant survived the crash"
    finally:
        kill_quietly(pid)


@pytest.mark.parametrize("start", STARTERS, ids=starter_id)
def test_without_terminate_the_descendants_of_a_successful_call_survive(
    start: Starter, context: str, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    start_time = time.monotonic()
    limited = Pynisher(then_return, terminate_child_processes=False, context=context)
    assert limited(start, pids) == "done"
    # Returning does not wait for the descendant, even one holding the
    # child's file descriptors (the forked sleeper).
    assert time.monotonic() - start_time < 5 + START_UP[context]
    (pid,) = read_pids(pids, 1)
    try:
        assert alive(pid), "terminate_child_processes=False killed a descendant"
    finally:
        os.kill(pid, 9)
    assert wait_dead(pid, 2)


def test_every_grandchild_of_a_fork_bomb_is_dead(context: str, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    wall = 1
    outcome = Pynisher(run_bomb, wall_time=wall, context=context).run(pids)
    assert outcome.status is Status.WALL_TIME, outcome.detail
    started = read_pids(pids, 30)
    try:
        assert [pid for pid in started if alive(pid)] == []
    finally:
        for pid in started:
            kill_quietly(pid)
