"""A module that is slow to import, like one that imports sklearn: loading it
costs 0.5 CPU-seconds. A spawn or forkserver child imports it to load the
function, before the call starts (see test_limits.py)."""

from __future__ import annotations

import time

_end = time.process_time() + 0.5
while time.process_time() < _end:
    pass


def instant() -> str:
    return "instant"
