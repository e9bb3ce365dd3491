"""Large results come back intact: a 200 MB numpy array and 200 MB of bytes,
compared by checksum, and the returned array is writable; in every context."""

from __future__ import annotations

import hashlib

import numpy as np
from numpy_funcs import SIZE, checksum, make_array, make_bytes, make_mixed

from pynisher import Pynisher


def test_a_200_mb_numpy_array_comes_back_intact_and_writable(context: str) -> None:
    array, digest = Pynisher(make_array, wall_time=60, context=context)()
    assert isinstance(array, np.ndarray)
    assert array.shape == (SIZE,) and array.dtype == np.uint8
    assert hashlib.sha256(array.data).hexdigest() == digest
    assert array.flags.writeable
    array[:10] = 1  # would raise if the buffer were read-only
    assert int(array[:10].sum()) == 10


def test_200_mb_of_bytes_come_back_intact(context: str) -> None:
    data, digest = Pynisher(make_bytes, wall_time=60, context=context)()
    assert type(data) is bytes and len(data) == SIZE
    assert hashlib.sha256(data).hexdigest() == digest


def test_arrays_of_other_dtypes_shapes_and_strides_come_back_equal(context: str) -> None:
    got = Pynisher(make_mixed, context=context)()
    expected = make_mixed()
    assert set(got) == set(expected)
    for key in ("floats", "ints", "view"):
        assert got[key].dtype == expected[key].dtype
        assert np.array_equal(got[key], expected[key])
    assert got["text"] == expected["text"]


def test_a_large_argument_reaches_the_child(context: str) -> None:
    array, digest = make_array()
    assert Pynisher(checksum, context=context)(array) == digest
