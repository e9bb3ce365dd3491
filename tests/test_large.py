"""Large results come back intact: a 200 MB numpy array and 200 MB of bytes,
compared by checksum, and the returned array is writable; in every context."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from conftest import shared_memory_bytes
from numpy_funcs import (
    MB,
    SIZE,
    checksum,
    make_array,
    make_big_and_small,
    make_bytes,
    make_mixed,
    make_odd_arrays,
)

from pynisher import Pynisher


def test_a_200_mb_numpy_array_comes_back_intact_and_writable(context: str) -> None:
    array, digest = Pynisher(make_array, wall_time=60, context=context)()
    assert isinstance(array, np.ndarray)
    assert array.shape == (SIZE,) and array.dtype == np.uint8
    assert hashlib.sha256(array.data).hexdigest() == digest
    assert array.flags.writeable
    array[:10] = 1  # would raise if the buffer were read-only
    assert int(array[:10].sum()) == 10


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_large_argument_reaches_the_child(context: str) -> None:
    array, digest = make_array()
    assert Pynisher(checksum, context=context)(array) == digest


def test_returned_arrays_are_aligned_for_their_dtype(context: str) -> None:
    got = Pynisher(make_odd_arrays, context=context)()
    expected = make_odd_arrays()
    assert len(got) == len(expected)
    for array, want in zip(got, expected):
        assert array.flags.aligned, (array.dtype, array.shape)
        assert array.flags.writeable
        assert array.dtype == want.dtype and np.array_equal(array, want)


def mapping_size(address: int) -> int:
    """The size of this process's memory mapping that holds ``address``."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return end - start
    raise AssertionError(f"{address:#x} is not mapped")


def test_a_slice_of_a_result_keeps_only_its_own_buffer(context: str) -> None:
    big, small = Pynisher(make_big_and_small, context=context)(400)
    kept = small[:10]  # 80 bytes of the 2 MB array
    assert int(kept.sum()) == 45
    # The slice's memory is the 2 MB array's own mapping, not the result's.
    assert mapping_size(kept.ctypes.data) < 4 * MB
    before = shared_memory_bytes()
    del big, small
    # The 400 MB array's pages are freed at once, though the slice lives on.
    assert before - shared_memory_bytes() > 300 * MB
    assert int(kept.sum()) == 45


def test_the_shared_memory_of_a_large_bytes_result_is_freed(context: str) -> None:
    # A large result's memfd is freed on a short-lived thread of its own,
    # after the call has returned: it must still be freed, and soon.
    before = shared_memory_bytes()
    data, digest = Pynisher(make_bytes, wall_time=60, context=context)()
    assert hashlib.sha256(data).hexdigest() == digest
    deadline = time.monotonic() + 10
    while shared_memory_bytes() - before > SIZE // 2:
        assert time.monotonic() < deadline, "the result's memfd was never freed"
        time.sleep(0.02)
    # The bytes object is the caller's own memory, not the memfd's.
    assert len(data) == SIZE and hashlib.sha256(data).hexdigest() == digest
