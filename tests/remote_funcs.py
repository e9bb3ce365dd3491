"""The functions the Ray test's limited calls run. Apart from ray_funcs.py,
which imports Ray: a spawned or forkserver child imports only this module,
not Ray (seconds of start-up per call)."""

from __future__ import annotations

import time
from typing import Any

from pynisher import Pynisher


class RemoteError(Exception):
    pass


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def spin() -> None:
    while True:
        pass


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes << 20))


def fail(message: str) -> None:
    raise RemoteError(message, 7)


def calls(context: str) -> list[tuple[Pynisher[..., Any], tuple[Any, ...]]]:
    """One call per kind of outcome: ok, the function's error, and each limit."""
    return [
        (Pynisher(sleeper, wall_time=10, context=context), (0.01,)),
        (Pynisher(fail, context=context), ("bad input",)),
        (Pynisher(sleeper, wall_time=0.3, context=context), (30,)),
        (Pynisher(spin, cpu_time=0.3, context=context), ()),
        (Pynisher(allocate, memory=(50, "MB"), context=context), (500,)),
    ]
