"""Module-level functions for the context tests: importable by spawned
children and by pool workers."""

from __future__ import annotations

import os
import time

from pynisher import Pynisher, limit


def double(x: int) -> int:
    return 2 * x


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def allocate(mb: int) -> int:
    return len(bytearray(mb << 20))


@limit(wall_time=5)
def decorated_depth(depth: int) -> list[int]:
    """Calls itself by name; inside its own child it must not fork again."""
    if depth == 0:
        return [os.getpid()]
    return [os.getpid(), *decorated_depth(depth - 1)]


def limited_in_worker(context: str) -> tuple[int, str]:
    """Runs inside a daemonic pool worker: one OK call and one wall timeout."""
    ok = Pynisher(double, context=context)(21)
    outcome = Pynisher(sleeper, wall_time=0.2, context=context).run(5)
    return ok, outcome.status.value
