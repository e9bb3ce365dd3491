"""numpy under a memory limit, in both memory modes.

``memory_mode="address_space"`` (the default) caps the address space each
process of the call may add: reserving memory counts, even if it is never
touched, and an allocation over the limit fails at once with a MemoryError
in the function (so you get its traceback). ``memory_mode="resident"`` caps
the memory the call's process tree really uses: untouched reservations are
free, and the tree is killed when what it touched passes the limit.

Run it with:  python3 examples/numpy_memory.py
"""

from __future__ import annotations

import numpy as np

from pynisher import Pynisher


def reserve(megabytes: int) -> int:
    """Asks for a large array but never touches it (only address space)."""
    block = np.empty(megabytes << 20, dtype=np.uint8)
    return int(block.nbytes)


def fill(megabytes: int) -> int:
    """Allocates and touches every page."""
    block = np.ones(megabytes << 20, dtype=np.uint8)
    return int(block.sum())


def main() -> None:
    print(f"{'mode':<14} {'call':<20} {'status':<8} {'peak MB':>8}  result or error")
    for mode in ("address_space", "resident"):
        for func, megabytes in ((fill, 50), (reserve, 2048), (fill, 600)):
            limited = Pynisher(func, memory="300MB", memory_mode=mode, wall_time=10)
            outcome = limited.run(megabytes)
            shown = (
                f"{outcome.value >> 20} MB"
                if outcome.error is None
                else type(outcome.error).__name__
            )
            call = f"{func.__name__}({megabytes} MB)"
            print(
                f"{mode:<14} {call:<20} {outcome.status.value:<8} "
                f"{outcome.peak_memory / 2**20:>8.1f}  {shown}"
            )


if __name__ == "__main__":
    main()
