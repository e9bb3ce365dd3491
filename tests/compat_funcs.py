"""Functions that test_compat10.py runs in limited children."""

from __future__ import annotations

import time
from typing import IO


def opens_a_file(path: str) -> IO[str]:
    return open(path)


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
