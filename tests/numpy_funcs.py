"""Functions using numpy that tests run in limited children, in every context.

numpy is imported here at module level, so a spawn or forkserver child loads
it while starting up, before the limits apply (as the caller did before a
fork): imported under a small memory limit, OpenBLAS cannot allocate its
buffers. The other ``*_funcs`` modules stay free of numpy to start fast.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

MB = 1 << 20
#: The size of the large results, in bytes.
SIZE = 200 * MB


def numpy_allocate(mb: int) -> int:
    array = np.ones(mb * MB, dtype=np.uint8)
    return int(array.sum())


def make_array() -> tuple[np.ndarray, str]:
    array = np.random.default_rng(7).integers(0, 256, size=SIZE, dtype=np.uint8)
    return array, hashlib.sha256(array.data).hexdigest()


def make_bytes() -> tuple[bytes, str]:
    data = np.random.default_rng(8).integers(0, 256, size=SIZE, dtype=np.uint8).tobytes()
    return data, hashlib.sha256(data).hexdigest()


def make_mixed() -> dict[str, Any]:
    rng = np.random.default_rng(9)
    floats = rng.random((1000, 1000))
    ints = rng.integers(0, 1 << 40, size=(300, 7), dtype=np.int64)
    return {"floats": floats, "ints": ints, "text": "x" * 1000, "view": floats[::2, 1::3]}


def checksum(values: np.ndarray) -> str:
    return hashlib.sha256(values.data).hexdigest()


def make_odd_arrays() -> list[np.ndarray]:
    """Arrays of odd lengths and wide dtypes, small and large, in one result
    too large to travel inline: each must come back aligned for its dtype."""
    rng = np.random.default_rng(10)
    return [
        np.arange(3, dtype=np.uint8),
        np.arange(5, dtype=np.float64),
        rng.random(20_001),
        np.arange(7, dtype=np.int32),
        (rng.random(150_001) + 1j).astype(np.complex128),
        np.arange(11, dtype=np.uint8),
        rng.random(300_003).astype(np.float32),
    ]


def make_big_and_small(mb: int) -> tuple[np.ndarray, np.ndarray]:
    """A large array and a 2 MB one, in one result."""
    return np.ones(mb * MB, dtype=np.uint8), np.arange(2 * MB // 8, dtype=np.int64)
