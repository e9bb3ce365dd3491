"""Functions that the benchmark runs under a limiter.

They live in their own importable module, not in ``worker.py``, so that the
``spawn`` and ``forkserver`` contexts can find them by name in a fresh child
interpreter (multiprocessing and cloudpickle both pickle module-level
functions by reference).
"""

from __future__ import annotations

import os
import time

# `signal` is imported where it is used: it imports enum, about 3 ms in every
# fresh interpreter, which a spawned no-op call would otherwise pay as part
# of loading its module (and `python -c pass`, the floor, does not).

NOOP_RESULT = 42
FILL_BYTE = 0xAB


def noop() -> int:
    """Do nothing; the return value lets the caller check the round trip."""
    return NOOP_RESULT


def sleeper(seconds: float) -> None:
    """Sleep well past the wall-time limit; obeys SIGTERM (default action)."""
    time.sleep(seconds)


def stubborn_sleeper(seconds: float) -> None:
    """Ignore SIGTERM, then sleep: only SIGKILL can stop this one early."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def make_bytes(size: int) -> bytes:
    """Return ``size`` bytes, all written (so every page is really touched)."""
    return bytes([FILL_BYTE]) * size


def make_array(size: int):  # returns numpy.ndarray; numpy is imported lazily
    """Return a numpy uint8 array of ``size`` elements, all written."""
    import numpy as np

    return np.full(size, FILL_BYTE, dtype=np.uint8)


def build_only(kind: str, size: int) -> int:
    """Build the same value as a large-result call, but return only its length.

    Timing this in a forked child gives the part of a large-result call that
    any implementation pays before it can send anything.
    """
    value = make_array(size) if kind == "numpy" else make_bytes(size)
    return len(value)


def busy_loop(max_cpu: float) -> float:
    """Burn CPU in pure Python until a CPU-time limit stops the process.

    ``max_cpu`` is a safety cap: if no limit ends the call by then, it returns
    the CPU seconds it used, and the benchmark reports the limit as not enforced.
    """
    end = time.process_time() + max_cpu
    while True:
        for _ in range(20_000):
            pass
        used = time.process_time()
        if used >= end:
            return used


MIB = 1 << 20
PAGE = 4096


def private_memory() -> int:
    """This process's private memory as the resident mode counts it.

    ``Private_Clean + Private_Dirty + Swap`` from ``/proc/self/smaps_rollup``,
    the same fields that our supervisor sums over the tree (0 where absent).
    """
    total_kib = 0
    try:
        with open("/proc/self/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Private_Clean", "Private_Dirty", "Swap"):
                    total_kib += int(rest.split()[0])
    except OSError:
        return 0
    return total_kib * 1024


def allocate_at_rate(limit: int, rate_mib_s: float | None, log_path: str, cap: int) -> int:
    """Allocate and touch memory at ``rate_mib_s`` MiB/s until something stops us.

    The memory grows in 1 MiB chunks, each page written once so that it is
    resident and private. ``rate_mib_s=None`` means as fast as possible;
    otherwise the function sleeps so that ``k`` chunks are never done before
    ``k / rate`` seconds. Progress goes to ``log_path`` (appended, one line per
    event, flushed at once by ``os.write``) because a limit may SIGKILL this
    process at any moment:

    - ``S <monotonic> <private bytes at start> <limit>``: the start; the
      private memory is read once here (reading smaps_rollup is slow, so it is
      not read again while allocating);
    - ``B <monotonic> <allocated bytes once the chunk is done>``: before
      each chunk, so that a kill in the middle of a chunk (the sampler saw
      it partly touched) can be placed;
    - ``A <monotonic> <allocated bytes>``: after each chunk is touched;
    - ``E <monotonic> <allocated bytes> <exception>``: an allocation failed
      (the address-space mode), then the exception is raised again;
    - ``D <monotonic> <allocated bytes>``: ``cap`` bytes were allocated and
      nothing stopped the call.

    ``time.monotonic`` is CLOCK_MONOTONIC, shared by all processes, so the
    caller can compare these times with its own.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    baseline = private_memory()
    fill = b"\x01" * (MIB // PAGE)
    chunks: list[bytearray] = []
    allocated = 0
    start = time.monotonic()
    os.write(fd, f"S {start:.9f} {baseline} {limit}\n".encode())
    try:
        while allocated < cap:
            if rate_mib_s:
                due = start + (allocated / MIB) / rate_mib_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            os.write(fd, f"B {time.monotonic():.9f} {allocated + MIB}\n".encode())
            chunk = bytearray(MIB)
            chunk[::PAGE] = fill  # one write per page: every page becomes resident
            chunks.append(chunk)
            allocated += MIB
            os.write(fd, f"A {time.monotonic():.9f} {allocated}\n".encode())
    except MemoryError as exc:
        failed = time.monotonic()
        chunks.clear()
        os.write(fd, f"E {failed:.9f} {allocated} {type(exc).__name__}\n".encode())
        raise
    os.write(fd, f"D {time.monotonic():.9f} {allocated}\n".encode())
    os.close(fd)
    return allocated
