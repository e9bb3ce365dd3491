"""Functions that the Dask test sends to its workers.

The workers import this module by name: the test uploads it to them with
``client.upload_file`` (which also works for a remote cluster)."""

from __future__ import annotations

import multiprocessing
import os
import time

from tree_funcs import parent_of

from pynisher import limit, restricted


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes << 20))


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def fail(message: str) -> None:
    raise ValueError(message)


def where() -> dict[str, int]:
    """Where the call ran: its own pid and the caller's (the worker's). The
    process's own parent is the call's guardian, a child of the caller."""
    return {"pid": os.getpid(), "parent": parent_of(os.getppid())}


def worker_info() -> dict[str, object]:
    """Run on each worker with ``client.run``."""
    return {"pid": os.getpid(), "daemon": multiprocessing.current_process().daemon}


@limit(wall_time=0.5)
def limited_sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@restricted(memory=(100, "MB"), raises=True)
def limited_allocate(megabytes: int) -> int:
    return len(bytearray(megabytes << 20))


@limit(wall_time=10)
def limited_where() -> dict[str, int]:
    return where()
