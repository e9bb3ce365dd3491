"""Functions that return large ``bytes`` objects, which the child lends to
the caller rather than copying them through shared memory."""

from __future__ import annotations

import random

MB = 1 << 20


def random_bytes(size: int, seed: int) -> bytes:
    """``size`` bytes that differ from page to page."""
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(MB, size - at)) for at in range(0, size, MB))
