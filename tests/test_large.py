"""Large results come back intact: a 200 MB numpy array and 200 MB of bytes,
compared by checksum, and the returned array is writable."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from pynisher import Pynisher

SIZE = 200 << 20


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


def test_a_200_mb_numpy_array_comes_back_intact_and_writable() -> None:
    array, digest = Pynisher(make_array, wall_time=60)()
    assert isinstance(array, np.ndarray)
    assert array.shape == (SIZE,) and array.dtype == np.uint8
    assert hashlib.sha256(array.data).hexdigest() == digest
    assert array.flags.writeable
    array[:10] = 1  # would raise if the buffer were read-only
    assert int(array[:10].sum()) == 10


def test_200_mb_of_bytes_come_back_intact() -> None:
    data, digest = Pynisher(make_bytes, wall_time=60)()
    assert type(data) is bytes and len(data) == SIZE
    assert hashlib.sha256(data).hexdigest() == digest


def test_arrays_of_other_dtypes_shapes_and_strides_come_back_equal() -> None:
    got = Pynisher(make_mixed)()
    expected = make_mixed()
    assert set(got) == set(expected)
    for key in ("floats", "ints", "view"):
        assert got[key].dtype == expected[key].dtype
        assert np.array_equal(got[key], expected[key])
    assert got["text"] == expected["text"]


def test_a_large_argument_reaches_the_child() -> None:
    array, digest = make_array()

    def checksum(values: np.ndarray) -> str:
        return hashlib.sha256(values.data).hexdigest()

    assert Pynisher(checksum)(array) == digest
