"""One limited function per row: each limit hit, the function's own error, and success.

Run it with:  python3 examples/demo.py
"""

from __future__ import annotations

import time

from pynisher import Pynisher


def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def spin(seconds: float) -> str:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return "spun"


def hungry(megabytes: int) -> int:
    block = bytearray(megabytes << 20)
    return len(block)


def broken() -> None:
    raise ValueError("the function's own error")


def fine(x: int) -> int:
    return x * 2


ROWS = [
    ("wall_time=0.5 s, sleeps 10 s", Pynisher(sleepy, wall_time=0.5), (10,)),
    ("cpu_time=0.5 s, spins 10 s", Pynisher(spin, cpu_time=0.5), (10,)),
    ("memory=200 MB, allocates 1 GB", Pynisher(hungry, memory=(200, "MB")), (1024,)),
    ("raises ValueError", Pynisher(broken, wall_time=5), ()),
    ("returns 21 * 2", Pynisher(fine, wall_time=5, cpu_time=5, memory="1GB"), (21,)),
]


def main() -> None:
    header = f"{'call':32} {'status':10} {'wall s':>7} {'cpu s':>7} {'peak MB':>8}  result or error"
    print(header)
    print("-" * len(header))
    for label, limited, args in ROWS:
        outcome = limited.run(*args)
        shown = repr(outcome.value) if outcome.error is None else type(outcome.error).__name__
        print(
            f"{label:32} {outcome.status.value:10} {outcome.wall_time:7.3f} "
            f"{outcome.cpu_time:7.3f} {outcome.peak_memory / 2**20:8.1f}  {shown}"
        )


if __name__ == "__main__":
    main()
