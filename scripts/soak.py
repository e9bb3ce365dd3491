"""Soak test: many limited calls with every status mixed in, from several
threads; the caller's open fds, threads, zombie children and RSS must stay
flat.

    python3 scripts/soak.py                 # 10,000 calls
    python3 scripts/soak.py --calls 500     # the short version CI runs

Exits non-zero (and says why) if a call comes back with the wrong status or a
resource count grows.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from pynisher import Pynisher, Status


def ok(x: int) -> int:
    return x + 1


def error() -> None:
    raise ValueError("expected")


def sleep_forever() -> None:
    time.sleep(60)


def spin() -> None:
    while True:
        pass


def allocate() -> int:
    return len(bytearray(1 << 30))


def crash() -> None:
    os._exit(3)


def fork_and_return() -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    return pid


# (weight, expected status, limited callable, args)
CASES: list[tuple[int, Status, Callable[..., Any], tuple[Any, ...]]] = [
    (40, Status.OK, Pynisher(ok), (1,)),
    (10, Status.OK, Pynisher(fork_and_return), ()),
    (15, Status.ERROR, Pynisher(error), ()),
    (10, Status.WALL_TIME, Pynisher(sleep_forever, wall_time=0.05, grace_period=0.2), ()),
    (5, Status.CPU_TIME, Pynisher(spin, cpu_time=0.05), ()),
    (10, Status.MEMORY, Pynisher(allocate, memory="64MB"), ()),
    (10, Status.CRASHED, Pynisher(crash), ()),
]


def counts() -> dict[str, int]:
    me = str(os.getpid())
    zombies = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        zombies += fields[0] == "Z" and fields[1] == me
    rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "zombies": zombies,
        "rss_mb": rss_pages * os.sysconf("SC_PAGE_SIZE") >> 20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    options = parser.parse_args()

    schedule = [case for case in CASES for _ in range(case[0])]
    # The first call writes the guardian program to a memfd that the process
    # keeps for all later calls: a one-time descriptor, not a leak.
    _, _, first, first_args = CASES[0]
    first.run(*first_args)
    before = counts()
    started = time.monotonic()
    tally: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []

    def one(i: int) -> None:
        _, expected, limited, args = schedule[i % len(schedule)]
        outcome = limited.run(*args)
        tally[outcome.status.value] += 1
        if outcome.status is not expected:
            wrong.append(f"call {i}: expected {expected.value}, got {outcome.status.value}")

    with concurrent.futures.ThreadPoolExecutor(options.threads) as pool:
        # In batches, so that the futures themselves do not grow the RSS.
        for first in range(0, options.calls, 1000):
            batch = range(first, min(first + 1000, options.calls))
            for future in [pool.submit(one, i) for i in batch]:
                future.result()

    elapsed = time.monotonic() - started
    after = counts()
    print(f"{options.calls} calls in {elapsed:.1f} s from {options.threads} threads")
    print("statuses:", dict(sorted(tally.items())))
    print("before:", before)
    print("after: ", after)
    problems = list(wrong[:10])
    for key in ("fds", "threads", "zombies"):
        if after[key] > before[key]:
            problems.append(f"{key} grew from {before[key]} to {after[key]}")
    if after["rss_mb"] > before["rss_mb"] + 50:
        problems.append(f"RSS grew from {before['rss_mb']} MB to {after['rss_mb']} MB")
    passed = options.calls - len(wrong)
    print(f"{passed} passed, {len(wrong)} failed")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
