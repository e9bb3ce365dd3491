"""A large returned ``bytes`` object is copied once, straight out of the
child's memory into the caller's (``process_vm_readv``), not written into
shared memory and copied out again; where the caller may not read the
child's memory, it still comes back whole, through shared memory. In every
context."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import lent_funcs
import pytest
from conftest import shared_memory_bytes

from pynisher import Pynisher

MB = lent_funcs.MB


def digest(size: int, seed: int) -> str:
    return hashlib.sha256(lent_funcs.random_bytes(size, seed)).hexdigest()


def test_a_large_bytes_result_never_passes_through_shared_memory(context: str) -> None:
    expected = digest(256 * MB, 3)
    base = shared_memory_bytes()
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, shared_memory_bytes() - base)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        data = Pynisher(lent_funcs.random_bytes, wall_time=60, context=context)(256 * MB, 3)
    finally:
        done.set()
        sampler.join()
    assert type(data) is bytes and hashlib.sha256(data).hexdigest() == expected
    # Written into the result's memfd, it would have added 256 MiB.
    assert peak < 64 * MB, f"shared memory grew by {peak / MB:.0f} MiB during the call"


# From 1 MiB a returned bytes object is lent; below, it is pickled.
@pytest.mark.parametrize("size", [MB - 1, MB, 3 * MB + 1])
def test_bytes_results_on_either_side_of_the_lending_size_come_back_whole(
    context: str, size: int
) -> None:
    data = Pynisher(lent_funcs.random_bytes, wall_time=60, context=context)(size, size)
    assert len(data) == size and hashlib.sha256(data).hexdigest() == digest(size, size)


def test_a_lent_result_comes_back_under_every_limit(context: str) -> None:
    limited = Pynisher(
        lent_funcs.random_bytes,
        wall_time=60,
        cpu_time=60,
        memory=2048 * MB,
        context=context,
    )
    assert hashlib.sha256(limited(64 * MB, 5)).hexdigest() == digest(64 * MB, 5)


# A caller whose seccomp filter makes process_vm_readv fail with EPERM, as
# some container profiles do: the child then copies its result into shared
# memory after all. The filter is installed before any other thread exists,
# and every thread and child started later inherits it.
NO_PROCESS_VM_READV = """
    import ctypes, errno, hashlib, os, sys
    sys.path.insert(0, {tests!r})
    import lent_funcs
    from pynisher import Pynisher

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    PROCESS_VM_READV = 310  # x86-64
    rules = (Filter * 4)(
        Filter(0x20, 0, 0, 0),  # load the system call number
        Filter(0x15, 0, 1, PROCESS_VM_READV),  # jump if equal
        Filter(0x06, 0, 0, 0x00050000 | errno.EPERM),  # return EPERM
        Filter(0x06, 0, 0, 0x7FFF0000),  # allow
    )
    program = Program(4, rules)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(program), 0, 0) == 0  # seccomp filter
    buffer = ctypes.create_string_buffer(8)
    iov = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 8)
    denied = libc.process_vm_readv(os.getpid(), iov, 1, iov, 1, 0)
    assert denied == -1 and ctypes.get_errno() == errno.EPERM, denied

    size = 64 * lent_funcs.MB
    data = Pynisher(lent_funcs.random_bytes, wall_time=60, context={context!r})(size, 9)
    print(hashlib.sha256(data).hexdigest(), len(data))
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the filter names x86-64's call")
def test_a_caller_that_may_not_read_the_childs_memory_still_gets_the_result(
    context: str,
) -> None:
    script = NO_PROCESS_VM_READV.format(tests=str(Path(__file__).parent), context=context)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [digest(64 * MB, 9), str(64 * MB)]
