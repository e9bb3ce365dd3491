"""Functions that test_resources.py runs in limited children, in every context.

They live outside the test module so that a spawn or forkserver child imports
only this module (no pytest), which keeps each of the many calls cheap.
"""

from __future__ import annotations

import os
import time


def identity(x: int) -> int:
    return x


def fails(x: int) -> None:
    raise ValueError(x)


def exits(x: int) -> None:
    os._exit(3)


def sleeps(x: int) -> None:
    time.sleep(10)
