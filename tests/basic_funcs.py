"""Functions that test_basic.py runs in limited children, in every context.

They live outside the test module so that a spawn or forkserver child imports
only this module (no pytest), which keeps its start-up short.
"""

from __future__ import annotations

import os
import time


def double(x: int) -> int:
    return 2 * x


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def allocate(mb: int) -> int:
    block = bytearray(mb << 20)
    return len(block)


class CustomError(Exception):
    pass


def raises_custom(a: int, b: str) -> None:
    raise CustomError(a, b)


def exit3() -> None:
    os._exit(3)


def segfault(dump: str) -> None:
    """Reads address 0. faulthandler's report of the crash goes to the file
    ``dump``, for the test to check, not to the terminal of the test run."""
    import ctypes
    import faulthandler

    faulthandler.enable(file=open(dump, "w"))  # kept open: written at the crash
    ctypes.string_at(0)


def touch(mb: int, hold: float = 0.0) -> int:
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)  # the peak is sampled: hold it long enough to be seen
    return len(block)
