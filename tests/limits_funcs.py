"""Functions that test_limits.py runs in limited children, in every context.

They live outside the test module so that a spawn or forkserver child imports
only this module (no pytest, no numpy): start-up then stays near 0.1 s, well
below the tests' shortest limits, and each call stays cheap.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

MB = 1 << 20


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def busy(seconds: float) -> float:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds


def allocate(mb: int) -> int:
    block = bytearray(mb * MB)
    return len(block)


# --- functions that resist the soft stop ----------------------------------------


def ignores_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def blocks_every_signal() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    time.sleep(60)


def ignores_sigterm_in_c() -> None:
    # Sleeps inside libc, never returning to the interpreter.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctypes.CDLL(None).sleep(60)


def stops_itself() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(60)


def raises_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise RuntimeError("interrupted by SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    time.sleep(60)


def ignores_sigxcpu() -> None:
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    while True:
        pass


# --- CPU time of the tree --------------------------------------------------------

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass"


def burns_in_a_grandchild(seconds: float) -> int:
    done = subprocess.run([sys.executable, "-c", BURN.format(seconds=seconds)], check=False)
    return done.returncode


# --- deaths without a result ------------------------------------------------------


def raises_sigxcpu_itself() -> None:
    os.kill(os.getpid(), signal.SIGXCPU)


def kills_itself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def exits_zero_without_result() -> None:
    os._exit(0)


def raise_memory_error() -> None:
    raise MemoryError("explicit")


def touches_shared_memory(mb: int, hold: float) -> int:
    """Touches ``mb`` MB of one ``MAP_SHARED`` mapping from two processes of
    the call, holds it, and frees it. They take turns, 25 MB at a time, and
    it is freed for both 25 MB at a time, so that no more than 25 MB is ever
    private to one of them: the rest is shared by both."""
    import mmap

    size, step = mb * MB, 25 * MB
    shared = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    child_turn, parent_done = os.pipe()
    parent_turn, child_done = os.pipe()
    pid = os.fork()
    if pid == 0:
        for start in range(0, size, step):
            os.read(child_turn, 1)
            for i in range(start, min(start + step, size), 4096):
                shared[i] = 2
            os.write(child_done, b"x")
        os.read(child_turn, 1)
        shared.close()
        os._exit(0)
    for start in range(0, size, step):
        for i in range(start, min(start + step, size), 4096):
            shared[i] = 1
        os.write(parent_done, b"x")
        os.read(parent_turn, 1)
    time.sleep(hold)
    for start in range(0, size, step):
        shared.madvise(mmap.MADV_REMOVE, start, min(step, size - start))
    shared.close()
    os.write(parent_done, b"x")
    os.waitpid(pid, 0)
    return size
