"""Processes the call starts: dead when the call returns, except the
descendants of a successful call with ``terminate_child_processes=False``.

Each function writes the pid of the process it started to a file before it
returns or hangs, so the test can find it even after a wall-time kill.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import alive, kill_quietly, read_pids, wait_dead, write_line

from pynisher import Pynisher, Status


def start_setsid_sleep(pids: Path) -> None:
    """A grandchild in its own session (and so its own process group)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    write_line(pids, str(proc.pid))


def start_daemon(pids: Path) -> None:
    """The classic double fork: the daemon's parent exits, the daemon calls setsid."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.write(write_end, f"{os.getpid()}\n".encode())
                time.sleep(60)
        finally:
            os._exit(0)
    os.waitpid(first, 0)
    pid = os.read(read_end, 64).decode().strip()
    os.close(read_end)
    os.close(write_end)
    write_line(pids, pid)


def start_forked_sleeper(pids: Path) -> None:
    """A plain os.fork without exec: it holds every fd the child had."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    write_line(pids, str(pid))


Starter = Callable[[Path], None]
STARTERS: list[Starter] = [start_setsid_sleep, start_daemon, start_forked_sleeper]


def then_return(start: Starter, pids: Path) -> str:
    start(pids)
    return "done"


def then_hang(start: Starter, pids: Path) -> None:
    start(pids)
    time.sleep(60)


def then_raise(start: Starter, pids: Path) -> None:
    start(pids)
    raise ValueError("after starting a process")


@pytest.mark.parametrize("start", STARTERS)
def test_descendants_of_a_successful_call_are_dead(start: Starter, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    assert Pynisher(then_return)(start, pids) == "done"
    (pid,) = read_pids(pids, 1)
    try:
        assert not alive(pid), "a descendant survived a successful call"
    finally:
        kill_quietly(pid)


@pytest.mark.parametrize("terminate", [True, False])
@pytest.mark.parametrize("start", STARTERS)
def test_descendants_are_dead_after_a_wall_time_kill(
    start: Starter, terminate: bool, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    limited = Pynisher(then_hang, wall_time=0.5, terminate_child_processes=terminate)
    outcome = limited.run(start, pids)
    assert outcome.status is Status.WALL_TIME
    (pid,) = read_pids(pids, 1)
    try:
        # After a limit hit the whole tree is killed, whatever the option says.
        assert not alive(pid), "a descendant survived the wall-time kill"
    finally:
        kill_quietly(pid)


@pytest.mark.parametrize("start", [start_setsid_sleep, start_daemon])
def test_descendants_are_dead_after_an_error(start: Starter, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    outcome = Pynisher(then_raise).run(start, pids)
    assert outcome.status is Status.ERROR
    (pid,) = read_pids(pids, 1)
    try:
        assert not alive(pid)
    finally:
        kill_quietly(pid)


@pytest.mark.parametrize("start", STARTERS)
def test_without_terminate_the_descendants_of_a_successful_call_survive(
    start: Starter, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    start_time = time.monotonic()
    limited = Pynisher(then_return, terminate_child_processes=False)
    assert limited(start, pids) == "done"
    # Returning does not wait for the descendant, even one holding the
    # child's file descriptors (the forked sleeper).
    assert time.monotonic() - start_time < 5
    (pid,) = read_pids(pids, 1)
    try:
        assert alive(pid), "terminate_child_processes=False killed a descendant"
    finally:
        os.kill(pid, 9)
    assert wait_dead(pid, 2)


def test_every_grandchild_of_a_fork_bomb_is_dead(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    def bomb(depth: int) -> None:
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                try:
                    write_line(pids, str(os.getpid()))
                    if depth > 0:
                        bomb(depth - 1)
                    os.setsid()
                    time.sleep(60)
                finally:
                    os._exit(0)

    def run_bomb() -> None:
        bomb(3)  # 2 + 4 + 8 + 16 = 30 processes
        time.sleep(60)

    outcome = Pynisher(run_bomb, wall_time=1).run()
    assert outcome.status is Status.WALL_TIME
    started = read_pids(pids, 30)
    try:
        assert [pid for pid in started if alive(pid)] == []
    finally:
        for pid in started:
            kill_quietly(pid)
